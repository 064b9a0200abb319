"""`vimbench sweep`, `vimbench env` and `vimbench models`: parse options, call vimbench.bench, render."""
from __future__ import annotations

import shlex
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from vimbench.cli.common import user_errors

_PANEL = "Many GPUs and clusters"
_RES_HELP = ("Resolutions in px: 224..2048 = the standard ladder (224,384,512,640,738,896,1024,1248,1536,2048) "
             "inside the bounds; 256..1024:128 = every 128 px; 224,738 = explicit; pieces combine with commas.")
_COMPILE_HELP = ("How the forward (train: the step) runs, a list sweeps them: none (eager launches), cuda-graphs "
                 "(the eager forward, or the whole training step, captured into a CUDA graph, replays timed), or a "
                 "torch.compile mode: default, max-autotune, max-autotune-no-cudagraphs, reduce-overhead (train: "
                 "the model's forward and backward compiled; loss and AdamW eager). Compilation is never timed "
                 "(compile_s column).")


@user_errors
def sweep(
    models: Annotated[Optional[str], typer.Option("--models", "--model",
                                                  help="Models, comma-separated aliases or full names (vimbench "
                                                       "models lists them), e.g. vim_t,deit_t; any timm model as "
                                                       "timm:NAME (vimbench models --timm PATTERN lists them) "
                                                       "[default: the suite's].")] = None,
    res: Annotated[Optional[str], typer.Option(help=_RES_HELP + " [default: the suite's].")] = None,
    batch: Annotated[Optional[str], typer.Option(help="Batch sizes, e.g. 1,8,64. Never changed on OOM "
                                                      "[default: the suite's].")] = None,
    points: Annotated[Optional[str], typer.Option(help="Resolution x batch pairs, e.g. 224x128,1248x8: run these "
                                                       "pairs instead of the product --res x --batch "
                                                       "[default: none].")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Precision modes: fp32 (TF32 off), tf32, bf16, fp16 "
                                                      "(autocast) [default: the suite's, else fp32].")] = None,
    attn: Annotated[Optional[str], typer.Option(help="DeiT attention: sdpa (fused), eager (explicit) "
                                                     "[default: the suite's, else sdpa].")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Vim op backend: torch, triton "
                                                        "[default: the suite's, else torch].")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cuda | cpu (auto: cuda when present) "
                                                       "[default: auto].")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed warm-up calls per case (>= 1) "
                                                       "[default: the suite's, else 3].")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Timed calls per case (>= 5) "
                                                      "[default: the suite's, else 10].")] = None,
    mode: Annotated[Optional[str], typer.Option(help="What one timed call is: infer (a forward), train (a "
                                                     "training step: forward, cross-entropy, backward, AdamW); "
                                                     "both: infer,train [default: the suite's, else infer].")]
    = None,
    compile_modes: Annotated[Optional[str], typer.Option("--compile", help=_COMPILE_HELP)] = None,
    compile_backend: Annotated[Optional[str], typer.Option(help="torch.compile backend: inductor (default); "
                                                                "aot_eager or eager only check tracing.")] = None,
    cuda_graphs: Annotated[Optional[bool], typer.Option("--cuda-graphs/--no-cuda-graphs",
                                                        help="Shorthand for --compile cuda-graphs "
                                                             "[default: no].")] = None,
    vim_slice: Annotated[Optional[str], typer.Option(help="Vim: images per mixer slice at inference, a list "
                                                          "sweeps them; 0 = the whole batch (lower peak memory "
                                                          "with a slice, fewer programs per kernel) "
                                                          "[default: 0].")] = None,
    vim_memory: Annotated[Optional[str], typer.Option(help="Vim: the mixers' inference memory mode, a list "
                                                           "sweeps them: default (small eager calls hand the "
                                                           "Triton scan dt_proj); split (in_proj as two GEMMs, "
                                                           "x dead before z; eager); lean (split, and the Triton scan "
                                                           "applies dt_proj: no delta tensor); lean-gated (lean, "
                                                           "and z made inside the gate: no z tensor) "
                                                           "[default: default].")] = None,
    h2d: Annotated[Optional[bool], typer.Option("--h2d/--no-h2d", help="Include the host-to-device copy of "
                                                                       "the input in the timed call "
                                                                       "[default: no].")] = None,
    suite: Annotated[Optional[str], typer.Option(help="A suite name (suites/NAME.toml) or a .toml path; "
                                                      "options given here override its values [default: "
                                                      "paper_fig1 with a GPU, cpu_smoke without].")] = None,
    out: Annotated[Optional[str], typer.Option(help="Results file [default: runs/<run_id>.jsonl, or "
                                                    "$VIMBENCH_RESULTS_DIR/<run_id>.jsonl; results/ holds only "
                                                    "the runs the project ships].")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue this results file: skip the cases it holds, "
                                                       "append the rest. Alone, it reruns the sweep it records.")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cases (and the combinations dropped, "
                                                           "with reasons) without running them.")] = False,
    timm_import: Annotated[Optional[str], typer.Option("--timm-import", help="Import this module first: a plugin "
                                                                             "that registers more timm models, "
                                                                             "for --models timm:NAME "
                                                                             "[default: none].")] = None,
    allow_protocol_change: Annotated[bool, typer.Option(
        "--allow-protocol-change", help="With --resume: continue the file although the sweep's settings (models, "
                                        "res, iters, ...) differ from those it records; the new ones are recorded "
                                        "and `vimbench report` flags the file as mixing protocols.")] = False,
    gpus: Annotated[Optional[str], typer.Option(help="0,1,2,3 or all: one worker process per GPU, pinned with "
                                                     "CUDA_VISIBLE_DEVICES; rows go to a run folder.",
                                                rich_help_panel=_PANEL)] = None,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes: N CPU workers with --device cpu; on "
                                                        "cuda the first N GPUs.", rich_help_panel=_PANEL)] = None,
    run_dir: Annotated[Optional[str], typer.Option(help="Run folder of a parallel or SLURM sweep (default: "
                                                        "results/<run_id>/).", rich_help_panel=_PANEL)] = None,
    shard: Annotated[Optional[str], typer.Option(help="K/N: run only the K-th of N deterministic, disjoint parts "
                                                      "of the sweep.", rich_help_panel=_PANEL)] = None,
    executor: Annotated[str, typer.Option(help="local (this machine) or slurm (array jobs through submitit; "
                                               "pip install 'vimbench\\[slurm]').", rich_help_panel=_PANEL)] = "local",
    shards: Annotated[Optional[int], typer.Option(help="SLURM: number of array tasks, one shard each "
                                                       "(default: min(cases, 8)).", rich_help_panel=_PANEL)] = None,
    partition: Annotated[Optional[str], typer.Option(help="SLURM partition.", rich_help_panel=_PANEL)] = None,
    time_limit: Annotated[int, typer.Option(help="SLURM: time limit of one task, minutes.",
                                            rich_help_panel=_PANEL)] = 60,
    gpus_per_task: Annotated[int, typer.Option(help="SLURM: whole GPUs per task (>1: one worker per GPU).",
                                               rich_help_panel=_PANEL)] = 1,
    cpus_per_task: Annotated[Optional[int], typer.Option(help="SLURM: CPU cores per task.",
                                                         rich_help_panel=_PANEL)] = None,
    array_parallelism: Annotated[Optional[int], typer.Option(help="SLURM: at most this many tasks at once.",
                                                             rich_help_panel=_PANEL)] = None,
    sbatch_arg: Annotated[Optional[List[str]], typer.Option(help="SLURM: another sbatch option, NAME=VALUE or "
                                                                 "NAME (repeatable), e.g. account=abc.",
                                                            rich_help_panel=_PANEL)] = None,
    exclusive: Annotated[bool, typer.Option("--exclusive/--no-exclusive",
                                            help="SLURM: the whole node for each task, so no other job's load "
                                                 "moves the timings.", rich_help_panel=_PANEL)] = True,
    status: Annotated[Optional[str], typer.Option(help="RUN_DIR: which shards of a SLURM run finished, failed "
                                                       "or wait.", rich_help_panel=_PANEL)] = None,
    resubmit_failed: Annotated[bool, typer.Option("--resubmit-failed", help="With --status: submit the failed "
                                                                            "shards again.",
                                                  rich_help_panel=_PANEL)] = False,
) -> None:
    """Measure throughput, latency and memory of each model x resolution x batch x precision case.

    Without options: the paper's Figure 1 comparison (suites/paper_fig1.toml) on a GPU, or a small CPU sweep
    (suites/cpu_smoke.toml) where there is none.

    Examples:

        vimbench sweep --models vim_t,deit_t --res 224..1248 --batch 64 --dtype bf16 --attn sdpa,eager --backend triton
        vimbench sweep --models vim_t,timm:convnext_tiny --res 224,512 --batch 8 --dry-run
    """
    import torch

    from vimbench import render
    from vimbench.bench import grid
    from vimbench.bench import sweep as sweeps
    from vimbench.bench.partition import parse_shard
    from vimbench.bench.slurm import SlurmOptions, parse_sbatch_args
    from vimbench.errors import VimbenchError
    from vimbench.results import new_run_id
    from vimbench.settings import results_dir

    if resubmit_failed and not status:
        raise VimbenchError("--resubmit-failed goes with --status RUN_DIR")
    if status:
        _show_status(status, resubmit_failed)
        return
    if executor not in ("local", "slurm"):
        raise VimbenchError(f"--executor {executor!r}: choose local or slurm")
    import_plugin(timm_import)
    if resume and out and Path(resume) != Path(out):
        raise VimbenchError("give either --out (a new file) or --resume (an existing one), not both")
    parsed_shard = parse_shard(shard) if shard else None
    overrides = {"models": models, "res": res, "batch": batch, "points": points, "dtype": dtype, "attn": attn,
                 "backend": backend, "device": device, "warmup": warmup, "iters": iters, "mode": mode,
                 "compile": compile_modes, "compile_backend": compile_backend, "cuda_graphs": cuda_graphs,
                 "h2d": h2d, "vim_slice": vim_slice, "vim_memory": vim_memory}
    cuda = torch.cuda.is_available()
    # a SLURM sweep is planned here and measured on the cluster's GPUs
    config, source = sweeps.resolve_config(suite, overrides, cuda, resume=resume,
                                           plan_only=dry_run or executor == "slurm")
    run_id = new_run_id()
    command = "vimbench " + shlex.join(sys.argv[1:])
    if executor == "slurm":
        if resume or out or gpus or workers or parsed_shard:
            raise VimbenchError("--executor slurm splits the sweep into --shards array tasks in a new --run-dir; "
                                "drop --resume/--out/--gpus/--workers/--shard (resubmit with --status RUN_DIR "
                                "--resubmit-failed)")
        _submit_slurm(config, source, run_dir or str(Path(results_dir()) / run_id), shards, command, run_id,
                      SlurmOptions(partition=partition, time_min=time_limit, gpus_per_task=gpus_per_task,
                                   cpus_per_task=cpus_per_task, array_parallelism=array_parallelism,
                                   exclusive=exclusive, sbatch_args=parse_sbatch_args(sbatch_arg or [])),
                      dry_run)
        return
    parallel = gpus is not None or workers is not None or run_dir is not None or bool(resume and Path(resume).is_dir())
    if parallel:
        if out:
            raise VimbenchError("a parallel sweep writes a run folder: use --run-dir instead of --out")
        folder = Path(resume) if resume else Path(run_dir) if run_dir else Path(results_dir()) / run_id
        _run_parallel(config, source, folder, bool(resume), parsed_shard, gpus, workers, command, run_id, dry_run)
        return
    path = Path(resume) if resume else Path(out) if out else Path(results_dir()) / f"{run_id}.jsonl"
    plan = sweeps.plan_sweep(config, path if (resume or not dry_run) else None, resume=bool(resume),
                             shard=parsed_shard)

    render.note(f"sweep: {source}", markup=False)
    if dry_run:
        _plan_tables(plan, config)
        return

    if resume and not plan.pending:
        render.note(f"{path} is complete: all {len(plan.cases)} cases of its sweep are measured; nothing to run. "
                    f"Report it with: vimbench report {path}", markup=False)
        return
    for res_px, effective in grid.off_patch_resolutions(sorted({k.res for k in plan.cases})):
        render.warning(f"--res {res_px} is not a multiple of the 16 px patch: the models see {effective} px "
                       f"({(effective // grid.PATCH) ** 2 + 1} tokens); rows record res {res_px} and "
                       f"res_effective_px {effective}")
    if resume and parsed_shard is None:
        parsed_shard = sweeps.recorded_shard(path)
    writer = None
    try:
        with _terminate_as_interrupt():
            writer = sweeps.open_sweep_run(config, path, resume=bool(resume), command=command, run_id=run_id,
                                           allow_protocol_change=allow_protocol_change, shard=parsed_shard)
            pending = len(plan.pending) if not resume else len([k for k in plan.cases
                                                                 if k not in writer.done_keys()])
            render.note(f"{pending} cases to run"
                        + (f" ({len(plan.cases) - pending} already in the file)" if resume else "")
                        + f"; results: {path}", markup=False)
            with render.progress_bar(pending, "starting") as update:
                results = sweeps.run_sweep(config, progress=update, writer=writer, shard=parsed_shard)
    except KeyboardInterrupt:
        if writer is not None:
            render.error_line(f"interrupted; the cases measured so far are in {path}. "
                              f"Continue with: vimbench sweep --resume {path}")
        else:
            render.error_line("interrupted before the results file was opened; nothing was measured")
        raise typer.Exit(130) from None
    finally:
        if writer is not None:
            writer.close()

    _results_table(results, config, path)
    failed = [r for r in results if r.status in ("error", "skipped")]
    for r in results:
        if r.status in ("oom", "error"):
            render.note(f"{r.status}: {r.key.label()}: {r.error}", markup=False)
    if any(r.status == "skipped" for r in results):
        render.error_line(f"a case broke the CUDA context; the sweep stopped and marked the rest skipped. After "
                          f"fixing it: vimbench sweep --resume {path}")
    if failed:
        raise typer.Exit(1)


