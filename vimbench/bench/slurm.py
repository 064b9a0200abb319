"""Sweeps as SLURM array jobs, through submitit (the optional extra `vimbench[slurm]`).

A sweep is split into N shards (partition.py: deterministic, disjoint, similar estimated cost); each shard is one
array task with its own GPUs. A task measures its shard into the run folder (rundir.py), continuing its own file
when it runs again, so a resubmitted shard measures only what it had not finished. submitit keeps its sbatch
scripts, logs and pickles under RUN_DIR/slurm/.

The GPUs are asked for whole (--gpus-per-task, never a shared/MPS slice) and, by default, the node exclusively
(--exclusive): at small resolutions a Vim forward is bound by host work, so another job's CPU load changes the
numbers; timings compare only when nothing else runs beside them. --no-exclusive shares the node.

Shard states (`vimbench sweep --status RUN_DIR`): finished (every case of the shard is in the folder), running,
waiting (queued), failed (the task ended, or the scheduler says it failed, with cases left), unknown (the
scheduler does not know the job, e.g. a local job of another process), not submitted.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from vimbench.errors import VimbenchError

CLUSTERS = ("slurm", "local", "debug")   # local and debug: submitit's executors without a scheduler (tests)
_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "RESIZING", "SUSPENDED",
            "SUBMITTED", "QUEUED"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
_ENDED = {"COMPLETED", "FINISHED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
          "BOOT_FAIL", "DEADLINE", "REVOKED", "INTERRUPTED", "DONE"}
SLURM_FOLDER = "slurm"


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks SLURM for."""
    partition: str | None = None
    time_min: int = 60                       # time limit of one task, minutes
    gpus_per_task: int = 1                   # >1: the task runs its shard with one worker per GPU
    cpus_per_task: int | None = None
    array_parallelism: int | None = None     # at most this many tasks at once (None: SLURM's limit)
    exclusive: bool = True                   # the whole node for the task (see the module docstring)
    sbatch_args: tuple[tuple[str, str], ...] = ()   # more sbatch options, e.g. (("account", "abc"),)

    def __post_init__(self):
        if self.time_min < 1:
            raise VimbenchError(f"--time-limit {self.time_min}: give the time limit of one task in minutes (>= 1)")
        if self.gpus_per_task < 1:
            raise VimbenchError(f"--gpus-per-task {self.gpus_per_task}: each task needs at least one GPU")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise VimbenchError(f"--array-parallelism {self.array_parallelism}: use at least 1")

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["sbatch_args"] = [list(pair) for pair in self.sbatch_args]
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "SlurmOptions":
        values = dict(record)
        values["sbatch_args"] = tuple(tuple(pair) for pair in values.get("sbatch_args", ()))
        return cls(**values)


def parse_sbatch_args(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """--sbatch-arg account=abc --sbatch-arg constraint=h200 --sbatch-arg requeue -> sbatch options."""
    out = []
    for item in items:
        text = str(item).strip().lstrip("-")
        name, eq, value = text.partition("=")
        name = name.strip()
        if not name or (eq and not value.strip()):
            raise VimbenchError(f"--sbatch-arg {item!r}: use NAME=VALUE (e.g. account=abc) or a bare flag NAME")
        out.append((name, value.strip() if eq else ""))
    return tuple(out)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise VimbenchError("--executor slurm needs submitit: pip install 'vimbench[slurm]'") from None
    return submitit


def _check_slurm_commands(cluster: str) -> None:
    if cluster == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise VimbenchError("sbatch/srun are not on PATH: submit from a SLURM login node (or run the shards "
                            "yourself: vimbench sweep --shard K/N)")


def make_executor(folder: Path, options: SlurmOptions, cluster: str = "slurm", name: str = "vimbench"):
    """A submitit executor for the array tasks (cluster 'local' or 'debug' runs them without SLURM)."""
    if cluster not in CLUSTERS:
        raise VimbenchError(f"unknown cluster {cluster!r}; choose from {', '.join(CLUSTERS)}")
    submitit = _submitit()
    _check_slurm_commands(cluster)
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"name": name, "timeout_min": options.time_min, "nodes": 1, "tasks_per_node": 1}
    if cluster == "slurm":
        extra = {k.replace("_", "-"): (v if v else True) for k, v in options.sbatch_args}
        params.update(slurm_gpus_per_task=options.gpus_per_task, slurm_additional_parameters=extra)
        if options.partition:
            params["slurm_partition"] = options.partition
        if options.cpus_per_task:
            params["cpus_per_task"] = options.cpus_per_task
        if options.array_parallelism:
            params["slurm_array_parallelism"] = options.array_parallelism
        if options.exclusive:
            params["slurm_exclusive"] = True
    executor.update_parameters(**params)
    return executor


