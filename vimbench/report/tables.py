"""Tables built from prepared case rows, written as Markdown, CSV and LaTeX (and handed to render for the terminal).

A Table is plain data: column names carry their units; cells are str, int, float or None (missing).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from vimbench.bench.env import host_speed_moved
from vimbench.bench.memory import CARRY_OVER_MIB
from vimbench.formatting import format_cell
from vimbench.report import data as D


@dataclass
class Table:
    name: str                     # file stem
    title: str
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    digits: dict[str, int] | None = None   # decimals per column (default 1)

    def cell(self, col: int, value: Any) -> str:
        return format_cell(value, (self.digits or {}).get(self.columns[col], 1))

    def text_rows(self) -> list[list[str]]:
        return [[self.cell(i, v) for i, v in enumerate(r)] for r in self.rows]


def _none(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    try:
        import pandas as pd

        if v is pd.NA:
            return None
    except ImportError:  # pragma: no cover
        pass
    if hasattr(v, "item"):
        return v.item()
    return v


RESULT_COLUMNS = ["model", "implementation", "attn", "compile", "vim slice", "vim memory", "dtype", "batch",
                  "res (px)", "device", "gpu", "status", "tokens", "params", "p50 (ms)", "p20-p80 spread (%)",
                  "host submit p50 (ms)", "throughput (img/s)", "peak alloc (MiB)", "carried over (MiB)",
                  "peak RSS (MiB)", "host (us/op)", "run_id"]
# Training rows: the step split and the memory held before a step (weights, gradients, AdamW state).
TRAIN_COLUMNS = {"p50 (ms)": ["forward p50 (ms)", "backward p50 (ms)"], "peak alloc (MiB)": ["baseline alloc (MiB)"]}
_TRAIN_FIELDS = {"forward p50 (ms)": "forward_ms_p50", "backward p50 (ms)": "backward_ms_p50",
                 "baseline alloc (MiB)": "baseline_alloc_mib"}


def spread(row) -> float | None:
    """(p80 - p20) / p50 of the timed calls, in %: how much the measurement moved."""
    from vimbench.bench.timing import relative_spread

    value = relative_spread(*(_none(row.get(c)) for c in ("latency_ms_p20", "latency_ms_p50", "latency_ms_p80")))
    return None if value is None else 100.0 * value


def _suffix(mode: str) -> str:
    return "" if mode == "infer" else f"-{mode}"


def results_table(df, caption: str, mode: str = "infer") -> Table:
    """One row per case of one mode. Training tables add the forward/backward split and the baseline memory."""
    columns = list(RESULT_COLUMNS)
    if mode == "train":
        for after, added in TRAIN_COLUMNS.items():
            at = columns.index(after) + 1
            columns[at:at] = added
    rows = []
    for _, r in df.iterrows():
        # prepare() keeps torch.compile modes in `compile` and graph replays in the cuda_graphs flag
        execution = "cuda-graphs" if _none(r.get("cuda_graphs")) else _none(r.get("compile"))
        base = [_none(r["model"]), _none(r["implementation"]), _none(r["attn"]), execution,
                _none(r.get("vim_slice")), _none(r.get("vim_memory")),
                _none(r["dtype"]), _none(r["batch"]), _none(r["res"]), _none(r["device"]), _none(r["gpu"]),
                _none(r["status"]), _none(r["tokens"]), _none(r["params"]), _none(r["latency_ms_p50"]), spread(r),
                _none(r.get("host_ms_p50")), _none(r["fps"]), _none(r["peak_alloc_mib"]),
                _none(r.get("allocated_at_start_mib")), _none(r.get("cpu_peak_rss_mib")),
                _none(r.get("host_us_per_op")), _none(r["run_id"])]
        values = dict(zip(RESULT_COLUMNS, base))
        values.update({c: _none(r.get(f)) for c, f in _TRAIN_FIELDS.items()})
        rows.append([values[c] for c in columns])
    for row in rows:  # pandas turns integer columns with gaps into floats
        for i in (columns.index("tokens"), columns.index("params")):
            if isinstance(row[i], float):
                row[i] = int(row[i])
    # Columns no row fills (compile before that field existed, RSS on GPU runs) are left out; "carried over"
    # (memory still allocated by earlier cases of the process when the case began, in its peak) only when a row
    # carried some; the Vim options only when a row is not at their default; the host's speed only when it moved
    # between the rows (bench.env.host_speed_moved: host-bound rows are then not comparable across it).
    def shown(i: int, column: str) -> bool:
        if column == "carried over (MiB)":
            return any((row[i] or 0) > CARRY_OVER_MIB for row in rows)
        if column == "vim slice":
            return any(row[i] not in (None, 0) for row in rows)
        if column == "vim memory":
            return any(row[i] not in (None, "default") for row in rows)
        if column == "host (us/op)":
            return host_speed_moved([row[i] for row in rows])
        if column in ("compile", "peak RSS (MiB)", "p20-p80 spread (%)", "host submit p50 (ms)"):
            return any(row[i] is not None for row in rows)
        return True

    keep = [i for i, c in enumerate(columns) if shown(i, c)]
    title = "Measured cases" + (" (training steps)" if mode == "train" else "" if mode == "infer" else f" ({mode})")
    return Table("results" + _suffix(mode), title, [columns[i] for i in keep], [[row[i] for i in keep] for row in rows],
                 caption, digits={"p50 (ms)": 2, "host submit p50 (ms)": 2, "throughput (img/s)": 1,
                                  "peak alloc (MiB)": 1, "peak RSS (MiB)": 1, "carried over (MiB)": 1,
                                  "host (us/op)": 2,
                                  "p20-p80 spread (%)": 1, "forward p50 (ms)": 2, "backward p50 (ms)": 2,
                                  "baseline alloc (MiB)": 1})


RATIO_COLUMNS = ["vim", "deit", "dtype", "batch", "gpu", "res (px)", "speed-up (x)", "memory saved (%)",
                 "memory ratio (Vim/DeiT)", "note"]


def ratios_table(df, caption: str, mode: str = "infer") -> Table | None:
    """Vim against DeiT within one mode (the rows given should be of one mode; pairs never cross modes)."""
    rat = D.ratios(df)
    if not rat:
        return None
    show = D.pair_label_fields(df)
    rows = []
    for r in sorted(rat, key=lambda r: (str(r.vim["dtype"]), int(r.vim["batch"]), D.line_label(r.vim, show),
                                        D.line_label(r.deit, show), r.res)):
        rows.append([D.line_label(r.vim, show), D.line_label(r.deit, show), r.vim["dtype"], int(r.vim["batch"]),
                     r.vim["gpu_name"], r.res, r.speedup,
                     None if r.memory_saved is None else 100.0 * r.memory_saved, r.memory_ratio, r.note or None])
    title = "Vim against DeiT at the same resolution, precision and batch" + \
        (" (training steps)" if mode == "train" else "" if mode == "infer" else f" ({mode})")
    return Table("ratios" + _suffix(mode), title, RATIO_COLUMNS, rows, caption,
                 digits={"speed-up (x)": 2, "memory saved (%)": 1, "memory ratio (Vim/DeiT)": 3})


SUMMARY_COLUMNS = ["vim", "deit", "dtype", "batch", "gpu", "at (px)", "speed-up (x)", "memory saved (%)",
                   "memory ratio (Vim/DeiT)", "crossover (Vim overtakes DeiT)", "note"]


def summary_table(df, caption: str, mode: str = "infer") -> Table | None:
    """One row per Vim/DeiT pair: the ratios at the largest resolution both measured and the measured crossover
    (between which measured resolutions, or none in range)."""
    pairs = D.pair_summaries(df)
    if not pairs:
        return None
    show = D.pair_label_fields(df)
    rows = []
    for s in sorted(pairs, key=lambda s: (str(s.vim["dtype"]), -int(s.vim["batch"]), D.line_label(s.vim, show),
                                          D.line_label(s.deit, show))):
        rows.append([D.short_label(s.vim, show), D.short_label(s.deit, show), s.vim["dtype"], int(s.vim["batch"]),
                     s.vim["gpu_name"], s.res, s.speedup,
                     None if s.memory_saved is None else 100.0 * s.memory_saved,
                     None if s.memory_saved is None else 1.0 - s.memory_saved, s.crossover.text, s.note or None])
    title = "Vim against DeiT: ratios at the largest common resolution, and the crossover" + \
        (" (training steps)" if mode == "train" else "" if mode == "infer" else f" ({mode})")
    return Table("summary" + _suffix(mode), title, SUMMARY_COLUMNS, rows, caption,
                 digits={"speed-up (x)": 2, "memory saved (%)": 1, "memory ratio (Vim/DeiT)": 3})


def to_markdown(t: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    numeric = _numeric_columns(t)
    lines = [f"**{t.title}**", "", "| " + " | ".join(esc(c) for c in t.columns) + " |",
             "|" + "|".join("---:" if numeric[i] else "---" for i in range(len(t.columns))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in t.text_rows()]
    if t.caption:
        lines += ["", t.caption]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    """Raw values (no rounding, empty for missing) so the CSV can be parsed back exactly."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(t.columns)
    for row in t.rows:
        writer.writerow(["" if v is None or (isinstance(v, float) and v != v) else v for v in row])
    return buf.getvalue()


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def to_latex(t: Table) -> str:
    """A booktabs table (needs \\usepackage{booktabs} and, for long tables, longtable)."""
    numeric = _numeric_columns(t)
    spec = "".join("r" if n else "l" for n in numeric)
    out = [f"% {t.title}", f"\\begin{{longtable}}{{{spec}}}"]
    if t.caption:
        out.append(f"\\caption{{{latex_escape(t.caption)}}}\\\\")
    out += ["\\toprule", " & ".join(latex_escape(c) for c in t.columns) + r" \\", "\\midrule", "\\endhead"]
    out += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in t.text_rows()]
    out += ["\\bottomrule", "\\end{longtable}"]
    return "\n".join(out) + "\n"


def to_html(t: Table) -> str:
    import html

    numeric = _numeric_columns(t)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td class=\"{'num' if numeric[i] else 'txt'}\">{html.escape(c)}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in t.text_rows())
    cap = f"<caption>{html.escape(t.title)}</caption>"
    return (f'<table class="results" id="table-{t.name}">{cap}<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table>")


def write_table(t: Table, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for ext, fn in (("md", to_markdown), ("csv", to_csv), ("tex", to_latex)):
        path = out_dir / f"{t.name}.{ext}"
        path.write_text(fn(t), encoding="utf-8")
        files[ext] = path
    return files


def _numeric_columns(t: Table) -> list[bool]:
    return [any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in t.rows)
            for i in range(len(t.columns))]


def pick_columns(t: Table, names: Sequence[str]) -> Table:
    idx = [t.columns.index(n) for n in names]
    return Table(t.name, t.title, [t.columns[i] for i in idx], [[r[i] for i in idx] for r in t.rows], t.caption,
                 t.digits)
