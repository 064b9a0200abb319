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
    models: Optional[str] = typer.Option(None, "--models", "--model",
                                         help="Only these models, comma separated (vim_t,deit_t) [default: all]."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Only these precisions, comma separated (fp32,bf16) "
                                                              "[default: all]."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Only these batch sizes, comma separated "
                                                              "[default: all]."),
    device: Optional[str] = typer.Option(None, "--device", help="Only these devices (cuda, cpu) [default: all]."),
    group_by: str = typer.Option("dtype,batch", "--group-by",
                                 help="One resolution figure per value of these fields (comma separated: dtype, "
                                      "batch, device, gpu_name, model, implementation, attn), or 'none'."),
    batch_res: Optional[int] = typer.Option(None, "--batch-res",
                                            help="Resolution of the throughput-vs-batch figure [default: the one "
                                                 "with the most batch sizes]."),
    title: Optional[str] = typer.Option(None, "--title", help="Title of index.html [default: vimbench report]."),
    show_table: bool = typer.Option(True, "--table/--no-table", help="Print the Vim/DeiT summary in the terminal."),
    full: bool = typer.Option(False, "--full", help="Also print every measured case and every ratio (long)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave out results files that cannot be read (each "
                                                            "named) and report the rest."),
) -> None:
    """Figures (PNG, SVG), tables (Markdown, CSV, LaTeX) and one self-contained index.html from stored results.

    The terminal gets a short summary: each Vim/DeiT pair's ratios at the largest resolution both measured and
    the resolution where Vim overtakes (--full prints every case).

    Examples:

        vimbench report results/triton-h200-2026-11-30.jsonl results/foundation-h200-2026-11-29.jsonl -o out
        vimbench report results/ --models vim_t,deit_t --batch 64 --full
    """
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
        if full:
            for t in result.tables:
                if t.name.startswith("results"):
                    split = [c for c in ("forward p50 (ms)", "backward p50 (ms)") if c in t.columns]
                    wanted = ["model", "implementation", "attn", "compile", "dtype", "batch", "res (px)", "status",
                              "throughput (img/s)", "p50 (ms)", *split, "p20-p80 spread (%)", "peak alloc (MiB)",
                              "peak RSS (MiB)", "gpu"]
                    t = pick_columns(t, [c for c in wanted if c in t.columns])
                    render.table(t.title, t.columns, t.rows, caption=t.caption, digits=1,
                                 keep=["model", "implementation", "attn", "dtype", "batch", "res (px)", "status",
                                       "throughput (img/s)"])
                elif t.name.startswith("ratios"):
                    render.table(t.title, t.columns, t.rows, caption=t.caption, digits=2,
                                 keep=["vim", "deit", "dtype", "batch", "res (px)", "speed-up (x)",
                                       "memory saved (%)"], wrap=["note"])
        summaries = [t for t in result.tables if t.name.startswith("summary")]
        for t in summaries:
            _print_summary(t)
        if not summaries and not full:
            render.note("no Vim/DeiT pair measured under the same conditions; --full prints every case")
    if result.repeats_dropped:
        render.note(f"{result.repeats_dropped} repeated measurements of the same case: the newest of each is used")
    render.note(f"wrote {len(result.files)} files ({len(result.figures)} figures, {len(result.tables)} tables) "
                f"under {result.out_dir}; open {result.index}", markup=False)


def _print_summary(t) -> None:
    """The summary table, one small table per precision / batch / GPU, so it fits 80 columns."""
    from vimbench import render

    col = {c: i for i, c in enumerate(t.columns)}
    groups: dict[tuple, list] = {}
    for row in t.rows:
        groups.setdefault((row[col["dtype"]], row[col["batch"]], row[col["gpu"]]), []).append(row)
    for (dtype, batch, gpu), rows in groups.items():
        out = []
        for r in rows:
            speed, ratio = r[col["speed-up (x)"]], r[col["memory ratio (Vim/DeiT)"]]
            out.append([r[col["vim"]], r[col["deit"]], str(r[col["at (px)"]]),
                        "-" if speed is None else f"{speed:.2f}x", "-" if ratio is None else f"{ratio:.2f}x",
                        r[col["crossover (Vim overtakes DeiT)"]] + (f"; {r[col['note']]}" if r[col["note"]] else "")])
        render.table(f"Vim vs DeiT, {dtype}, batch {batch}, {gpu}",
                     ["Vim", "DeiT", "px", "speed", "memory", "Vim overtakes DeiT"], out,
                     keep=["Vim", "DeiT", "px", "speed", "memory"], wrap=["Vim overtakes DeiT"])
    render.note("speed: Vim img/s / DeiT img/s; memory: Vim peak / DeiT peak (below 1x: Vim needs less), at the "
                "largest resolution both measured (px). " + t.caption, markup=False)


