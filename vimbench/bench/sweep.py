"""Sweeps: a suite (suites/*.toml) and command-line values -> a SweepConfig -> cases -> rows on disk.

Each case's row is appended and flushed as soon as it is measured, so a killed sweep keeps what it measured, and
`run_sweep(..., resume=True)` on the same file measures only the cases it does not hold yet.

Suite files are declarative TOML with these keys (values as on the command line, or TOML lists):
    description = "..."              models = "vim_t,deit_t"      res = "224,512..1248"     batch = 64
    dtype = "fp32"                   attn = "sdpa,eager"           backend = "torch"         device = "auto"
    mode = "infer"                   warmup = 3                    iters = 10                h2d = false
    compile = "none,default"         compile_backend = "inductor"  vim_slice = "0,16"
    vim_memory = "default,lean"
    points = ["224x128", "1248x8"]   (RESxBATCH pairs instead of res x batch)
`compile` is the execution axis of vimbench.bench.compiler (none, cuda-graphs, torch.compile modes); the older
key `cuda_graphs = true` is still read, as compile = "cuda-graphs".
A suite may add [[also]] tables: each is a further block of cases that inherits every top-level value and
overrides some (any key but description, device, warmup and iters, which hold for the whole sweep). A block that
sets points drops the inherited res and batch, and one that sets res or batch drops the inherited points.
Options given on the command line override the top level and every block alike.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from vimbench.bench import compiler, grid
from vimbench.bench.grid import Dropped, SweepConfig
from vimbench.errors import VimbenchError
from vimbench.results import (CaseKey, CaseResult, RunWriter, check_not_busy, header_settings, iter_rows,
                              new_run_id, open_run, read_header)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

SUITE_KEYS = ("description", "models", "res", "batch", "points", "dtype", "attn", "backend", "device", "mode",
              "warmup", "iters", "compile", "compile_backend", "cuda_graphs", "h2d", "vim_slice", "vim_memory",
              "also")
BLOCK_KEYS = tuple(k for k in SUITE_KEYS if k not in (*grid.SWEEP_WIDE_KEYS, "also"))
DEFAULTS: dict[str, Any] = {"dtype": "fp32", "attn": "sdpa", "backend": "torch", "device": "auto", "mode": "infer",
                            "warmup": 3, "iters": 10, "compile": "none", "compile_backend": "inductor", "h2d": False,
                            "vim_slice": 0, "vim_memory": "default"}
GPU_DEFAULT_SUITE = "paper_fig1"
CPU_DEFAULT_SUITE = "cpu_smoke"

Progress = Callable[[str, int], None]   # (label of the current case, cases completed)


# --- suites -------------------------------------------------------------------------------------------------

def suite_dirs() -> list[Path]:
    """Where suite names are looked up: the checkout's suites/ (next to the package), then ./suites."""
    dirs = [Path(__file__).resolve().parents[2] / "suites", Path.cwd() / "suites"]
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def list_suites() -> list[str]:
    return sorted({p.stem for d in suite_dirs() for p in d.glob("*.toml")})


def find_suite(name_or_path: str) -> Path:
    """A suite by name (suites/NAME.toml) or by path to a .toml file."""
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.suffix == ".toml" or "/" in text or "\\" in text:
        if path.is_dir():
            raise VimbenchError(f"suite file {path} is a folder; give a .toml file or a suite name "
                                f"({', '.join(list_suites())})")
        if not path.is_file():
            raise VimbenchError(f"suite file {path} does not exist")
        return path
    for folder in suite_dirs():
        candidate = folder / f"{text}.toml"
        if candidate.is_file():
            return candidate
    known = ", ".join(list_suites()) or "none found"
    raise VimbenchError(f"unknown suite {text!r}; known suites: {known} (or give a path to a .toml file)")


def load_suite(name_or_path: str) -> dict[str, Any]:
    """The suite's values, keys checked (not yet parsed: make_config parses them)."""
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VimbenchError(f"cannot read suite file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise VimbenchError(f"suite file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - set(SUITE_KEYS))
    if unknown:
        raise VimbenchError(f"suite file {path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(SUITE_KEYS)}")
    check_blocks(data.get("also", []), f"suite file {path}")
    return data