def run_shard(run_dir: str, k: int, n: int) -> dict[str, Any]:
    """One array task: measure the K-th of N shards of the run folder's sweep, continuing the shard's files.

    Raises when cases of the shard are left unmeasured (a broken CUDA context, a dead worker), so the task
    counts as failed and `--resubmit-failed` runs it again."""
    import torch

    from vimbench.bench import rundir
    from vimbench.bench import sweep as sweeps
    from vimbench.bench.workers import make_slots
    from vimbench.settings import cuda_visible_devices

    manifest = rundir.load_manifest(run_dir)
    config = sweeps.make_config(manifest.sweep, torch.cuda.is_available(), source=f"{run_dir}/{rundir.MANIFEST}")
    run_id = manifest.data["run_id"]
    command = f"{manifest.data.get('command')} [array task: shard {k}/{n}]"
    folder = Path(run_dir)
    if config.device == "cuda" and torch.cuda.device_count() > 1:
        slots = make_slots("cuda", "all", visible=cuda_visible_devices(), gpu_count=torch.cuda.device_count())
        plan, outcome = sweeps.run_parallel_sweep(config, folder, slots, resume=True, shard=(k, n), command=command)
        measured = len(outcome.measured)
    else:
        out = folder / rundir.results_name((k, n))
        rows = sweeps.run_sweep(config, out=out, resume=out.exists(), shard=(k, n), command=command, run_id=run_id)
        measured = len(rows)
    left = sweeps.plan_sweep(config, folder, resume=True, shard=(k, n)).pending
    if left:
        raise VimbenchError(f"shard {k}/{n} of {run_dir}: {len(left)} cases are not measured "
                            f"(first: {left[0].label()}); resubmit it")
    return {"shard": k, "shards": n, "measured": measured}


def submit(config, run_dir: str | Path, shards: int, options: SlurmOptions, command: str, cluster: str = "slurm",
           run_id: str | None = None) -> tuple[Any, list[Any]]:
    """Create the run folder and submit one array task per shard. Returns (manifest, submitit jobs)."""
    from vimbench.bench import rundir
    from vimbench.bench.env import now
    from vimbench.bench.sweep import sweep_cases
    from vimbench.results import new_run_id

    _submitit()   # before creating anything
    if cluster not in CLUSTERS:
        raise VimbenchError(f"unknown cluster {cluster!r}; choose from {', '.join(CLUSTERS)}")
    _check_slurm_commands(cluster)  # no run folder left behind on a machine without SLURM
    cases, _ = sweep_cases(config)
    if shards < 1 or shards > len(cases):
        raise VimbenchError(f"--shards {shards}: the sweep has {len(cases)} cases; use 1..{len(cases)} shards")
    manifest = rundir.create_run_dir(run_dir, {
        "run_id": run_id or new_run_id(), "created": now(), "command": command, "sweep": config.to_suite(),
        "shards": shards, "executor": "submitit", "cluster": cluster, "slurm": options.to_record(), "jobs": {}})
    jobs = _submit_shards(manifest, list(range(1, shards + 1)))
    return manifest, jobs


def _submit_shards(manifest, shard_numbers: Sequence[int]) -> list[Any]:
    n = manifest.shards
    options = SlurmOptions.from_record(manifest.data["slurm"])
    cluster = manifest.data.get("cluster", "slurm")
    executor = make_executor(manifest.run_dir / SLURM_FOLDER, options, cluster,
                             name=f"vimbench-{manifest.data['run_id']}")
    try:
        with executor.batch():
            jobs = [executor.submit(run_shard, str(manifest.run_dir), k, n) for k in shard_numbers]
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        detail = getattr(exc, "output", None) or getattr(exc, "stderr", None) or exc
        raise VimbenchError(f"the scheduler refused the submission ({str(detail).strip()[:300]}); fix it, then: "
                            f"vimbench sweep --status {manifest.run_dir} --resubmit-failed") from exc
    for k, job in zip(shard_numbers, jobs):
        manifest.data["jobs"].setdefault(str(k), []).append(str(job.job_id))
    manifest.save()
    return jobs


