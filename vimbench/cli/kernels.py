"""`vimbench kernels`: microbenchmarks of the Triton ops at Vim shapes (the sub-app's default action).

`kernels_app` is the Typer sub-app; other modules add subcommands to it (see kernels_checks.py)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer

from vimbench.cli.common import user_errors

kernels_app = typer.Typer(
    name="kernels",
    help=inspect.cleandoc("""Benchmark vimbench's Triton kernels at Vim shapes (default action), and check them.

    Examples:

    ```
    vimbench kernels --models vim_t --res 1248 --batch 64 --dtype bf16 --impl triton
    vimbench kernels static
    ```
    """),  # a ``` fence, not an indented block: see the app's help in vimbench/cli/__init__.py
    invoke_without_command=True,
    no_args_is_help=False,
)


@kernels_app.callback(invoke_without_command=True)
@user_errors
def bench(
    ctx: typer.Context,
    models: str = typer.Option("vim_t", "--models", "--model",
                               help="Vim models whose shapes to use, e.g. vim_t,vim_s,vim_b."),
    res: str = typer.Option("224,1248", "--res", help="Resolutions in px: 224..1248, 256..1024:128 or 224,512."),
    batch: str = typer.Option("1,64", "--batch", help="Batch sizes, e.g. 1,64."),
    dtype: str = typer.Option("bf16,fp32", "--dtype", help="bf16, fp16, fp32 (comma list)."),
    impl: str = typer.Option("triton,torch", "--impl", help="triton, torch, cuda (mamba-ssm, when installed)."),
    ops: str = typer.Option("all", "--ops",
                            help="Which registered ops to time (`vimbench kernels list`), comma list, or all "
                                 "(bimamba_scan_halves: the bf16/fp16 model's scan; bimamba_scan: combined)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Results file (JSON lines) "
                                                           "[default: runs/kernels-<run_id>.jsonl]."),
    max_ref_elements: int = typer.Option(50_000_000, "--max-ref-elements",
                                         help="Skip the (slow) torch reference scan above this batch x E x L "
                                              "elements; 0 = never skip."),
    warmup_ms: float = typer.Option(25.0, "--warmup-ms", help="do_bench warmup, milliseconds."),
    rep_ms: float = typer.Option(100.0, "--rep-ms", help="do_bench repetition time, milliseconds."),
) -> None:
    """Time each op (triton vs torch reference) at Vim shapes; rows go to a results file of kind 'kernel'.

    Examples:

        vimbench kernels --models vim_t --res 1248 --batch 64 --dtype bf16 --impl triton
        vimbench kernels --ops bimamba_scan_halves,conv1d_silu_bidir --res 224,1248 --out runs/kernels.jsonl
    """
    if ctx.invoked_subcommand is not None:
        return
    import math
    import sys

    from vimbench import render
    from vimbench.kerneltools import microbench as kb
    from vimbench.bench.grid import parse_batch, parse_models, parse_res
    from vimbench.errors import VimbenchError
    from vimbench.kerneltools.registry import op_names

    def split(value: str) -> list[str]:
        return [p.strip().lower() for p in value.split(",") if p.strip()]

    op_list = op_names() if ops.strip().lower() == "all" else [p.strip() for p in ops.split(",") if p.strip()]
    cases = kb.plan(parse_models(models), parse_res(res), parse_batch(batch), split(dtype), split(impl), op_list)
    if not (math.isfinite(warmup_ms) and warmup_ms >= 0):
        raise VimbenchError(f"--warmup-ms {warmup_ms}: give a time in milliseconds >= 0")
    if not (math.isfinite(rep_ms) and rep_ms > 0):
        raise VimbenchError(f"--rep-ms {rep_ms}: give a time in milliseconds > 0")
    if max_ref_elements < 0:
        raise VimbenchError(f"--max-ref-elements {max_ref_elements}: give 0 (never skip the reference) or a "
                            "number of elements")
    import torch

    if not torch.cuda.is_available():
        raise VimbenchError("vimbench kernels needs a CUDA GPU and none is visible here; the kernels' "
                            "correctness tests run on CPU: python -m pytest tests/kernels")
    from vimbench.bench.env import collect_env, now
    from vimbench.results import new_run_id, open_run
    from vimbench.settings import results_dir

    run_id = new_run_id()
    path = out or Path(results_dir()) / f"kernels-{run_id}.jsonl"
    settings = {"warmup_ms": warmup_ms, "rep_ms": rep_ms, "max_ref_elements": max_ref_elements,
                "timer": "triton.testing.do_bench(return_mode='median')"}
    with open_run(path, "kernels", "vimbench " + " ".join(sys.argv[1:]), collect_env("cuda"), settings,
                  run_id=run_id, created=now()) as results, render.progress_bar(len(cases), "kernels") as update:
        rows = kb.run_kernel_bench(cases, results, update, max_ref_elements or None, warmup_ms, rep_ms)
    render.table(
        "Kernel microbenchmarks",
        ["op", "model", "res px", "L", "batch", "dtype", "impl", "p50 ms", "GB/s", "% HBM", "% exp", "% FMA",
         "bound", "status"],
        [[r.op, r.model, r.res, r.tokens, r.batch, r.dtype, r.impl, r.ms_p50, r.gbps, r.pct_hbm, r.pct_mufu,
          r.pct_fma, r.bound, r.status if r.status == "ok" else f"{r.status}: {r.error}"] for r in rows],
        caption="p50 ms: triton.testing.do_bench median. GB/s: each input read once + each output written once. "
                "% HBM / % exp / % FMA: that floor (bytes at the measured copy bandwidth; exps, e.g. batch*L*E*N "
                "per scan direction, at the special-function-unit rate; FMAs at the FP32 rate) over the measured "
                "time; 100 = at the floor. bound: the largest floor. Ceilings: vimbench/analysis/roofline.py.",
        digits=3,
    )
    render.note(f"rows written to {results.path}", markup=False)


@kernels_app.command("list")
@user_errors
def list_ops() -> None:
    """The registered kernel ops and what each has: forward, backward, reference, static specs (what `kernels
    static` compiles), regression cases (what `kernels check` times), official CUDA counterpart.

    Example:

    ```
    vimbench kernels list
    ```
    """
    from vimbench import render
    from vimbench.kerneltools.registry import describe_ops

    ops = describe_ops()

    def short(ref: str | None) -> str:
        return ref.rpartition(":")[2] if ref else "-"

    render.table("kernel ops (vimbench/kerneltools/kernel_ops.py)",
                 ["op", "category", "forward", "backward", "reference", "static specs", "regression cases",
                  "official CUDA"],
                 [[d.name, d.category, short(d.forward), short(d.backward), short(d.reference),
                   " ".join(d.static_specs) or "-", d.regression_cases, d.official] for d in ops],
                 caption="forward/backward/reference: functions under kernels/; static specs: the variants "
                         "`vimbench kernels static` compiles; regression cases: what `vimbench kernels check` "
                         "times.")
    for d in ops:
        render.note(f"{d.name}: {d.summary}; kernels {', '.join(d.kernels) or '-'}", markup=False)


def register(app) -> None:
    app.add_typer(kernels_app, name="kernels")


try:  # `check` and `static` subcommands live in their own module
    from vimbench.cli import kernels_checks as _checks
except ImportError:  # pragma: no cover - that module is optional while it is being written
    _checks = None
if _checks is not None and hasattr(_checks, "register"):
    _checks.register(kernels_app)