def check_blocks(blocks: Any, source: str) -> None:
    """[[also]] blocks: a list of tables holding only keys a block may set."""
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise VimbenchError(f"{source}: 'also' must be a list of tables, written [[also]]")
    for number, block in enumerate(blocks, start=1):
        unknown = sorted(set(block) - set(BLOCK_KEYS))
        if unknown:
            raise VimbenchError(f"{source}: [[also]] block {number} sets {unknown[0]!r}; a block may set "
                                f"{', '.join(BLOCK_KEYS)} ({', '.join(grid.SWEEP_WIDE_KEYS[1:])} are set once, "
                                f"at the top)")


def layer(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """base with the non-None values of `over` on top. Points and res/batch replace each other: values that
    set points drop base's res and batch; values that set res or batch drop base's points."""
    over = {k: v for k, v in over.items() if v is not None}
    merged = dict(base)
    if "points" in over:
        merged.pop("res", None)
        merged.pop("batch", None)
    if "res" in over or "batch" in over:
        merged.pop("points", None)
    merged.update(over)
    return merged


def make_config(values: dict[str, Any], cuda_available: bool, source: str = "the sweep",
                plan_only: bool = False) -> SweepConfig:
    """Parse suite-style values (strings, numbers or lists; missing optional keys take DEFAULTS). An "also"
    list holds further blocks, each layered over the top-level values."""
    values = dict(values)
    blocks = values.pop("also", None) or []
    check_blocks(blocks, source)
    top = layer(DEFAULTS, values)
    also = tuple(_block_config(layer(top, block), cuda_available, f"{source}, [[also]] block {number}", plan_only)
                 for number, block in enumerate(blocks, start=1))
    config = _block_config(top, cuda_available, source, plan_only)
    return replace(config, also=also) if also else config


def _block_config(merged: dict[str, Any], cuda_available: bool, source: str, plan_only: bool) -> SweepConfig:
    has_points = merged.get("points") is not None
    if has_points and (merged.get("res") is not None or merged.get("batch") is not None):
        raise VimbenchError(f"{source} gives both points and res/batch; give points (RESxBATCH pairs) or res "
                            f"and batch")
    for required in ("models",) + (() if has_points else ("res", "batch")):
        if required not in merged:
            raise VimbenchError(f"{source} gives no {required}; add it (or pass --{required})")
    for name in ("warmup", "iters"):
        if isinstance(merged[name], bool) or not isinstance(merged[name], int):
            raise VimbenchError(f"{source}: {name} must be a whole number, got {merged[name]!r}")
    shape = (dict(points=grid.parse_points(merged["points"]), res=(), batch=()) if has_points else
             dict(res=grid.parse_res(merged["res"]), batch=grid.parse_batch(merged["batch"])))
    return SweepConfig(models=grid.parse_models(merged["models"]), **shape,
                       dtypes=grid.parse_dtypes(merged["dtype"]), attn=grid.parse_attn(merged["attn"]),
                       backends=grid.parse_backends(merged["backend"]),
                       device=grid.parse_device(merged["device"], cuda_available, plan_only),
                       modes=grid.parse_modes(merged["mode"]), warmup=merged["warmup"], iters=merged["iters"],
                       compile=_compile_modes(merged, source),
                       compile_backend=compiler.parse_compile_backend(merged["compile_backend"]),
                       h2d=bool(merged["h2d"]), vim_slice=grid.parse_vim_slice(merged["vim_slice"]),
                       vim_memory=grid.parse_vim_memory(merged["vim_memory"]))


def _compile_modes(merged: dict[str, Any], source: str) -> tuple[str, ...]:
    """The compile axis; the legacy switch cuda_graphs = true (suites, headers of older results files, the
    --cuda-graphs option) is compile = "cuda-graphs", and cannot be combined with another compile list."""
    modes = compiler.parse_compile(merged["compile"])
    if not merged.get("cuda_graphs"):
        return modes
    if modes not in ((compiler.NONE,), (compiler.CUDA_GRAPHS,)):
        raise VimbenchError(f"{source} sets both cuda_graphs and compile {','.join(modes)}; cuda_graphs is "
                            f"compile cuda-graphs now: list it there (e.g. --compile none,cuda-graphs)")
    return (compiler.CUDA_GRAPHS,)


def resolve_config(suite: str | None, overrides: dict[str, Any], cuda_available: bool,
                   resume: str | Path | None = None, plan_only: bool = False) -> tuple[SweepConfig, str]:
    """The sweep to run and a sentence saying where it came from.

    Base values: the named suite; else, when resuming, the sweep recorded in the results file's header (or the run
    folder's manifest); else the
    default suite (paper_fig1 with a GPU, cpu_smoke without). Values in `overrides` that are not None win."""
    from vimbench.bench import rundir

    overrides = {k: v for k, v in overrides.items() if v is not None}
    recorded = None
    if resume is not None and rundir.is_run_dir(resume):
        recorded = rundir.load_manifest(resume).sweep
    elif resume is not None:
        _check_resumable(Path(resume))
        recorded = header_settings(read_header(Path(resume))).get("sweep")
    if suite is not None:
        path = find_suite(suite)
        base, source = load_suite(str(path)), f"suite {path.stem} ({path})"
    elif isinstance(recorded, dict):
        base, source = recorded, f"the sweep recorded in {resume}"
    else:
        name = GPU_DEFAULT_SUITE if cuda_available else CPU_DEFAULT_SUITE
        path = find_suite(name)
        base = load_suite(str(path))
        why = "a GPU is present" if cuda_available else "no GPU found: a small CPU sweep"
        source = f"default suite {name} ({why}; {path})"
    if overrides:
        source += "; overridden on the command line: " + ", ".join(sorted(overrides))
    base = {k: v for k, v in base.items() if k != "description"}
    values = layer(base, overrides)
    block_overrides = {k: v for k, v in overrides.items() if k in BLOCK_KEYS}
    if base.get("also"):
        values["also"] = [layer(block, block_overrides) for block in base["also"]]
    return make_config(values, cuda_available, source, plan_only), source


# --- planning and running -----------------------------------------------------------------------------------

@dataclass
class Plan:
    cases: list[CaseKey]                                    # all cases of the sweep, in run order
    dropped: list[Dropped] = field(default_factory=list)    # combinations not run, with reasons
    done: list[CaseKey] = field(default_factory=list)       # already in the resumed file

    @property
    def pending(self) -> list[CaseKey]:
        done = set(self.done)
        return [c for c in self.cases if c not in done]


def _check_resumable(path: Path) -> None:
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))[-3:]
        raise VimbenchError(f"{path} is a folder; --resume takes one results file or the run folder of a "
                            f"parallel sweep (with a run.json)"
                            + (f", e.g. {', '.join(str(f) for f in files)}" if files else ""))
    if not path.exists():
        raise VimbenchError(f"cannot resume {path}: no such file")
    check_not_busy(path)
    header = read_header(path)
    kind = header.get("run_kind") or ("anchors" if header.get("imported") else None)
    if kind is None:  # files from before run_kind: what their rows are
        other = {row["kind"] for row in iter_rows(path)} - {"case", "resume"}
        kind = {"kernel": "kernels"}.get(min(other), min(other)) if other else None
    if kind not in (None, "sweep"):
        raise VimbenchError(f"{path} is not a sweep's results file (its run kind is {kind}); --resume continues a "
                            "sweep's file (start a new sweep with --out)")


