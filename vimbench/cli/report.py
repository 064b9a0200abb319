"""`vimbench report`, `vimbench import-anchors` and `vimbench reproduce`: everything built from stored results.

Parse options, call vimbench.report, render through vimbench.render. No math here."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from vimbench.cli.common import user_errors

_RESULTS_HELP = "Results files (.jsonl) or folders of them."


@user_errors
def report(
    results: List[Path] = typer.Argument(..., help=_RESULTS_HELP, show_default=False),
    out: Optional[Path] = typer.Option(None, "-o", "--out",
                                       help="Output folder [default: reports/<first results file's name>]."),
    models: Optional[str] = typer.Option(None, "--models", help="Only these models, comma separated (vim_t,deit_t)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Only these precisions, comma separated (fp32,bf16)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Only these batch sizes, comma separated."),
    device: Optional[str] = typer.Option(None, "--device", help="Only these devices (cuda, cpu)."),
    group_by: str = typer.Option("dtype,batch", "--group-by",
                                 help="One resolution figure per value of these fields (comma separated: dtype, "
                                      "batch, device, gpu_name, model, implementation, attn), or 'none'."),
    batch_res: Optional[int] = typer.Option(None, "--batch-res",
                                            help="Resolution of the throughput-vs-batch figure [default: the one "
                                                 "with the most batch sizes]."),
    title: Optional[str] = typer.Option(None, "--title", help="Title of index.html."),
    show_table: bool = typer.Option(True, "--table/--no-table", help="Print the results table in the terminal."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out results files that cannot be read (each "
                                                            "named) and report the rest."),
) -> None:
    """Figures (PNG, SVG), tables (Markdown, CSV, LaTeX) and one self-contained index.html from stored results."""
    from vimbench import render
    from vimbench.report import build_report
    from vimbench.report.tables import pick_columns

    out = out or Path("reports") / results[0].stem
    groups = [] if group_by.strip().lower() in ("", "none") else [g.strip() for g in group_by.split(",") if g.strip()]
    result = build_report(results, out, models=models, dtypes=dtype, batches=batch, devices=device,
                          group_by=groups, batch_res=batch_res, title=title, skip_bad=skip_bad)
    for problem in result.skipped_files:
        render.warning(f"left out: {problem}")
    for mix in result.protocol_mixes:
        render.warning(f"mixed protocols: {mix}")
    if show_table:
        for t in result.tables:
            if t.name.startswith("results"):
                split = [c for c in ("forward p50 (ms)", "backward p50 (ms)") if c in t.columns]
                t = pick_columns(t, ["model", "implementation", "attn", "dtype", "batch", "res (px)", "gpu",
                                     "status", "p50 (ms)", *split, "throughput (img/s)", "peak alloc (MiB)"])
            render.table(t.title, t.columns, t.rows, caption=t.caption, digits=1)
    if result.repeats_dropped:
        render.note(f"{result.repeats_dropped} repeated measurements of the same case: the newest of each is used")
    render.note(f"wrote {len(result.files)} files ({len(result.figures)} figures, {len(result.tables)} tables) "
                f"under {result.out_dir}; open {result.index}")


@user_errors
def import_anchors(
    src: Path = typer.Argument(..., help="Anchors file (header line, then 'model', 'train', 'kernel', 'profile' "
                                         "rows).",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Results file to write (.jsonl).", show_default=False),
    force: bool = typer.Option(False, "--force", help="Replace the output file if it exists."),
) -> None:
    """Convert reference measurements (anchors) of the official Vim code and timm DeiT into a results file:
    inference ("model") rows and training-step ("train") rows."""
    from vimbench import render
    from vimbench.report import import_anchors as convert

    summary = convert(src, out, overwrite=force)
    skipped = ", ".join(f"{n} {k}" for k, n in summary.skipped_kinds.items())
    modes = ", ".join(f"{n} {mode}" for mode, n in summary.modes.items())
    render.note(f"wrote {summary.converted} case rows ({modes}) to {summary.destination}"
                + (f" (not converted: {skipped} rows)" if skipped else ""))


@user_errors
def reproduce(
    claims: str = typer.Argument(..., help="Claim set: vim-fig1, or the path of a claims .toml file.",
                                 show_default=False),
    results: Optional[List[Path]] = typer.Option(None, "--results", help=_RESULTS_HELP + " Repeat for several."),
    run: bool = typer.Option(False, "--run", help="Measure the claim set's suite now with the sweep engine (GPU)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for verdict.md and verdict.json."),
) -> None:
    """Check a paper's claims against measured results, with the differences between its protocol and ours.

    One verdict per claim, per Vim implementation and per DeiT attention backend."""
    from vimbench import render
    from vimbench.errors import VimbenchError
    from vimbench.report import reproduce as R
    from vimbench.settings import results_dir

    R.load_claim_set(claims)  # an unknown name fails before anything is measured
    if results and run:
        raise VimbenchError("pass either --results FILES (judge stored results) or --run (measure now), not both")
    if out is not None:
        from vimbench.results import check_output_dir

        check_output_dir(out, "--out folder")  # before anything is measured
    if not results:
        config, n_cases = R.claim_suite(claims)
        with render.progress_bar(n_cases, f"measuring {claims}") as update:
            results = R.run_claim_suite(claims, config, results_dir(), progress=update)
    rep = R.reproduce_from_results(claims, results)
    cs = rep.claim_set
    render.table(cs.title, R.VERDICT_COLUMNS, R.verdict_rows(rep),
                 caption=f"Reproduced: within {100 * cs.tolerance:.0f}% of the claim (ranges: inside). "
                         f"Results: {', '.join(rep.sources)}")
    render.table("Differences between the paper's protocol and ours", ["aspect", "paper", "ours"], rep.differences)
    for line in rep.skipped:
        render.note(f"not judged: {line}")
    if out is not None:
        files = R.write_outputs(rep, out)
        render.note("wrote " + ", ".join(str(f) for f in files))


def register(app) -> None:
    app.command("report")(report)
    app.command("import-anchors")(import_anchors)
    app.command("reproduce")(reproduce)
