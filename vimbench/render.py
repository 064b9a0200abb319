"""The only module that talks Rich: tables, progress bars and error lines for the CLI."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from rich.table import Table

from vimbench.formatting import format_cell



def _console(stderr: bool = False) -> Console:
    """Rich's width for output that is not a terminal (logs, CI, pipes) is 80 columns, which squeezes wide
    result tables into ellipses; there, use 160 unless COLUMNS says otherwise."""
    probe = Console(stderr=stderr)
    if probe.is_terminal or "COLUMNS" in os.environ:
        return probe
    return Console(stderr=stderr, width=160)


console = _console()
err_console = _console(stderr=True)


def error_line(message: str) -> None:
    """One red line on stderr: the CLI's whole output for a user error."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    """One yellow line on stderr: something the user should know about the output (not an error)."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def note(message: str, markup: bool = True) -> None:
    """One message on stdout; markup=False for text that may hold brackets (error messages, paths)."""
    console.print(message, highlight=False, soft_wrap=True, markup=markup)


def _fit(columns: list[str], cells: list[list[str]], width: int, keep: Sequence[str] | None,
         wrap: Sequence[str]) -> list[int]:
    """Indices of the columns to print so that each fits whole in `width` characters: the columns named in
    `keep` are never dropped, wrappable ones count at a third of their width (at least their header), and the
    others are dropped from the right (the least important) until the table fits."""
    def need(i: int) -> int:
        longest = max([len(columns[i].split()[0]) if columns[i] else 1] + [len(c[i]) for c in cells])
        if columns[i] in wrap:
            return max(len(max(columns[i].split() or [""], key=len)), 12)
        return max(longest, min(len(columns[i]), 12))

    shown = list(range(len(columns)))
    keep = set(keep or [])
    while sum(need(i) + 3 for i in shown) + 1 > width:
        droppable = [i for i in shown if columns[i] not in keep]
        if not droppable:
            return []          # even the key columns do not fit side by side: stack them
        shown.remove(droppable[-1])
    return shown


def _stacked(title: str, columns: Sequence[str], cells: list[list[str]], caption: str | None) -> None:
    """One block per row, one `column: value` line per cell: for terminals too narrow for the table."""
    console.print(f"[bold]{escape(title)}[/]", highlight=False)
    for c in cells:
        console.print(f"- {escape(columns[0])}: {escape(c[0])}", highlight=False, soft_wrap=False)
        for name, value in zip(columns[1:], c[1:]):
            console.print(f"    {escape(name)}: {escape(value)}", highlight=False)
    if caption:
        console.print(caption, highlight=False, markup=False)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None,
          digits: int = 1, keep: Sequence[str] | None = None, wrap: Sequence[str] = ()) -> None:
    """Print a table. Numeric columns are right-aligned; column names should carry units (p50 ms, img/s, MiB).

    No cell is ever cut to an ellipsis. With `keep`: when the table is wider than the terminal, the rightmost
    columns not in `keep` are left out (the caption says which), columns in `wrap` wrap their text, every other
    column keeps its width; when even those do not fit, each row is printed as a block of `column: value` lines.
    Without `keep`: numeric columns keep their width and text columns wrap."""
    rows = [list(r) for r in rows]
    cells = [[format_cell(v, digits, thousands=True) for v in r] for r in rows]
    if keep is None:  # nothing to drop: every text column may wrap (folding, never an ellipsis)
        wrap = [c for i, c in enumerate(columns)
                if not any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if i < len(r))]
    shown = _fit(list(columns), cells, console.width, keep, wrap)
    if not shown:
        _stacked(title, columns, cells, caption)
        return
    dropped = [columns[i] for i in range(len(columns)) if i not in shown]
    if dropped:
        note = f"Left out to fit {console.width} columns: {', '.join(dropped)} (a wider terminal shows them)."
        caption = f"{caption} {note}" if caption else note
    # titles, captions and cells hold paths and labels, never markup: "[/x]" in a path raised a MarkupError
    t = Table(title=escape(title), caption=escape(caption) if caption else caption, caption_justify="left",
              header_style="bold")
    for i in shown:
        name = columns[i]
        numeric = any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if i < len(r))
        longest = max([len(c[i]) for c in cells] + [1])
        if name in wrap:
            t.add_column(name, justify="left", overflow="fold")
        else:
            t.add_column(name, justify="right" if numeric else "left", no_wrap=True, min_width=longest)
    for c in cells:
        t.add_row(*(escape(c[i]) for i in shown))
    console.print(t)


def key_values(title: str, items: Iterable[tuple[str, Any]]) -> None:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("key", style="bold")
    t.add_column("value")
    for k, v in items:
        t.add_row(escape(str(k)), escape(format_cell(v, 3, thousands=True)))
    console.print(t)


@contextmanager
def progress_bar(total: int, description: str = "") -> Iterator[Callable[[str, int], None]]:
    """A Rich progress bar; yields update(label, completed) for the library's progress callback."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        # Rich draws no intermediate states when stderr is not a terminal (logs, CI): there, one line per step,
        # printed when the step starts (the sweep reports each step twice, starting and done: one line, not two).
        log_lines = not err_console.is_terminal
        last = [""]

        def update(label: str, completed: int) -> None:
            progress.update(task, description=label, completed=completed)
            if log_lines and completed < total and label != last[0]:
                last[0] = label
                err_console.print(f"[{completed + 1}/{total}] {label}", highlight=False, soft_wrap=True,
                                  markup=False)

        yield update


class _OnlyOverall(ProgressColumn):
    """A column drawn for the whole-job task only; the lane lines are text."""

    def __init__(self, column: ProgressColumn):
        super().__init__()
        self.column = column

    def render(self, task) -> Any:
        return self.column.render(task) if task.fields.get("overall") else Text("")


@contextmanager
def lanes_progress(total: int, lanes: Sequence[str], description: str = "all workers"
                   ) -> Iterator[Callable[[int, str, int], None]]:
    """One Rich view for parallel work: a bar for the whole job and one line per lane (worker) with what it is
    doing. Yields update(lane, text, completed): lane's line shows text, the whole bar moves to completed."""
    with Progress(TextColumn("{task.description}"), _OnlyOverall(BarColumn()), _OnlyOverall(MofNCompleteColumn()),
                  _OnlyOverall(TimeElapsedColumn()), console=err_console, transient=False) as progress:
        overall = progress.add_task(description, total=total, overall=True)
        width = max((len(lane) for lane in lanes), default=0)
        tasks = [progress.add_task(f"  {lane:<{width}}  starting", total=None, start=False) for lane in lanes]
        log_lines = not err_console.is_terminal

        def update(lane: int, text: str, completed: int) -> None:
            progress.update(tasks[lane], description=f"  {lanes[lane]:<{width}}  {text}")
            progress.update(overall, completed=completed)
            if log_lines:
                err_console.print(f"[{completed}/{total}] {lanes[lane]}: {text}", highlight=False, soft_wrap=True,
                                  markup=False)

        yield update