def _check_out(out: Path | None, resume: bool) -> None:
    if out is None:
        if resume:
            raise VimbenchError("--resume needs the results file to continue")
        return
    if resume:
        _check_resumable(out)
    elif out.is_dir():
        raise VimbenchError(f"--out {out} is a folder; give a file path, e.g. {out / 'run.jsonl'} (or set "
                            f"VIMBENCH_RESULTS_DIR={out} to name files by run id there)")
    elif out.exists() and out.stat().st_size > 0:
        check_not_busy(out)
        raise VimbenchError(f"{out} already exists; pass --resume {out} to continue it, or choose another --out")


def sweep_cases(cases: SweepConfig | Iterable[CaseKey], shard: tuple[int, int] | None = None
                ) -> tuple[list[CaseKey], list[Dropped]]:
    """The sweep's cases in run order (only the K-th of N parts with shard=(K, N)), and the dropped combinations."""
    if isinstance(cases, SweepConfig):
        keys, dropped = grid.expand_cases(cases)
    else:
        keys, dropped = list(dict.fromkeys(cases)), []
    if not keys:
        reasons = "; ".join(f"{d.what}: {d.reason}" for d in dropped) or "the sweep is empty"
        raise VimbenchError(f"no cases left to run ({reasons})")
    if shard is not None:
        from vimbench.bench.partition import shard_cases

        keys = shard_cases(keys, *shard)
    return keys, dropped