@user_errors
def import_anchors(
    src: Path = typer.Argument(..., help="Anchors file (header line, then 'model', 'train', 'kernel', 'profile' "
                                         "rows).",
                               show_default=False),
    out: Path = typer.Option(..., "-o", "--out", help="Results file to write (.jsonl).", show_default=False),
    force: bool = typer.Option(False, "--force", help="Replace the output file if it exists."),
) -> None:
    """Convert reference measurements (anchors) of the official Vim code and timm DeiT into a results file:
    inference ("model") rows and training-step ("train") rows.

    Anchors files come from the project's reference-measurement box (one JSON line per measurement); the
    repository ships one converted copy, results/anchors-official-h200-2026-11-29.jsonl.

    Example:

        vimbench import-anchors anchors-h200-2026-12-01.jsonl -o results/anchors-official-h200-2026-12-01.jsonl
    """
    from vimbench import render
    from vimbench.report import import_anchors as convert

    summary = convert(src, out, overwrite=force)
    skipped = ", ".join(f"{n} {k}" for k, n in summary.skipped_kinds.items())
    modes = ", ".join(f"{n} {mode}" for mode, n in summary.modes.items())
    render.note(f"wrote {summary.converted} case rows ({modes}) to {summary.destination}"
                + (f" (not converted: {skipped} rows)" if skipped else ""), markup=False)


@user_errors
def reproduce(
    claims: str = typer.Argument(..., help="Claim set: vim-fig1, or the path of a claims .toml file.",
                                 show_default=False),
    results: Optional[List[Path]] = typer.Option(None, "--results", help=_RESULTS_HELP + " Repeat for several "
                                                 "[default: none: measure with --run].", show_default=False),
    run: bool = typer.Option(False, "--run", help="Measure the claim set's suite now with the sweep engine (GPU), "
                                                  "then judge that run."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Folder for verdict.md and verdict.json "
                                                                 "[default: print only]."),
) -> None:
    """Check a paper's claims against measured results, with the differences between its protocol and ours.

    One verdict per claim, per Vim implementation and per DeiT attention backend: reproduced, exceeded (a larger
    gain than claimed), not reproduced or undetermined.

    Examples:

        vimbench reproduce vim-fig1 --results results/ -o reports/vim-fig1
        vimbench reproduce vim-fig1 --run -o reports/vim-fig1-now        # on a GPU: sweep, then judge
    """
    from vimbench import render
    from vimbench.errors import VimbenchError
    from vimbench.report.claims import load_claim_set
    from vimbench.report.verdict_files import VERDICT_COLUMNS, judge_results, summary_line, verdict_rows, \
        write_outputs

    cs = load_claim_set(claims)  # an unknown name fails before anything is measured
    if results and run:
        raise VimbenchError("pass either --results FILES (judge stored results) or --run (measure now), not both")
    if out is not None:
        from vimbench.results import check_output_dir

        check_output_dir(out, "--out folder")  # before anything is measured
    if not results:
        results = [_measure_claim_suite(cs)]
    rep = judge_results(claims, results)
    render.note(summary_line(rep), markup=False)
    for reference, title in ((False, cs.title), (True, "Reference backend (pure-PyTorch Vim ops, not a contender)")):
        rows = verdict_rows(rep, reference=reference)
        if rows:
            render.table(title, VERDICT_COLUMNS, rows,
                         keep=["claim", "Vim implementation", "vs DeiT", "measured", "verdict"],
                         wrap=["measured", "difference", "claimed"])
    render.note(f"Reproduced: within {100 * cs.tolerance:.0f}% of the claim (ranges: inside); exceeded: a larger "
                f"gain. Runs used: {', '.join(rep.runs)} ({', '.join(rep.sources)})", markup=False)
    render.table("Differences between the paper's protocol and ours", ["aspect", "paper", "ours"], rep.differences,
                 keep=["aspect"], wrap=["paper", "ours"])
    for line in rep.skipped:
        render.note(f"not judged: {line}", markup=False)
    if out is not None:
        files = write_outputs(rep, out)
        render.note("wrote " + ", ".join(str(f) for f in files), markup=False)


def _measure_claim_suite(cs) -> Path:
    """`reproduce --run`: the claim set's suite through the sweep engine, into a new file of the runs folder."""
    import torch

    from vimbench import render
    from vimbench.bench.sweep import plan_sweep, resolve_config, run_sweep
    from vimbench.errors import VimbenchError
    from vimbench.results import new_run_id
    from vimbench.settings import results_dir

    if not cs.suite:
        raise VimbenchError(f"claim set {cs.id} names no suite to run; pass --results FILES")
    if not torch.cuda.is_available():
        raise VimbenchError(f"no CUDA GPU on this machine, so {cs.id} cannot be measured here; pass --results "
                            "FILES from a GPU run (e.g. results/anchors-official-h200-2026-11-29.jsonl)")
    config, _ = resolve_config(cs.suite, {}, cuda_available=True)
    run_id = new_run_id()
    path = Path(results_dir()) / f"{cs.id}-{run_id}.jsonl"
    with render.progress_bar(len(plan_sweep(config).cases), f"measuring {cs.id}") as update:
        run_sweep(config, out=path, progress=update, command=f"vimbench reproduce {cs.id} --run", run_id=run_id)
    return path


def register(app) -> None:
    app.command("report")(report)
    app.command("import-anchors")(import_anchors)
    app.command("reproduce")(reproduce)
