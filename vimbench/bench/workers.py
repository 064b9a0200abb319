"""Parallel sweeps on one machine: one worker process per GPU (or N CPU workers), cases handed out from a queue.

Each worker is a fresh process (spawn) started with CUDA_VISIBLE_DEVICES naming its one GPU, so it sees that GPU
as cuda:0 and nothing else; it measures one case at a time, so two cases never share a GPU. The parent keeps the
queue (costliest cases first) and gives a worker its next case when it reports the last one done. Each worker
appends its rows to its own results file in the run folder; nothing is shared between workers but the pipe to
the parent. A worker that dies (killed, crashed) loses only the case it was measuring; the others go on with the
queue. A worker whose CUDA context breaks records that case and stops. Whatever no worker finished is measured by
a resume of the run folder.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from vimbench.errors import VimbenchError
from vimbench.results import CaseKey


@dataclass(frozen=True)
class Slot:
    """One worker: its number in the run and, on a GPU, the CUDA_VISIBLE_DEVICES value that pins it."""
    index: int
    device: str              # cuda | cpu
    gpu: str | None = None   # the GPU id the worker sees as cuda:0 (an index or UUID as CUDA_VISIBLE_DEVICES takes)
    threads: int | None = None   # CPU workers: torch threads, so N workers share the cores instead of fighting

    def label(self) -> str:
        return f"GPU {self.gpu}" if self.gpu is not None else f"cpu worker {self.index}"


def parse_gpus(text: str, visible: Sequence[str] | None, count: int) -> list[str]:
    """--gpus '0,1,3' or 'all' -> the ids to put in each worker's CUDA_VISIBLE_DEVICES.

    Indices count the GPUs this process may use: under CUDA_VISIBLE_DEVICES=4,5 (a SLURM job), --gpus 0,1 means
    GPUs 4 and 5, so each worker gets the physical id."""
    available = list(visible) if visible is not None else [str(i) for i in range(count)]
    if not available:
        raise VimbenchError("--gpus: no GPU is visible here; use --device cpu --workers N for CPU workers")
    if str(text).strip().lower() == "all":
        return available
    chosen = []
    for piece in str(text).split(","):
        piece = piece.strip()
        if not piece.isdigit():
            raise VimbenchError(f"--gpus {text!r}: {piece!r} is not a GPU index; use e.g. --gpus 0,1,2,3 or all")
        index = int(piece)
        if index >= len(available):
            raise VimbenchError(f"--gpus {text!r}: GPU {index} does not exist; {len(available)} visible "
                                f"(indices 0..{len(available) - 1})")
        if available[index] in chosen:
            raise VimbenchError(f"--gpus {text!r} names GPU {index} twice; one worker per GPU")
        chosen.append(available[index])
    return chosen


def make_slots(device: str, gpus: str | None = None, workers: int | None = None,
               visible: Sequence[str] | None = None, gpu_count: int = 0, cpu_count: int | None = None) -> list[Slot]:
    """The workers of a parallel sweep: one per GPU of --gpus (cuda), or --workers N processes (cpu; on cuda,
    --workers N alone means the first N GPUs)."""
    if workers is not None and workers < 1:
        raise VimbenchError(f"--workers {workers}: use at least 1")
    if device == "cpu":
        if gpus is not None:
            raise VimbenchError("--gpus needs --device cuda; on CPU give the number of workers: --workers N")
        n = workers or 1
        threads = max(1, (cpu_count or os.cpu_count() or 1) // n)
        return [Slot(i, "cpu", None, threads) for i in range(n)]
    ids = parse_gpus(gpus if gpus is not None else "all", visible, gpu_count)
    if gpus is None and workers is not None:
        if workers > len(ids):
            raise VimbenchError(f"--workers {workers}: only {len(ids)} GPUs are visible; one worker per GPU")
        ids = ids[:workers]
    elif workers is not None and workers != len(ids):
        raise VimbenchError(f"--workers {workers} does not match --gpus {gpus} ({len(ids)} GPUs); give one of them")
    return [Slot(i, "cuda", gpu) for i, gpu in enumerate(ids)]


@dataclass(frozen=True)
class WorkerEvent:
    """Progress of a parallel sweep, one event per change: a worker started a case ("start"), finished it
    ("done"), stopped after a broken CUDA context ("broken"), died ("died"), or ran out of work ("idle")."""
    worker: int
    where: str               # the slot's label: "GPU 3", "cpu worker 1"
    kind: str
    label: str               # the case (empty for "idle")
    completed: int           # cases finished by all workers so far
    total: int
    pid: int | None = None
    status: str | None = None


WorkerProgress = Callable[[WorkerEvent], None]


@dataclass
class ParallelOutcome:
    measured: list[tuple[CaseKey, str]] = field(default_factory=list)   # (case, status) written by a worker
    lost: list[CaseKey] = field(default_factory=list)       # being measured by a worker that died
    not_run: list[CaseKey] = field(default_factory=list)    # still queued when no worker was left
    died: list[int] = field(default_factory=list)           # workers that died
    broken: list[int] = field(default_factory=list)         # workers stopped by a broken CUDA context
    refused: list[str] = field(default_factory=list)        # workers that could not open their file, and why
    files: list[Path] = field(default_factory=list)

    by_worker: dict[CaseKey, int] = field(default_factory=dict)   # which worker measured each case

    def measured_by(self, worker: int) -> list[tuple[CaseKey, str]]:
        return [(key, status) for key, status in self.measured if self.by_worker.get(key) == worker]

    @property
    def unfinished(self) -> list[CaseKey]:
        return [*self.lost, *self.not_run]


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Environment for a child about to be spawned (it copies os.environ at start)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_main(conn, slot: Slot, out: str, opening: dict[str, Any], warmup: int, iters: int) -> None:
    """A worker process: open (and lock) its results file, then measure the cases the parent sends until it
    sends None. opening: what open_run needs besides the environment, which is this worker's own."""
    try:
        import torch

        if slot.threads:
            torch.set_num_threads(slot.threads)
        from vimbench.bench.env import collect_env, now
        from vimbench.bench.runner import ContextCorrupted, run_case
        from vimbench.results import open_run

        path = Path(out)
        resume = path.exists() and path.stat().st_size > 0
        with open_run(path, "sweep", opening["command"], collect_env(slot.device), opening["settings"],
                      resume=resume, run_id=opening["run_id"], created=now(), resume_hint=opening["resume_hint"],
                      extra={"worker": slot.index}) as store:
            conn.send(("ready", None, None))
            while True:
                key = conn.recv()
                if key is None:
                    return
                try:
                    result = run_case(key, warmup, iters,
                                      compile_backend=opening.get("compile_backend") or "inductor")
                except ContextCorrupted as exc:
                    store.append(exc.result)
                    conn.send(("broken", exc.result.status, exc.result.error))
                    return
                store.append(result)
                conn.send(("done", result.status, result.error))
    except VimbenchError as exc:   # its file is locked by another run, or cannot be written
        try:
            conn.send(("refused", None, str(exc)))
        except (BrokenPipeError, OSError):
            pass
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return  # the parent is stopping the sweep; rows written so far are on disk


