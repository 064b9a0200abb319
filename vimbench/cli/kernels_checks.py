"""`vimbench kernels check` (timed regression check on a GPU) and `vimbench kernels static` (compile for sm_90
and check registers/spills/SASS without a GPU). `register(kernels_app)` adds both to the `kernels` sub-app."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vimbench.cli.common import user_errors

REGRESSION_EXIT = 1


@user_errors
def check(
    baseline: Path = typer.Option(..., "--baseline", help="Baseline JSON, e.g. results/baselines/h200.json, or a "
                                  "folder of them: the one measured on this GPU is used (with --update: a file)."),
    update: bool = typer.Option(False, "--update", help="Time the suite and write it as the new baseline (with "
                                "--only: re-time those cases of an existing baseline, keeping the others)."),
    repeats: int = typer.Option(5, "--repeats", min=2, help="Independent do_bench medians per case (noise estimate)."),
    only: str = typer.Option("", "--only", help="Comma-separated substrings: time only cases whose name contains one."),
    confirm_rounds: int = typer.Option(5, "--confirm-rounds", min=1,
                                       help="Re-measurements of each flagged case (interleaved) before it counts "
                                            "as a regression."),
) -> None:
    """Re-time the Triton kernel suite and compare with a baseline. A case beyond the noise threshold
    max(5%, 3 x relative spread of the repeats, 0.03 ms / baseline ms) is re-measured (interleaved with the other
    flagged cases): exit 1 only when that confirms the regression ("unstable" cases are reported, exit 0), 2 on bad
    input or no GPU. Baselines are per GPU model: given a folder, the check uses the file whose recorded GPU is
    this one.

    Examples:

    ```
    vimbench kernels check --baseline results/baselines/
    vimbench kernels check --baseline results/baselines/h200.json --only scan --repeats 3
    vimbench kernels check --baseline results/baselines/h100.json --update   # a new GPU's baseline
    vimbench kernels check --baseline results/baselines/h100.json --update --only bimamba_scan_bwd   # re-time some
    ```
    """
    from vimbench import render
    from vimbench.errors import VimbenchError
    from vimbench.kerneltools import regression as rg

    base_cases, in_folder = None, None
    partial = update and bool(only.strip())  # re-time some cases of an existing baseline
    if update:
        from vimbench.results import check_output_file

        if baseline.is_dir():
            raise VimbenchError(f"--update writes one baseline file; give its path, e.g. {baseline / 'h100.json'}")
        if partial:  # the existing baseline must be readable (and writable) first
            if not baseline.exists():
                raise VimbenchError(f"--update --only re-times cases of an existing baseline, and {baseline} does not "
                                    f"exist; a new baseline times the whole suite (--update without --only)")
            header, _ = rg.load_baseline(baseline)
        check_output_file(baseline, "baseline")  # before the suite is timed
    elif baseline.is_dir():
        in_folder = rg.load_baseline_folder(baseline)  # read before the GPU check: bad files fail on any machine
    else:
        header, base_cases = rg.load_baseline(baseline)
    import torch

    if not torch.cuda.is_available():
        raise VimbenchError("`vimbench kernels check` times kernels on a CUDA GPU and none is present here; "
                            "use `vimbench kernels static` on a CPU machine")
    gpu = torch.cuda.get_device_name(0)
    if in_folder is not None:
        baseline, header, base_cases = rg.pick_baseline(in_folder, gpu, baseline)
    if base_cases is not None or partial:
        rg.check_baseline_gpu(header, gpu, baseline)
    cases = rg.select_cases(rg.default_suite(), only)
    with render.progress_bar(len(cases), "kernels") as update_bar:
        timings = rg.run_suite(cases, repeats, progress=update_bar)
    if update:
        import shlex
        import sys

        from vimbench.bench.env import collect_env

        if partial:
            command = "vimbench " + shlex.join(sys.argv[1:])
            rg.update_baseline_cases(baseline, timings, gpu, collect_env("cuda"), command)
        else:
            rg.write_baseline(baseline, timings, gpu, collect_env("cuda"),
                              {"repeats": repeats, "timer": "triton.testing.do_bench(return_mode='median')"})
        render.table(f"{'updated cases of' if partial else 'new'} baseline: {baseline}",
                     ["case", "median ms", "spread %"],
                     [[name, t.median_ms, 100 * t.spread] for name, t in timings.items()], digits=3)
        return
    comparisons = rg.compare_timings(base_cases, timings)
    suspects = rg.flagged(comparisons)
    if suspects:
        timer = rg.suite_timer(cases)
        try:
            with render.progress_bar(len(suspects) * confirm_rounds, "re-measuring flagged cases") as bar:
                comparisons = rg.confirm_regressions(comparisons, timer, confirm_rounds, progress=bar)
        finally:
            timer.close()
    _render_comparisons(comparisons, baseline, {c.name: rg.pct_of_floor(c, timings[c.name].median_ms, gpu)
                                                for c in cases if c.name in timings})
    n_reg = sum(c.status == "regression" for c in comparisons)
    render.note(f"first pass flagged {len(suspects)} case(s): {n_reg} confirmed regression(s), "
                f"{len(suspects) - n_reg} unstable" if suspects else "first pass flagged nothing", markup=False)
    if rg.has_regression(comparisons):
        raise typer.Exit(REGRESSION_EXIT)


def _render_comparisons(comparisons, baseline: Path, pct_floor: dict | None = None) -> None:
    from vimbench import render

    rows = []
    for c in comparisons:
        change = None if c.change is None else 100 * c.change
        threshold = None if c.threshold is None else 100 * c.threshold
        rows.append([c.case, c.baseline_ms, c.first_ms, c.current_ms, change, threshold,
                     (pct_floor or {}).get(c.case), c.status])
    n_reg = sum(c.status == "regression" for c in comparisons)
    n_unstable = sum(c.status == "unstable" for c in comparisons)
    render.table(f"kernels vs {baseline}", ["case", "baseline ms", "flagged ms", "now ms", "change %",
                                            "threshold %", "% of floor", "status"],
                 rows, caption=f"{n_reg} confirmed regression(s), {n_unstable} unstable; threshold = max(5%, 3 x "
                               "relative spread of the repeats, 0.03 ms / baseline ms). A case beyond it is "
                               "re-measured (interleaved): flagged ms = the first pass, now ms = the median of the "
                               "re-measurements; regression = their lower quartile is still beyond the threshold, "
                               "unstable = it is not (not a failure). % of floor: roofline floor time / measured "
                               "time (vimbench.analysis.roofline)",
                 digits=3)


@user_errors
def static(
    expect: Optional[Path] = typer.Option(None, "--expect", help="Expectation file [default: "
                                          "kernels/static_expectations.json of this checkout, from any folder]."),
    update: bool = typer.Option(False, "--update", help="Write the current compilation results as expectations."),
) -> None:
    """Compile every Triton kernel for sm_90 (no GPU needed) and check registers, spills, vectorized loads and
    MUFU.EX2 counts against the expectation file: exit 1 on a spill or regression, 2 on bad input.

    Examples:

    ```
    vimbench kernels static
    vimbench kernels static --update        # after a deliberate kernel change
    ```
    """
    from vimbench import render
    from vimbench.kerneltools import static_check as sc

    expect = expect or sc.default_expectations_path()
    specs = sc.kernel_specs()
    if not specs:
        render.note("no registered kernel op has static specs (vimbench/kerneltools/kernel_ops.py): nothing to check")
        return
    if update:
        from vimbench.results import check_output_file

        check_output_file(expect, "expectation file")  # before the kernels are compiled
    expected = None if update else sc.load_expectations(expect)["kernels"]
    reports = sc.static_reports(specs)
    if update:
        sc.write_expectations(expect, reports)
        findings = sc.compare_static(reports, {r.name: r.to_json() for r in reports})
    else:
        findings = sc.compare_static(reports, expected)
    by_name = {r.name: r for r in reports}
    rows = []
    for f in findings:
        r = by_name.get(f.kernel)
        rows.append([f.kernel, r and r.registers, r and r.stack_bytes + r.local_bytes, r and r.ldg_128, r and r.ldg_64,
                     r and r.mufu_ex2, r and r.ex2_per_state_element, r and r.shfl, f.status])
    title = f"wrote {expect}" if update else f"sm_90 static check vs {expect}"
    render.table(title, ["kernel", "regs", "spill B", "LDG.128", "LDG.64", "MUFU.EX2", "EX2/state", "SHFL",
                         "status"], rows, digits=3,
                 caption="Per kernel, from the sm_90 binary: regs = registers per thread; spill B = stack + local "
                         "memory per thread, bytes; LDG.128 / LDG.64 = 128- / 64-bit global load instructions; "
                         "MUFU.EX2 = exp2 instructions; EX2/state = MUFU.EX2 per scan state element a thread "
                         "updates in the unrolled tile; SHFL = warp shuffle instructions. Counts are static "
                         "(instructions in the binary, not executed ones).")
    for f in findings:
        for message in f.messages:
            render.note(f"{f.kernel} [{f.status}]: {message}", markup=False)
    if any(f.status in ("fail", "new") for f in findings):
        raise typer.Exit(REGRESSION_EXIT)


def register(kernels_app: typer.Typer) -> None:
    """Add `check` and `static` to the `vimbench kernels` sub-app."""
    kernels_app.command("check")(check)
    kernels_app.command("static")(static)


if __name__ == "__main__":  # also runnable alone: python -m vimbench.cli.kernels_checks static
    _app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)
    register(_app)
    _app()
