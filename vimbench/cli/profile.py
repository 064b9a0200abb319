"""`vimbench profile`: where one forward or one training step spends its time, per kernel category, across
resolutions."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vimbench.cli.common import user_errors


@user_errors
def profile(
    model: Annotated[str, typer.Argument(help="Model alias or full name, e.g. vim_t, deit_t.")],
    res: Annotated[str, typer.Option(help="Resolutions in px, e.g. 224 or 224,512,1248 (sweep grammar).")] = "224",
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1,
    dtype: Annotated[str, typer.Option(help="fp32 (TF32 off), tf32, bf16, fp16 (autocast).")] = "fp32",
    backend: Annotated[str, typer.Option(help="Vim op backend: torch or triton.")] = "torch",
    attn: Annotated[str, typer.Option(help="DeiT attention: sdpa (fused) or eager (explicit softmax(QK^T)V).")]
    = "sdpa",
    device: Annotated[str, typer.Option(help="auto | cuda | cpu (auto: cuda when present).")] = "auto",
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Folder for the results file, traces and figure "
                                                                    "[default: runs/profiles, or "
                                                                    "$VIMBENCH_RESULTS_DIR/profiles; results/ holds "
                                                                    "only the runs the project ships].")] = None,
    mode: Annotated[str, typer.Option(help="What is profiled: infer (one forward) or train (one training step: "
                                           "zero_grad, forward, cross-entropy, backward, AdamW).")] = "infer",
    vim_memory: Annotated[str, typer.Option(help="Vim, inference: the mixers' memory mode (default, split, lean, "
                                                 "lean-gated; see `vimbench sweep --help`).")] = "default",
) -> None:
    """Profile one warmed-up forward (--mode infer) or training step (--mode train) per resolution.

    torch.profiler over that call: time per category (scan, conv, norm, gemm, attention, elementwise/copy, optimizer, other) in
    ms and %, the GPU's busy and idle time over the profiled call, a Chrome trace per case, analytic FLOPs and
    achieved TFLOP/s (MAC = 2 FLOPs, scan 9·B·L·E·N per direction; a training step counts 3 x forward), a table
    and a stacked-bar figure.

    Examples:

        vimbench profile vim_t --res 224,1248 --batch 64 --dtype bf16 --backend triton -o runs/profiles
        vimbench profile vim_t --mode train --res 1248 --batch 8 --dtype bf16 --backend triton -o runs/profiles
        vimbench profile deit_t --res 224 --device cpu
        vimbench profile vim_t --res 1248 --batch 64 --dtype bf16 --backend triton --vim-memory lean-gated
    """
    import torch

    from vimbench import render
    from vimbench.bench import grid
    from vimbench.analysis.trace import CATEGORIES
    from vimbench.bench.profile import run_profile
    from vimbench.errors import VimbenchError
    from vimbench.models import get_spec

    spec = get_spec(model)
    (mode_name,) = grid.parse_modes(mode) if "," not in mode else (None,)
    if mode_name is None:
        raise VimbenchError("profile takes one --mode (infer or train); run it once per mode")
    resolutions = list(grid.parse_res(res))
    (dtype_name,) = grid.parse_dtypes(dtype) if "," not in dtype else (None,)
    if dtype_name is None:
        raise VimbenchError("profile takes one --dtype; run it once per precision")
    (backend_name,) = grid.parse_backends(backend) if "," not in backend else (None,)
    if backend_name is None:
        raise VimbenchError("profile takes one --backend; run it once per backend")
    if batch < 1:
        raise VimbenchError(f"batch {batch} is not a positive number of images")
    (attn_name,) = grid.parse_attn(attn) if "," not in attn else (None,)
    if attn_name is None:
        raise VimbenchError("profile takes one --attn; run it once per attention path")
    (memory,) = grid.parse_vim_memory(vim_memory) if "," not in vim_memory else (None,)
    if memory is None:
        raise VimbenchError("profile takes one --vim-memory; run it once per memory mode")
    if memory != "default":
        if spec.family != "vim":
            raise VimbenchError(f"--vim-memory {memory}: memory modes are a Vim mixer option; {spec.alias} has none")
        if mode_name == "train":
            raise VimbenchError(f"--vim-memory {memory}: memory modes change inference only; profile training "
                                "with the default")
        if grid.fuses_dt_proj(memory) and backend_name == "torch":
            raise VimbenchError(f"--vim-memory {memory} fuses dt_proj into the Triton scan: use --backend triton")
    dev = grid.parse_device(device, torch.cuda.is_available())
    if dev == "cpu" and dtype_name in grid.CPU_DTYPE_DROPS:  # the reasons a sweep drops these dtypes on CPU
        raise VimbenchError(f"--dtype {dtype_name} on cpu: {grid.CPU_DTYPE_DROPS[dtype_name]}")
    if spec.family == "vim":
        from vimbench.models.ops import get_ops

        get_ops(backend_name)  # a backend that cannot run here fails now, in one line, before anything is built
    from vimbench.results import check_output_dir
    from vimbench.settings import results_dir

    out = check_output_dir(out or Path(results_dir()) / "profiles", "--out folder")
    command = "vimbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    what = "step" if mode_name == "train" else "forward"
    try:
        with render.progress_bar(len(resolutions), f"profile {spec.alias} {mode_name}") as update:
            run = run_profile(spec.alias, resolutions, batch, dtype_name, backend_name, attn_name,
                              dev, out, command=command, progress=update, mode=mode_name, vim_memory=memory)
    except KeyboardInterrupt:  # each resolution's row is flushed when profiled: say where they are
        render.error_line(f"interrupted; the resolutions profiled so far are in {out}/profile-{spec.alias}-*.jsonl")
        raise typer.Exit(130) from None
    ok = [r for r in run.rows if r.get("status") == "ok"]
    figure_path = None
    if ok:
        from vimbench.report.profile_figure import figure_from_results

        figure_path = figure_from_results(run.results_path, run.results_path.with_suffix(".png"))
    from vimbench.report.profile_figure import used_categories

    cats = used_categories(ok) if ok else list(CATEGORIES)   # categories no kernel fell into are left out
    # column -> row field; the forward/backward split for steps, the GPU timeline on the GPU only
    fields = {"res": "res", f"{what} ms": "latency_ms_p50"}
    if mode_name == "train":
        fields.update({"fwd ms": "forward_ms_p50", "bwd+opt ms": "backward_ms_p50"})
    fields["kernel ms"] = "profiled_ms"
    if dev == "cuda":
        fields.update({"GPU busy ms": "gpu_busy_ms", "GPU idle ms": "gpu_idle_ms"})
    fields.update({"TFLOP/s": "tflops", **{f"{c} %": f"pct_{c}" for c in cats}})
    caption = (f"{what} ms: p50 of unprofiled timed {what}s"
               + ("; fwd: zero_grad + forward + loss, bwd+opt: backward + AdamW (same steps)"
                  if mode_name == "train" else "")
               + f"; kernel: summed kernel time of one profiled {what} (CPU: operator self time)"
               + (f"; GPU busy / idle: that {what}'s span on the GPU timeline with a kernel running (union of "
                  f"kernels) / without" if dev == "cuda" else "")
               + f"; TFLOP/s: analytic FLOPs{' (3 x forward)' if mode_name == 'train' else ''} / p50 {what}")
    first = run.rows[0]
    memory_label = f" mem-{memory}" if memory != "default" else ""
    render.table(f"{spec.alias} {first['implementation']}{memory_label} b{batch} {dtype_name} {dev} {mode_name}: "
                 f"share of profiled time", list(fields), [[r.get(f) for f in fields.values()] for r in ok],
                 caption=caption, keep=[c for c in fields if c not in ("kernel ms", "TFLOP/s")])
    rate_cols = ["gemm", "scan", "conv", "attention"]
    render.table("per category: ms (achieved TFLOP/s)", ["res"] + rate_cols,
                 [[r["res"]] + [_ms_rate(r, c) for c in rate_cols] for r in ok])
    for r in run.rows:
        if r.get("status") != "ok":
            render.note(f"{r['res']} px: {r['status']} {r.get('error', '')}", markup=False)
    render.note(f"results: {run.results_path}", markup=False)
    if ok:
        render.note(f"traces: {Path(ok[0]['trace']).parent}/trace_*.json (chrome://tracing or ui.perfetto.dev)",
                    markup=False)
    if figure_path:
        render.note(f"figure: {figure_path}", markup=False)


def _ms_rate(row: dict, category: str) -> str:
    ms = row.get(f"ms_{category}") or 0.0
    rate = row.get(f"tflops_{category}")
    return f"{ms:,.3f}" + (f" ({rate:,.2f})" if rate else "")


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