@dataclass
class _Live:
    slot: Slot
    process: Any
    conn: Any
    current: CaseKey | None = None


def run_workers(cases: Sequence[CaseKey], slots: Sequence[Slot], files: Sequence[Path], opening: dict[str, Any],
                warmup: int, iters: int, progress: WorkerProgress | None = None) -> ParallelOutcome:
    """Measure `cases` with one process per slot, worker i appending to files[i] (created, or continued with a
    resume line when it exists; `opening`: command, settings, run_id, resume_hint for open_run). Returns what
    was measured and what was not."""
    from vimbench.bench.partition import costliest_first

    if len(files) != len(slots):
        raise ValueError("one results file per worker")
    queue = deque(costliest_first(cases))
    total = len(queue)
    outcome = ParallelOutcome(files=list(files))
    ctx = mp.get_context("spawn")   # a fresh interpreter: CUDA and its environment start clean in each worker
    live: dict[Any, _Live] = {}
    processes: list[Any] = []

    def emit(w: _Live, kind: str, label: str = "", status: str | None = None) -> None:
        if progress:
            progress(WorkerEvent(w.slot.index, w.slot.label(), kind, label, len(outcome.measured), total,
                                 w.process.pid, status))

    def give_work(w: _Live) -> None:
        if not queue:
            w.current = None
            try:
                w.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            emit(w, "idle")
            stop(w)
            return
        w.current = queue.popleft()
        try:
            w.conn.send(w.current)
        except (BrokenPipeError, OSError):
            died(w)
            return
        emit(w, "start", w.current.label())

    def stop(w: _Live) -> None:
        live.pop(w.conn, None)
        w.conn.close()

    def died(w: _Live) -> None:
        if w.current is not None:
            outcome.lost.append(w.current)
        outcome.died.append(w.slot.index)
        emit(w, "died", w.current.label() if w.current else "")
        w.current = None
        stop(w)

    try:
        for slot, path in zip(slots, files):
            parent_end, child_end = ctx.Pipe()
            env = {"CUDA_VISIBLE_DEVICES": slot.gpu} if slot.gpu is not None else {}
            with _environ(env):
                process = ctx.Process(target=_worker_main, name=f"vimbench-worker-{slot.index}", daemon=True,
                                      args=(child_end, slot, str(path), opening, warmup, iters))
                process.start()
            processes.append(process)
            child_end.close()   # the parent keeps only its end: the child's exit then reads as EOF
            live[parent_end] = _Live(slot, process, parent_end)
        while live:
            for conn in wait(list(live)):
                w = live.get(conn)
                if w is None:
                    continue
                try:
                    kind, status, error = conn.recv()
                except (EOFError, OSError):
                    died(w)
                    continue
                if kind == "refused":
                    outcome.refused.append(f"{w.slot.label()}: {error}")
                    died(w)
                    continue
                if kind in ("done", "broken") and w.current is not None:
                    outcome.measured.append((w.current, status))
                    outcome.by_worker[w.current] = w.slot.index
                    emit(w, kind, w.current.label(), status)
                    w.current = None
                if kind == "broken":
                    outcome.broken.append(w.slot.index)
                    stop(w)
                    continue
                give_work(w)
    except BaseException:
        # Ctrl-C or SIGTERM in the parent: stop the workers now; each file keeps the rows written so far
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise
    finally:
        for w in list(live.values()):
            stop(w)
        outcome.not_run = list(queue)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    return outcome