def _recorded_shard(record: dict[str, Any]) -> tuple[int, int] | None:
    """The shard a results file's settings or a run manifest recorded, as (K, N)."""
    shard = record.get("shard")
    return (int(shard[0]), int(shard[1])) if isinstance(shard, (list, tuple)) and len(shard) == 2 else None


def recorded_shard(path: str | Path) -> tuple[int, int] | None:
    """The shard a results file holds (None: the whole sweep)."""
    return _recorded_shard(header_settings(read_header(Path(path))))


def plan_sweep(cases: SweepConfig | Iterable[CaseKey], out: str | Path | None = None, resume: bool = False,
               shard: tuple[int, int] | None = None) -> Plan:
    """The cases to run (minus those already in `out` when resuming), without running anything.

    out: a results file, or when resuming, a run folder (rundir.py: every file in it counts). shard=(K, N): only
    the K-th of N parts of the sweep; a resumed file or folder that recorded its shard keeps it."""
    from vimbench.bench import rundir

    out = Path(out) if out is not None else None
    measured: set[CaseKey] = set()
    if out is not None and resume and rundir.is_run_dir(out):
        shard = shard or _recorded_shard(rundir.load_manifest(out).data)
        measured = rundir.done_keys(out)
    else:
        _check_out(out, resume)
        if resume and out is not None:
            shard = shard or _recorded_shard(header_settings(read_header(out)))
            measured = _done_keys(out)
    keys, dropped = sweep_cases(cases, shard)
    done = [k for k in keys if k in measured]
    return Plan(keys, dropped, done)


def _done_keys(path: Path) -> set[CaseKey]:
    """Cases already in a results file (any status but skipped): a resume does not measure them again."""
    from vimbench.results import key_of_row

    return {key_of_row(r) for r in iter_rows(path, kinds=("case",)) if r.get("status") != "skipped"}


PROTOCOL = {
    "timing": "per call: device synchronized, then one CUDA event pair (CPU: perf_counter); warm-up calls "
              "untimed; p20/p50/p80 over all samples; fps = batch / p50",
    "memory": "separate pass: gc, empty_cache, reset_peak_memory_stats, one forward; peak allocated/reserved "
              "from the torch allocator; NVML device memory used sampled every ~1 ms (CPU: peak RSS)",
    # mode "train" rows: "train" (bench/train.py PROTOCOL) is added, and says what a timed call and the memory
    # pass are for a training step
    "precision": "fp32: TF32 off (matmul and cuDNN); tf32: TF32 on; bf16/fp16: torch.autocast over fp32 weights, "
                 "TF32 off; cudnn.benchmark off",
    "compile": "compile none: eager launches; cuda-graphs: the eager forward (mode train: the whole training "
               "step) captured once, replays timed; "
               "torch.compile modes: torch.compile(model, mode, dynamic=False) per case, dynamo reset between "
               "cases; compilation, autotuning and graph capture happen in the untimed first and warm-up calls; "
               "compile_s = wall time of the first call",
    "input": "random normal images, already on the device (h2d: copied from pinned host memory inside the call)",
    "weights": "random, seed 0",
    "units": "ms, img/s, MiB = 2^20 bytes",
}


