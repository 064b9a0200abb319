"""`vimbench compare A B`: per-case A/B of two results files or run folders, for pull requests and CI."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from vimbench.cli.common import user_errors

SLOWER_EXIT = 1
FORMATS = ("table", "md", "csv")


@user_errors
def compare(
    a: Path = typer.Argument(..., help="A: the reference results file or run folder.", show_default=False),
    b: Path = typer.Argument(..., help="B: the results to judge against A (file or run folder).",
                             show_default=False),
    fmt: str = typer.Option("table", "--format", help="table (terminal), md (Markdown, for a pull request) or csv."),
    min_change: float = typer.Option(0.02, "--min-change",
                                     help="Smallest relative p50 change that can count as faster/slower, on top "
                                          "of the rows' p20..p80 bands (0.02 = 2 %)."),
    also_a: List[Path] = typer.Option([], "--also-a", help="More results for side A (repeatable)."),
    also_b: List[Path] = typer.Option([], "--also-b", help="More results for side B (repeatable)."),
) -> None:
    """Ratio of p50 latencies (B/A) per matching case with a noise-aware verdict (faster / slower / same), the
    memory ratio, a geometric-mean summary and the cases found on one side only. Exit 1 when any case is slower
    beyond the noise, 0 otherwise, 2 on bad input.

    Examples:

    ```
    vimbench compare results/history/triton-h200-2026-11-29-kernel-v1.jsonl results/triton-h200-2026-11-30.jsonl
    vimbench compare runs/main.jsonl runs/branch.jsonl --format md > ab.md
    ```
    """
    from vimbench import render
    from vimbench.errors import VimbenchError
    from vimbench.report.compare import COLUMNS_TEXT, compare_results, comparison_table
    from vimbench.report.tables import to_csv, to_markdown

    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise VimbenchError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}")
    result = compare_results([a, *also_a], [b, *also_b], min_change)
    table = comparison_table(result)
    if fmt == "md":
        typer.echo(to_markdown(table))
    elif fmt == "csv":
        typer.echo(to_csv(table), nl=False)
        typer.echo(result.summary(), err=True)
    else:
        render.table(table.title, table.columns, table.rows, caption=f"A: {a}; B: {b}. {COLUMNS_TEXT}",
                     digits=3)
        render.note(result.summary(), markup=False)
    if result.slower:
        raise typer.Exit(SLOWER_EXIT)


def register(app) -> None:
    app.command("compare")(compare)