def _plan_tables(plan, config) -> None:
    from vimbench import render
    from vimbench.models.registry import get_spec, num_tokens

    done = set(plan.done)
    render.table(f"{len(plan.pending)} cases to run", ["#", "case", "tokens", "state"],
                 [[i + 1, k.label(), num_tokens(get_spec(k.model), k.res), "in file" if k in done else "to run"]
                  for i, k in enumerate(plan.cases)],
                 caption=f"warm-up {config.warmup}, timed {config.iters} calls per case")
    if plan.dropped:
        render.table("combinations not run", ["what", "why"], [[d.what, d.reason] for d in plan.dropped])


def _run_parallel(config, source: str, folder: Path, resume: bool, shard, gpus: str | None, workers: int | None,
                  command: str, run_id: str, dry_run: bool) -> None:
    """One worker process per GPU (or N CPU workers), all writing into one run folder."""
    import torch

    from vimbench import render
    from vimbench.bench import sweep as sweeps
    from vimbench.bench.workers import make_slots
    from vimbench.settings import cuda_visible_devices

    slots = make_slots(config.device, gpus, workers, visible=cuda_visible_devices(),
                       gpu_count=torch.cuda.device_count() if config.device == "cuda" else 0)
    render.note(f"sweep: {source}", markup=False)
    if dry_run:
        plan = sweeps.plan_sweep(config, folder if resume else None, resume=resume, shard=shard)
        _plan_tables(plan, config)
        render.note(f"workers: {', '.join(s.label() for s in slots)}; run folder: {folder}", markup=False)
        return
    if not resume:
        _check_new_run_dir(folder)
    render.note(f"{len(slots)} workers ({', '.join(s.label() for s in slots)}); run folder: {folder}",
                markup=False)
    lanes = [s.label() for s in slots]
    try:
        plan = sweeps.plan_sweep(config, folder if resume else None, resume=resume, shard=shard)
        render.note(f"{len(plan.pending)} cases to run" + (f" ({len(plan.done)} already in the folder)"
                                                           if plan.done else ""))
        with _terminate_as_interrupt(), render.lanes_progress(len(plan.pending), lanes) as update:
            def progress(event) -> None:
                text = {"start": event.label, "done": f"{event.status}: {event.label}", "idle": "done",
                        "died": f"DIED while measuring {event.label or 'nothing'}",
                        "broken": f"stopped: CUDA context broken by {event.label}"}[event.kind]
                update(event.worker, text, event.completed)

            plan, outcome = sweeps.run_parallel_sweep(config, folder, slots, resume=resume, shard=shard,
                                                      progress=progress, command=command, run_id=run_id)
    except KeyboardInterrupt:
        render.error_line(f"interrupted; the cases measured so far are in {folder}. "
                          f"Continue with: vimbench sweep --resume {folder}")
        raise typer.Exit(130) from None
    _workers_table(outcome, slots, folder)
    if outcome.unfinished:
        render.error_line(f"{len(outcome.unfinished)} cases were not measured (workers that died: "
                          f"{len(outcome.died)}, stopped by a broken CUDA context: {len(outcome.broken)}). "
                          f"The others' rows are kept; finish with: vimbench sweep --resume {folder}")
    if outcome.unfinished or any(status == "error" for _, status in outcome.measured):
        raise typer.Exit(1)