def sweep_settings(config: SweepConfig | None, warmup: int, iters: int,
                   shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """What a sweep's results file records as its protocol settings; a resume must match them (a shard's file
    stays that shard's). A sweep with training cases adds the training-step protocol (bench/train.py) under
    "train"; one with compiled cases the compile modes and the inductor settings they compile with under
    "compile"."""
    protocol = dict(PROTOCOL)
    if config is not None and any("train" in block.modes for block in (config, *config.also)):
        from vimbench.bench.train import PROTOCOL as TRAIN_PROTOCOL

        protocol["train"] = TRAIN_PROTOCOL
    settings = {"protocol": protocol, "warmup": warmup, "iters": iters,
                "sweep": config.to_suite() if config else None}
    if shard is not None:
        settings["shard"] = list(shard)
    if config is not None:
        blocks = (config, *config.also)
        modes = tuple(dict.fromkeys(m for block in blocks for m in block.compile))
        settings["compile"] = compiler.header_settings(modes, config.compile_backend)
    return settings


def open_sweep_run(config: SweepConfig | None, out: str | Path, resume: bool = False, command: str | None = None,
                   run_id: str | None = None, warmup: int | None = None, iters: int | None = None,
                   allow_protocol_change: bool = False, shard: tuple[int, int] | None = None) -> RunWriter:
    """Open (and lock) a sweep's results file before anything is built or measured: an unwritable path, a file
    another run is writing or a resume with other settings fails here, with nothing measured. shard: the part
    of the sweep the file holds (a resume without it keeps the recorded one)."""
    from vimbench.bench.env import collect_env, now

    warmup = warmup if warmup is not None else (config.warmup if config else DEFAULTS["warmup"])
    iters = iters if iters is not None else (config.iters if config else DEFAULTS["iters"])
    out = Path(out)
    _check_out(out, resume)
    if resume and shard is None:
        shard = _recorded_shard(header_settings(read_header(out)))
    device = config.device if config else "cpu"
    settings = sweep_settings(config, warmup, iters, shard)
    return open_run(out, "sweep", command or "python API: vimbench.run_sweep", collect_env(device), settings,
                    resume=resume, allow_settings_change=allow_protocol_change, run_id=run_id, created=now(),
                    resume_hint=f"vimbench sweep --resume {out}")


def run_sweep(cases: SweepConfig | Iterable[CaseKey], out: str | Path | None = None, resume: bool = False,
              progress: Progress | None = None, warmup: int | None = None, iters: int | None = None,
              command: str | None = None, run_id: str | None = None, writer: RunWriter | None = None,
              allow_protocol_change: bool = False, compile_backend: str | None = None,
              shard: tuple[int, int] | None = None) -> list[CaseResult]:
    """Measure every case (a SweepConfig, or CaseKeys with warmup/iters given) and return the rows measured now.

    out: the results file (None: rows are only returned). Each row is appended and flushed when measured.
    resume: `out` exists; cases already in it (any status but skipped) are not measured again, and its recorded
    settings must match unless allow_protocol_change. writer: a file already opened with open_sweep_run (the
    caller closes it); otherwise `out` is opened here, locked for the run and closed at the end.
    shard=(K, N): only the K-th of N deterministic, disjoint parts of the sweep (recorded in the settings; a
    resumed file keeps its recorded shard).
    progress(label, completed) is called before and after each case. command and run_id go into the header.
    compile_backend: for cases with a torch.compile mode (default: the config's, else inductor).
    A case that breaks the CUDA context ends the sweep: its row is written, the remaining cases are written with
    status "skipped", and the rows are returned."""
    config = cases if isinstance(cases, SweepConfig) else None
    warmup = warmup if warmup is not None else (config.warmup if config else DEFAULTS["warmup"])
    iters = iters if iters is not None else (config.iters if config else DEFAULTS["iters"])
    grid.check_counts(warmup, iters)
    compile_backend = compiler.parse_compile_backend(
        compile_backend or (config.compile_backend if config else "inductor"))
    if resume and shard is None and out is not None and writer is None and Path(out).is_file():
        shard = _recorded_shard(header_settings(read_header(Path(out))))
    keys, _ = sweep_cases(cases, shard)
    own_writer = writer is None and out is not None
    if own_writer:
        writer = open_sweep_run(config, out, resume, command, run_id, warmup, iters, allow_protocol_change, shard)
    try:
        done = writer.done_keys() if writer is not None else set()
        return _measure([k for k in keys if k not in done], warmup, iters, writer, progress, compile_backend)
    finally:
        if own_writer:
            writer.close()


def _measure(pending: list[CaseKey], warmup: int, iters: int, store: RunWriter | None,
             progress: Progress | None, compile_backend: str = "inductor") -> list[CaseResult]:
    from vimbench.bench.env import now
    from vimbench.bench.runner import ContextCorrupted, run_case

    results: list[CaseResult] = []
    for i, key in enumerate(pending):
        if progress:
            progress(key.label(), i)
        try:
            result = run_case(key, warmup, iters, compile_backend=compile_backend)
        except ContextCorrupted as exc:
            result = exc.result
            rest = [CaseResult(key=k, status="skipped", timestamp=now(),
                               error=f"not run: an earlier case broke the CUDA context ({key.label()})")
                    for k in pending[i + 1:]]
            for row in [result, *rest]:
                results.append(row)
                if store:
                    store.append(row)
            break
        results.append(result)
        if store:
            store.append(result)
        if progress:
            progress(key.label(), i + 1)
    return results


def _check_same_sweep(config: SweepConfig, recorded: dict[str, Any], where: Path) -> None:
    """A resumed run folder keeps one protocol: rows measured with other settings would mix silently."""
    wanted = config.to_suite()
    differ = [k for k in wanted if json.dumps(wanted[k]) != json.dumps(recorded.get(k))]
    if differ:
        name = differ[0]
        raise VimbenchError(f"--resume {where}: {name} {wanted[name]!r} differs from the run's recorded "
                            f"{recorded.get(name)!r}; resume without changing the sweep, or start a new --run-dir")


def run_parallel_sweep(config: SweepConfig, run_dir: str | Path, slots, resume: bool = False,
                       shard: tuple[int, int] | None = None, progress=None, command: str | None = None,
                       run_id: str | None = None):
    """Measure the sweep with one worker process per slot (workers.py) into a run folder (rundir.py).

    resume: continue the folder (its manifest's sweep and shard); the cases no file of the folder holds are
    measured. Returns (plan, workers.ParallelOutcome)."""
    from vimbench.bench import rundir
    from vimbench.bench.env import now
    from vimbench.bench.workers import ParallelOutcome, run_workers

    run_dir = Path(run_dir)
    command = command if command is not None else "python API: vimbench.bench.sweep.run_parallel_sweep"
    if resume:
        manifest = rundir.load_manifest(run_dir)
        _check_same_sweep(config, manifest.sweep, run_dir)
        shard = shard or _recorded_shard(manifest.data)
        plan = plan_sweep(config, run_dir, resume=True, shard=shard)
    else:
        plan = plan_sweep(config, None, shard=shard)   # a bad sweep fails before the folder is created
        manifest = rundir.create_run_dir(run_dir, {
            "run_id": run_id or new_run_id(), "created": now(), "command": command, "sweep": config.to_suite(),
            "shard": list(shard) if shard else None, "executor": "workers",
            "workers": [slot.label() for slot in slots]})
    if not plan.pending:
        return plan, ParallelOutcome()
    files = [run_dir / rundir.results_name(shard, slot.index) for slot in slots]
    rundir.check_results_files(files)
    opening = {"command": command, "settings": sweep_settings(config, config.warmup, config.iters, shard),
               "run_id": manifest.data["run_id"], "resume_hint": f"vimbench sweep --resume {run_dir}",
               "compile_backend": config.compile_backend}
    outcome = run_workers(plan.pending, slots, files, opening, config.warmup, config.iters, progress)
    return plan, outcome
