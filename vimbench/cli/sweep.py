"""`vimbench sweep`, `vimbench env` and `vimbench models`: parse options, call vimbench.bench, render."""
from __future__ import annotations

import shlex
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from vimbench.cli.common import user_errors

_RES_HELP = ("Resolutions in px: 224..2048 = the standard ladder (224,384,512,640,738,896,1024,1248,1536,2048) "
             "inside the bounds; 256..1024:128 = every 128 px; 224,738 = explicit; pieces combine with commas.")
_COMPILE_HELP = ("How the forward runs, a list sweeps them: none (eager launches), cuda-graphs (the eager forward "
                 "captured into a CUDA graph, replays timed), or a torch.compile mode: default, max-autotune, "
                 "max-autotune-no-cudagraphs, reduce-overhead. Compilation is never timed (compile_s column).")


@user_errors
def sweep(
    models: Annotated[Optional[str], typer.Option(help="Models, comma-separated aliases or full names "
                                                       "(vimbench models lists them), e.g. vim_t,deit_t.")] = None,
    res: Annotated[Optional[str], typer.Option(help=_RES_HELP)] = None,
    batch: Annotated[Optional[str], typer.Option(help="Batch sizes, e.g. 1,8,64. Never changed on OOM.")] = None,
    points: Annotated[Optional[str], typer.Option(help="Resolution x batch pairs, e.g. 224x128,1248x8: run these "
                                                       "pairs instead of the product --res x --batch.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Precision modes: fp32 (TF32 off), tf32, bf16, fp16 "
                                                      "(autocast).")] = None,
    attn: Annotated[Optional[str], typer.Option(help="DeiT attention: sdpa (fused), eager (explicit).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Vim op backend: torch, triton.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cuda | cpu (auto: cuda when present).")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed warm-up calls per case (>= 1).")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Timed calls per case (>= 5).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="What one timed call is: infer (a forward), train (a "
                                                     "training step: forward, cross-entropy, backward, AdamW); "
                                                     "both: infer,train.")] = None,
    compile_modes: Annotated[Optional[str], typer.Option("--compile", help=_COMPILE_HELP)] = None,
    compile_backend: Annotated[Optional[str], typer.Option(help="torch.compile backend: inductor (default); "
                                                                "aot_eager or eager only check tracing.")] = None,
    cuda_graphs: Annotated[Optional[bool], typer.Option("--cuda-graphs/--no-cuda-graphs",
                                                        help="Shorthand for --compile cuda-graphs.")] = None,
    vim_slice: Annotated[Optional[str], typer.Option(help="Vim: images per mixer slice at inference, a list "
                                                          "sweeps them; 0 = the whole batch (lower peak memory "
                                                          "with a slice, fewer programs per kernel).")] = None,
    h2d: Annotated[Optional[bool], typer.Option("--h2d/--no-h2d", help="Include the host-to-device copy of "
                                                                       "the input in the timed call.")] = None,
    suite: Annotated[Optional[str], typer.Option(help="A suite name (suites/NAME.toml) or a .toml path; "
                                                      "options given here override its values.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Results file (default: results/<run_id>.jsonl).")] = None,
    resume: Annotated[Optional[str], typer.Option(help="Continue this results file: skip the cases it holds, "
                                                       "append the rest. Alone, it reruns the sweep it records.")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the cases (and the combinations dropped, "
                                                           "with reasons) without running them.")] = False,
    allow_protocol_change: Annotated[bool, typer.Option(
        "--allow-protocol-change", help="With --resume: continue the file although the sweep's settings (models, "
                                        "res, iters, ...) differ from those it records; the new ones are recorded "
                                        "and `vimbench report` flags the file as mixing protocols.")] = False,
) -> None:
    """Measure throughput, latency and memory of each model x resolution x batch x precision case.

    Without options: the paper's Figure 1 comparison (suites/paper_fig1.toml) on a GPU, or a small CPU sweep
    (suites/cpu_smoke.toml) where there is none."""
    import torch

    from vimbench import render
    from vimbench.bench import grid
    from vimbench.bench import sweep as sweeps
    from vimbench.errors import VimbenchError
    from vimbench.models.registry import get_spec, num_tokens
    from vimbench.results import new_run_id
    from vimbench.settings import results_dir

    if resume and out and Path(resume) != Path(out):
        raise VimbenchError("give either --out (a new file) or --resume (an existing one), not both")
    overrides = {"models": models, "res": res, "batch": batch, "points": points, "dtype": dtype, "attn": attn,
                 "backend": backend, "device": device, "warmup": warmup, "iters": iters, "mode": mode,
                 "compile": compile_modes, "compile_backend": compile_backend, "cuda_graphs": cuda_graphs,
                 "h2d": h2d, "vim_slice": vim_slice}
    cuda = torch.cuda.is_available()
    config, source = sweeps.resolve_config(suite, overrides, cuda, resume=resume, plan_only=dry_run)
    run_id = new_run_id()
    path = Path(resume) if resume else Path(out) if out else Path(results_dir()) / f"{run_id}.jsonl"
    plan = sweeps.plan_sweep(config, path if (resume or not dry_run) else None, resume=bool(resume))

    render.note(f"sweep: {source}", markup=False)
    if dry_run:
        done = set(plan.done)
        render.table(f"{len(plan.pending)} cases to run", ["#", "case", "tokens", "state"],
                     [[i + 1, k.label(), num_tokens(get_spec(k.model), k.res), "in file" if k in done else "to run"]
                      for i, k in enumerate(plan.cases)],
                     caption=f"warm-up {config.warmup}, timed {config.iters} calls per case")
        if plan.dropped:
            render.table("combinations not run", ["what", "why"], [[d.what, d.reason] for d in plan.dropped])
        return

    for res_px, effective in grid.off_patch_resolutions(sorted({k.res for k in plan.cases})):
        render.warning(f"--res {res_px} is not a multiple of the 16 px patch: the models see {effective} px "
                       f"({(effective // grid.PATCH) ** 2 + 1} tokens); rows record res {res_px} and "
                       f"res_effective_px {effective}")
    command = "vimbench " + shlex.join(sys.argv[1:])
    writer = None
    try:
        with _terminate_as_interrupt():
            writer = sweeps.open_sweep_run(config, path, resume=bool(resume), command=command, run_id=run_id,
                                           allow_protocol_change=allow_protocol_change)
            pending = len(plan.pending) if not resume else len([k for k in plan.cases
                                                                 if k not in writer.done_keys()])
            render.note(f"{pending} cases to run"
                        + (f" ({len(plan.cases) - pending} already in the file)" if resume else "")
                        + f"; results: {path}")
            with render.progress_bar(pending, "starting") as update:
                results = sweeps.run_sweep(config, progress=update, writer=writer)
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

    cuda = config.device == "cuda"
    memory_columns = ["peak alloc MiB", "NVML MiB"] if cuda else ["peak RSS MiB"]
    train = any(r.key.mode == "train" for r in results)
    train_columns = ["fwd ms", "bwd ms"] if train else []
    rows = []
    for r in results:
        k = r.key
        impl = k.implementation + (f"/{k.attn}" if k.attn else "") + (" +h2d" if k.h2d else "") \
            + (f" slice{k.vim_slice}" if k.vim_slice else "")
        memory = [r.peak_alloc_mib, r.nvml_used_mib] if cuda else [r.cpu_peak_rss_mib]
        split = [r.forward_ms_p50, r.backward_ms_p50] if train else []
        rows.append([k.model, k.res, r.tokens, k.batch, k.dtype, k.mode, impl, k.compile, r.fps, r.latency_ms_p50,
                     *split, *memory, r.compile_s, r.status])
    timing = ("CUDA events, one pair per call (cuda-graphs: graph replays)" if cuda else "perf_counter per call")
    memory_text = ("peak alloc = torch allocator peak (max_memory_allocated) in a separate one-call pass; "
                   "NVML = device memory in use, sampled every ~1 ms (includes CUDA context and allocator cache)"
                   if cuda else "peak RSS = the whole process's peak resident memory during one call")
    train_text = (" A train call is one step (zero_grad, forward, cross-entropy, backward, AdamW); fwd ms = "
                  "zero_grad + forward + loss, bwd ms = backward + optimizer step, p50 of the same steps."
                  if train else "")
    caption = (f"Timing: {timing}; median (p50) of {config.iters} calls after {config.warmup} warm-up calls; "
               f"img/s = batch / p50. Memory: {memory_text}.{train_text} MiB = 2^20 bytes. compile s = wall time "
               f"of the untimed first call (compilation, autotuning; none: JIT and lazy init). Results: {path}")
    render.table(f"vimbench sweep on {config.device}",
                 ["model", "res px", "tokens", "batch", "dtype", "mode", "implementation", "compile", "img/s",
                  "p50 ms", *train_columns, *memory_columns, "compile s", "status"], rows, caption=caption)


@user_errors
def env(device: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "auto") -> None:
    """Print the environment fingerprint that every results file records."""
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
) -> None:
    """List the models with their parameter and token counts at one resolution."""
    from vimbench import render
    from vimbench.bench.grid import parse_res
    from vimbench.bench.runner import describe_models
    from vimbench.errors import VimbenchError

    sizes = parse_res(res)
    if len(sizes) != 1:
        raise VimbenchError(f"--res {res!r} names {len(sizes)} resolutions; give one, e.g. --res 1248")
    rows = describe_models(sizes[0], include_test=all_)
    render.table(f"models at {sizes[0]} px", ["alias", "family", "size", "dim", "depth", "params", "tokens"],
                 [[m["alias"], m["family"], m["size"], m["embed_dim"], m["depth"], m["params"], m["tokens"]]
                  for m in rows],
                 caption="Random-weight models with a 1000-class head; tokens = (res // 16)^2 patches + 1 class token.")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("env")(env)
    app.command("models")(models)