def _check_new_run_dir(folder: Path) -> None:
    """What rundir.create_run_dir refuses (a file, a folder that holds a run, one that cannot be created), checked
    before the progress view starts, so the error is the only line."""
    from vimbench.bench import rundir
    from vimbench.errors import VimbenchError
    from vimbench.results import check_output_dir

    if folder.is_dir() and (rundir.is_run_dir(folder) or rundir.results_files(folder)):
        raise VimbenchError(f"{folder} already holds a run; continue it with --resume {folder}, or choose another "
                            "--run-dir")
    check_output_dir(folder, "--run-dir")


def _workers_table(outcome, slots, folder: Path) -> None:
    from collections import Counter

    from vimbench import render

    rows = []
    for slot, path in zip(slots, outcome.files or [None] * len(slots)):
        counts = Counter(status for key, status in outcome.measured_by(slot.index))
        state = "died" if slot.index in outcome.died else "CUDA context broken" if slot.index in outcome.broken \
            else "finished"
        rows.append([slot.label(), sum(counts.values()), counts.get("ok", 0), counts.get("oom", 0),
                     counts.get("error", 0), state, path.name if path else "-"])
    render.table(f"workers of {folder}", ["worker", "cases", "ok", "oom", "error", "state", "results file"], rows,
                 caption=f"Every worker appends to its own file; `vimbench report {folder}` reads them all.")