@dataclass
class ShardStatus:
    shard: int
    state: str               # finished | running | waiting | failed | unknown | not submitted
    done: int                # cases of the shard in the folder
    total: int
    job_id: str | None = None
    scheduler_state: str | None = None
    error: str | None = None         # the task's exception, first line, when it raised
    log: Path | None = None          # the task's stderr log
    submissions: int = 0


@dataclass
class RunStatus:
    run_dir: Path
    cluster: str
    shards: list[ShardStatus] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for s in self.shards if s.state == state)


def _task_outcome(folder: Path, job_id: str) -> tuple[bool, str | None]:
    """(ended, error) from submitit's result pickle of the task: it exists once the task returned or raised."""
    from submitit.core.utils import JobPaths, pickle_load

    path = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if not path.exists():
        return False, None
    try:
        outcome, value = pickle_load(path)
    except Exception:
        return True, "unreadable result pickle"
    if outcome == "success":
        return True, None
    lines = [line for line in str(value).strip().splitlines() if line.strip()]
    return True, lines[-1] if lines else "the task raised"


def scheduler_state(folder: Path, job_id: str, cluster: str) -> str:
    """What the scheduler says of a job (SLURM: sacct through submitit); UNKNOWN where nobody knows."""
    submitit = _submitit()
    if cluster == "slurm":
        job = submitit.SlurmJob(folder, job_id)
        return str(job.watcher.get_state(job_id, mode="force")).split()[0].upper() if job_id else "UNKNOWN"
    from submitit.local.local import LocalJob

    return str(LocalJob(folder, job_id).state).upper()


def _classify(done: int, total: int, ended: bool, error: str | None, scheduler: str | None) -> str:
    if done >= total:
        return "finished"
    if ended:
        return "failed"
    state = (scheduler or "UNKNOWN").split()[0].upper()
    if state in _WAITING:
        return "waiting"
    if state in _RUNNING:
        return "running"
    if state in _ENDED or state.startswith("CANCELLED"):
        return "failed"
    return "unknown"


def run_status(run_dir: str | Path, state_of: Callable[[Path, str, str], str] | None = None) -> RunStatus:
    """Each shard's state from the results in the folder, the task's own outcome, and the scheduler."""
    from vimbench.bench import rundir
    from vimbench.bench import sweep as sweeps
    from vimbench.bench.partition import partition

    _submitit()
    manifest = rundir.load_manifest(run_dir)
    if not manifest.shards or "jobs" not in manifest.data:
        raise VimbenchError(f"{run_dir} was not submitted with --executor slurm; see its progress with "
                            f"vimbench sweep --resume {run_dir} --dry-run")
    state_of = state_of or scheduler_state
    cluster = manifest.data.get("cluster", "slurm")
    config = sweeps.make_config(manifest.sweep, cuda_available=False, plan_only=True)
    cases, _ = sweeps.sweep_cases(config)
    done = rundir.done_keys(run_dir)
    folder = manifest.run_dir / SLURM_FOLDER
    status = RunStatus(manifest.run_dir, cluster)
    for k, part in enumerate(partition(cases, manifest.shards), start=1):
        n_done = sum(1 for key in part if key in done)
        jobs = manifest.data["jobs"].get(str(k), [])
        shard = ShardStatus(k, "not submitted", n_done, len(part), submissions=len(jobs))
        if jobs:
            shard.job_id = jobs[-1]
            ended, shard.error = _task_outcome(folder, shard.job_id)
            if n_done < len(part) and not ended:
                shard.scheduler_state = state_of(folder, shard.job_id, cluster)
            shard.state = _classify(n_done, len(part), ended, shard.error, shard.scheduler_state)
            from submitit.core.utils import JobPaths

            shard.log = JobPaths(folder, job_id=shard.job_id, task_id=0).stderr
        elif n_done >= len(part):
            shard.state = "finished"
        status.shards.append(shard)
    return status


def resubmit_failed(run_dir: str | Path, status: RunStatus | None = None) -> list[tuple[int, Any]]:
    """Submit again every failed shard (each continues its own results). Returns (shard, job) pairs."""
    from vimbench.bench import rundir

    status = status or run_status(run_dir)
    failed = [s.shard for s in status.shards if s.state in ("failed", "not submitted")]
    if not failed:
        return []
    jobs = _submit_shards(rundir.load_manifest(run_dir), failed)
    return list(zip(failed, jobs))
