"""`vimbench report`: figures, tables and one HTML page, built only from stored results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vimbench.errors import VimbenchError
from vimbench.report import cross_gpu
from vimbench.report import data as D
from vimbench.report.figures import (Figure, batch_figure, headline_sizes, memory_label, pick_batch_resolution,
                                     resolution_figure)
from vimbench.report.tables import Table, ratios_table, results_table, summary_table, write_table

HEADLINE_MIN_RESOLUTIONS = 3     # a headline is a curve against resolution: fewer points are no curve


@dataclass
class ReportOutput:
    out_dir: Path
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    index: Path | None = None
    repeats_dropped: int = 0    # the same case measured more than once: only the newest row is shown
    skipped_files: list[str] = field(default_factory=list)    # unreadable files left out (skip_bad), with why
    protocol_mixes: list[str] = field(default_factory=list)   # files resumed with other settings, where


def _slug(value: Any) -> str:
    text = str(value).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-") or "none"


def _group_prefix(field_name: str) -> str:
    return {"batch": "b"}.get(field_name, "")


def _headline_order(item: tuple[dict[str, Any], Any]) -> tuple:
    """Groups with the most resolutions first (the paper's curve), then larger batches, then by precision."""
    group, rows = item
    batch = group.get("batch")
    return (-rows["res"].nunique(), -(int(batch) if batch is not None and batch == batch else 0),
            str(group.get("dtype", "")))


def _group_title(group: dict[str, Any]) -> str:
    from vimbench.report.figures import _group_title as title

    return title(group)


def run_headers(df) -> list[dict[str, Any]]:
    """The header of every results file the rows came from, with the file's path as "source"."""
    from vimbench.results import read_header

    runs = []
    for source in sorted({str(s) for s in df["source"].dropna()}):
        header = dict(read_header(Path(source)))
        header["source"] = source
        runs.append(header)
    return runs


def build_report(paths: Sequence[str | Path], out_dir: str | Path, models: Sequence[str] | str | None = None,
                 dtypes: Sequence[str] | str | None = None, batches: Sequence[str] | str | None = None,
                 devices: Sequence[str] | str | None = None, group_by: Sequence[str] = ("dtype", "batch"),
                 batch_res: int | None = None, title: str | None = None, skip_bad: bool = False) -> ReportOutput:
    """Write figures (PNG, SVG), tables (Markdown, CSV, LaTeX) and index.html under out_dir.

    skip_bad: leave out results files that cannot be read (listed in skipped_files) instead of failing."""
    from vimbench.results import LoadProblems, check_output_dir, load_results, protocol_changes

    bad = [g for g in group_by if g not in D.GROUP_CHOICES]
    if bad:
        raise VimbenchError(f"cannot group by {', '.join(bad)}; choose from {', '.join(D.GROUP_CHOICES)}")
    check_output_dir(out_dir, "report folder")
    problems = LoadProblems()
    df = D.prepare(load_results(list(paths), skip_bad=skip_bad, problems=problems), models=models, dtypes=dtypes,
                   batches=batches, devices=devices)
    group_by = cross_gpu.with_gpu_grouping(df, list(group_by))
    out = ReportOutput(Path(out_dir), skipped_files=problems.skipped)
    out.protocol_mixes = [line for source in sorted({str(s) for s in df["source"].dropna()})
                          for line in protocol_changes(Path(source))]
    fig_dir, tab_dir = out.out_dir / "figures", out.out_dir / "tables"

    if batch_res is not None and batch_res not in {int(r) for r in df["res"]}:
        raise VimbenchError(f"--batch-res {batch_res}: the results have no rows at that resolution")
    # One set of figures and tables per mode: an inference forward and a training step are never on one curve,
    # in one table or in one ratio. Inference keeps the plain names; other modes add "-<mode>".
    headlines, rest = [], []
    for mode in D.modes(df):
        rows_of_mode = df[df["mode"] == mode]
        tag = "" if mode == "infer" else f"-{mode}"
        extra = {} if mode == "infer" else {"mode": mode}
        groups = [({}, rows_of_mode)] if not group_by else [
            (dict(zip(group_by, key if isinstance(key, tuple) else (key,))), rows)
            for key, rows in rows_of_mode.groupby(list(group_by), dropna=False, sort=True)]
        groups.sort(key=_headline_order)
        for group, rows in groups:
            suffix = [f"{_group_prefix(k)}{_slug(v)}" for k, v in group.items()]
            rest.append(resolution_figure(rows, fig_dir, "-".join(["throughput_memory_vs_res" + tag, *suffix]),
                                          {**extra, **group}))
            if rows["res"].nunique() < HEADLINE_MIN_RESOLUTIONS:
                continue
            for sz in headline_sizes(rows):
                pair = rows[[D.size(m) == sz and D.family(m) in ("vim", "deit") for m in rows["model"]]]
                vim = next(m for m in sorted(pair["model"].unique()) if D.family(m) == "vim")
                deit = next(m for m in sorted(pair["model"].unique()) if D.family(m) == "deit")
                title = (f"{D.pretty_model(vim)} against {D.pretty_model(deit)}: throughput and peak memory "
                         f"against resolution ({_group_title({**extra, **group})})")
                headlines.append(resolution_figure(pair, fig_dir, "-".join(["headline" + tag, f"{vim}-vs-{deit}",
                                                                            *suffix]),
                                                   {**extra, **group}, headline=True, title=title))
        res = batch_res if batch_res is not None else pick_batch_resolution(rows_of_mode)
        if res is not None:
            fig = batch_figure(rows_of_mode, fig_dir, f"throughput_vs_batch{tag}-{res}px", res)
            if fig is not None:
                rest.append(fig)
        if mode == "infer":
            from vimbench.report.accuracy import accuracy_figure

            acc = accuracy_figure(rows_of_mode, fig_dir, "accuracy_vs_throughput")
            if acc is not None:
                rest.append(acc)

        prov_text = D.provenance_text(D.provenance(rows_of_mode))
        memory = f" Memory: {memory_label(rows_of_mode)}; MiB = 2^20 bytes." + D.MODE_NOTES.get(mode, "")
        ratio_words = (" Speed-up: Vim img/s / DeiT img/s; memory saved: 1 - Vim peak / DeiT peak (memory ratio: "
                       "Vim / DeiT).")
        st = summary_table(rows_of_mode, prov_text + "." + memory + ratio_words + " Crossover: between the two "
                           "measured resolutions where Vim starts to stay faster (interpolated in log ratio), or none "
                           "in the measured range.", mode)
        if st is not None:
            out.tables.append(st)
        out.tables.append(results_table(rows_of_mode, prov_text + "." + memory + " Spread: (p80 - p20) / p50 of "
                                        "the timed calls. Host submit (CUDA rows of newer files): p50 of the host's "
                                        "time from a call's start to its return, before the synchronize; near p50 "
                                        "(ms), the call was host-bound.", mode))
        rt = ratios_table(rows_of_mode, prov_text + "." + memory + ratio_words, mode)
        if rt is not None:
            out.tables.append(rt)
    out.figures.extend(headlines + rest)
    fig = cross_gpu.cross_gpu_figure(df, fig_dir)
    if fig is not None:
        out.figures.append(fig)
        out.tables.append(cross_gpu.cross_gpu_table(df, D.provenance_text(D.provenance(df)) + "."))
    for t in out.tables:
        out.files.extend(write_table(t, tab_dir).values())
    for f in out.figures:
        out.files.extend(f.files.values())

    from vimbench.report.html import write_index

    out.runs = run_headers(df)
    sources = ", ".join(Path(r["source"]).name for r in out.runs)
    out.repeats_dropped = int(df.attrs.get("repeats_dropped", 0))
    repeats = (f"; {out.repeats_dropped} repeated measurements of the same case were left out, the newest kept"
               if out.repeats_dropped else "")
    mixes = (" Mixed protocols: " + " ".join(out.protocol_mixes)) if out.protocol_mixes else ""
    out.index = write_index(out.out_dir, title or "vimbench report", f"Built by `vimbench report` from {sources} "
                            f"only ({len(df)} cases{repeats}); nothing was measured to make it.{mixes}", out.figures,
                            out.tables, out.runs)
    out.files.append(out.index)
    return out