def _submit_slurm(config, source: str, folder: str, shards: int | None, command: str, run_id: str, options,
                  dry_run: bool) -> None:
    from vimbench import render
    from vimbench.bench import slurm
    from vimbench.bench import sweep as sweeps
    from vimbench.bench.partition import case_cost, partition
    from vimbench.errors import VimbenchError

    render.note(f"sweep: {source}", markup=False)
    cases, _ = sweeps.sweep_cases(config)
    n = shards if shards is not None else min(len(cases), 8)
    if not 1 <= n <= len(cases):  # slurm.submit's own check, here so that --dry-run previews it too
        raise VimbenchError(f"--shards {n}: the sweep has {len(cases)} cases; use 1..{len(cases)} shards")
    if dry_run:
        parts = partition(cases, n)
        total = sum(case_cost(c) for c in cases) or 1.0
        render.table(f"{len(cases)} cases in {len(parts)} shards", ["shard", "cases", "estimated share", "first case"],
                     [[f"{k}/{len(parts)}", len(p), f"{100 * sum(case_cost(c) for c in p) / total:.0f}%",
                       p[0].label() if p else "-"] for k, p in enumerate(parts, start=1)],
                     caption="Estimated share: relative cost (tokens x batch x model size x mode), not time.")
        return
    manifest, jobs = slurm.submit(config, folder, n, options, command, run_id=run_id)
    render.note(f"submitted {n} array tasks ({len(cases)} cases): job {str(jobs[0].job_id).split('_')[0]}; "
                f"run folder {manifest.run_dir}", markup=False)
    render.note(f"follow it with: vimbench sweep --status {manifest.run_dir}", markup=False)


def _show_status(folder: str, resubmit: bool) -> None:
    from vimbench import render
    from vimbench.bench import slurm

    state = slurm.run_status(folder)
    render.table(f"shards of {state.run_dir}", ["shard", "state", "cases done", "job", "scheduler", "submitted",
                                                "error / log"],
                 [[f"{s.shard}/{len(state.shards)}", s.state, f"{s.done}/{s.total}", s.job_id or "-",
                   s.scheduler_state or "-", s.submissions, s.error or (str(s.log) if s.log else "-")]
                  for s in state.shards],
                 caption=f"finished {state.count('finished')}, running {state.count('running')}, waiting "
                         f"{state.count('waiting')}, failed {state.count('failed')}, unknown "
                         f"{state.count('unknown')}. Results: vimbench report {state.run_dir}")
    if resubmit:
        again = slurm.resubmit_failed(folder, state)
        if again:
            render.note("resubmitted " + ", ".join(f"shard {k} as job {job.job_id}" for k, job in again),
                        markup=False)
        else:
            render.note("no failed shard to resubmit")
    elif state.count("failed"):
        render.note(f"submit the failed shards again with: vimbench sweep --status {folder} --resubmit-failed",
                    markup=False)


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (`timeout`, a job scheduler) ends the sweep like Ctrl-C: rows kept, a resume hint printed."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _results_table(results, config, path: Path) -> None:
    from vimbench import render
    from vimbench.bench.timing import HOST_BOUND_FRACTION, NOISY_SPREAD, host_bound, relative_spread
    from vimbench.bench.memory import CARRY_OVER_MIB

    cuda = config.device == "cuda"
    memory_columns = ["peak alloc MiB", "NVML MiB"] if cuda else ["peak RSS MiB"]
    train = any(r.key.mode == "train" for r in results)
    train_columns = ["fwd ms", "bwd ms"] if train else []
    rows = []
    noisy = bound = 0
    carried: list[float] = []
    for r in results:
        k = r.key
        impl = k.implementation + (f"/{k.attn}" if k.attn else "") + (" +h2d" if k.h2d else "") \
            + (f" slice{k.vim_slice}" if k.vim_slice else "") \
            + (f" mem-{k.vim_memory}" if k.vim_memory != "default" else "")
        memory = [r.peak_alloc_mib, r.nvml_used_mib] if cuda else [r.cpu_peak_rss_mib]
        spread = relative_spread(r.latency_ms_p20, r.latency_ms_p50, r.latency_ms_p80)
        status = r.status
        if spread is not None and spread > NOISY_SPREAD:
            status += " (noisy)"
            noisy += 1
        if host_bound(r.host_ms_p50, r.latency_ms_p50):
            status += " (host-bound)"
            bound += 1
        if (r.allocated_at_start_mib or 0) > CARRY_OVER_MIB:
            status += " (carry-over)"
            carried.append(r.allocated_at_start_mib)
        split = [r.forward_ms_p50, r.backward_ms_p50] if train else []
        rows.append([k.model, k.res, k.batch, k.dtype, k.mode, impl, k.compile, r.fps, r.latency_ms_p50,
                     None if spread is None else f"{100 * spread:.0f}%", *split, *memory, r.compile_s, status,
                     r.tokens])
    timing = ("CUDA events, one pair per call (cuda-graphs: graph replays)" if cuda else "perf_counter per call")
    memory_text = ("peak alloc = torch allocator peak (max_memory_allocated) in a separate one-call pass; "
                   "NVML = device memory in use, sampled every ~1 ms (includes CUDA context and allocator cache)"
                   if cuda else "peak RSS = the whole process's peak resident memory during one call")
    train_text = (" A train call is one step (zero_grad, forward, cross-entropy, backward, AdamW); fwd ms = "
                  "zero_grad + forward + loss, bwd ms = backward + optimizer step, p50 of the same steps."
                  if train else "")
    caption = (f"Timing: {timing}; median (p50) of {config.iters} calls after {config.warmup} warm-up calls; "
               f"img/s = batch / p50; spread = (p80 - p20) / p50 of the calls"
               + (f"; {noisy} case(s) spread more than {100 * NOISY_SPREAD:.0f}% (noisy: other load or clock "
                  "changes; measure again on an idle machine)" if noisy else "")
               + (f"; {bound} case(s) host-bound: the host's submission (from each call's start to its return, "
                  f"before the synchronize) took at least {100 * HOST_BOUND_FRACTION:.0f}% of the p50 call: the GPU "
                  "waited on Python, dispatch and launches (or on a full launch queue; a cuda-graphs row of the "
                  "case tells), so the number moves with the host's speed (host_ms_p50 in the results)"
                  if bound else "")
               + f". Memory: {memory_text}"
               + (f"; {len(carried)} case(s) began with up to {max(carried):,.0f} MiB still allocated by earlier "
                  "cases of the process (carry-over: included in their peak alloc; a leak to report)"
                  if carried else "")
               + f".{train_text}{_host_text(results)} MiB = 2^20 bytes. compile s = wall time of the untimed "
               f"first call (compilation, autotuning; none: JIT and lazy init). Results: {path}")
    render.table(f"vimbench sweep on {config.device}",
                 ["model", "res px", "batch", "dtype", "mode", "implementation", "compile", "img/s", "p50 ms",
                  "spread", *train_columns, *memory_columns, "compile s", "status", "tokens"], rows, caption=caption,
                 keep=["model", "res px", "batch", "dtype", "mode", "implementation", "img/s", "spread", "status"])


def _host_text(results) -> str:
    """The caption's sentence on the host's speed across the cases (CaseResult.host_us_per_op), if it moved."""
    from vimbench.bench.env import host_speed_moved

    probes = [r.host_us_per_op for r in results if r.host_us_per_op]
    if not host_speed_moved(probes):
        return ""
    return (f" Host speed moved during the sweep: a tiny CPU torch op took {min(probes):.1f}-{max(probes):.1f} us "
            "across the cases (host_us_per_op); host-bound rows (eager, small sizes) are not comparable across it.")


@user_errors
def env(device: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "auto") -> None:
    """Print the environment fingerprint that every results file records.

    Example:

    ```
    vimbench env --device cpu
    ```
    """
    import torch

    from vimbench import render
    from vimbench.bench.env import collect_env, gpu_conditions
    from vimbench.bench.grid import parse_device

    resolved = parse_device(device, torch.cuda.is_available())
    items = list(collect_env(resolved).items())
    if resolved == "cuda":
        items += list(gpu_conditions(torch.cuda.current_device()).items())
    render.key_values("vimbench environment", items)


@user_errors
def models(
    res: Annotated[str, typer.Option(help="Resolution in px for the parameter and token counts.")] = "224",
    all_: Annotated[bool, typer.Option("--all", help="Include the tiny test configurations.")] = False,
    timm_pattern: Annotated[Optional[str], typer.Option("--timm", help="List timm models matching this wildcard "
                                                                       "pattern instead (benchmark one with "
                                                                       "--models timm:NAME) [default: off].")]
    = None,
    timm_import: Annotated[Optional[str], typer.Option("--timm-import", help="Import this module first: a plugin "
                                                                             "that registers more timm models "
                                                                             "[default: none].")] = None,
) -> None:
    """List the models with their parameter and token counts at one resolution (a static table: instant).

    Examples:

    ```
    vimbench models --res 1248
    vimbench models --timm '*convnext*'
    ```
    """
    from vimbench import render
    from vimbench.bench.grid import off_patch_resolutions, parse_res
    from vimbench.errors import VimbenchError

    import_plugin(timm_import)
    if timm_pattern is not None:
        from vimbench.models.timm_adapter import timm_names

        names = timm_names(timm_pattern)
        if not names:
            raise VimbenchError(f"no timm model matches {timm_pattern!r}; try a wider pattern, e.g. '*vit*'")
        render.table(f"timm models matching {timm_pattern!r}", ["--models value"], [[f"timm:{n}"] for n in names],
                     caption=f"{len(names)} models. Each is built at every sweep resolution where timm allows it "
                             "(img_size); elsewhere the case is dropped with timm's reason (see --dry-run).")
        return
    from vimbench.models.registry import describe

    sizes = parse_res(res)
    if len(sizes) != 1:
        raise VimbenchError(f"--res {res!r} names {len(sizes)} resolutions; give one, e.g. --res 1248")
    for res_px, effective in off_patch_resolutions(sizes):  # as sweep says it
        render.warning(f"--res {res_px} is not a multiple of the 16 px patch: the models see {effective} px "
                       "(the counts below are for that)")
    rows = describe(sizes[0], include_test=all_)
    render.table(f"models at {sizes[0]} px", ["alias", "family", "size", "dim", "depth", "params", "tokens"],
                 [[m["alias"], m["family"], m["size"], m["embed_dim"], m["depth"], m["params"], m["tokens"]]
                  for m in rows],
                 caption="Random-weight models with a 1000-class head; tokens = (res // 16)^2 patches + 1 class "
                         "token. Any timm model runs too, as timm:NAME (vimbench models --timm PATTERN).")


def import_plugin(module: str | None) -> None:
    """--timm-import: import a module that registers more timm models (e.g. MambaVision registers itself)."""
    if not module:
        return
    import importlib

    from vimbench.errors import VimbenchError

    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise VimbenchError(f"--timm-import {module}: cannot import it ({exc}); install the plugin or check the "
                            "module name") from None


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("env")(env)
    app.command("models")(models)
