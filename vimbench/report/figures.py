"""Figures built from prepared case rows (see report.data): throughput and peak memory against resolution with
Vim/DeiT speed and memory ratio panels (after Figure 1 of the Vim paper; the headline variant leaves the
reference backends out), and throughput against batch size at one resolution. Colours, line styles and markers
come from report.style, so an implementation looks the same in every panel of every figure.

Every figure is written as PNG and SVG, with its provenance (GPU, precision, batch, dates, run ids) in a caption
under the plot and in the file metadata (PNG text chunks; SVG <title>, <desc> and Dublin Core fields).
"""
from __future__ import annotations

import html
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimbench.report import data as D
from vimbench.report.style import baseline_style, colour, legend_label, line_style

MIB_PER_GIB = 1024.0
DPI = 100
OOM_NOTE = "x at the top of an axis: out of memory (OOM) at that resolution"


@dataclass
class Figure:
    name: str            # file stem
    title: str
    caption: str         # provenance and how to read it
    provenance: dict[str, str]
    files: dict[str, Path] = field(default_factory=dict)   # "png" / "svg" -> path


def _pyplot():
    """pyplot on the Agg backend, chosen here rather than at import time so nothing global changes on import."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str, title: str, caption: str, prov: dict[str, str]) -> dict[str, Path]:
    import matplotlib

    from vimbench import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    description = f"{caption}"
    date = prov["dates"].split(",")[0] if prov["dates"] != "-" else None
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    _save_png(fig, png, {
        "Title": title, "Description": description, "Source": f"runs: {prov['runs']}",
        "Software": f"vimbench {__version__} (matplotlib {matplotlib.__version__})",
    })
    with matplotlib.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
        fig.savefig(svg, metadata={"Title": title, "Description": description, "Source": f"runs: {prov['runs']}",
                                   "Date": date, "Creator": f"vimbench {__version__}"})
    # Matplotlib writes <title> but keeps the description in RDF only; add a plain <desc> for viewers.
    text = svg.read_text(encoding="utf-8")
    title_end = text.find("</title>")
    if title_end >= 0:
        at = title_end + len("</title>")
        text = text[:at] + f"\n <desc>{html.escape(description)}</desc>" + text[at:]
        svg.write_text(text, encoding="utf-8")
    return {"png": png, "svg": svg}


def _save_png(fig, path: Path, metadata: dict[str, str]) -> None:
    """A palette PNG (a few times smaller than RGBA for line plots, so reports stay small) with text metadata."""
    import io

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    buf.seek(0)
    image = Image.open(buf).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    info = PngInfo()
    for key, value in metadata.items():
        info.add_itxt(key, value)
    image.save(path, format="PNG", pnginfo=info, optimize=True)



# ------------------------------------------------------------------------------------------- shared pieces
def _caption(fig, text: str, fontsize: float = 7.0) -> None:
    """The provenance line under the plot, wrapped to the figure's width (never cut at the right edge)."""
    width_in = fig.get_size_inches()[0]
    chars = max(40, int(width_in * 72 / (fontsize * 0.56)))   # ~0.56 em per character of the default sans
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text, chars)), fontsize=fontsize, va="bottom", ha="left",
             color="#333")


def _human(value: float, _pos=None) -> str:
    """Tick labels a reader can read: 0.5, 2, 20, 500, 2k, 10k."""
    if value <= 0:
        return ""
    if value >= 1000:
        k = value / 1000
        return f"{k:g}k"
    if value >= 1:
        return f"{value:g}"
    return f"{value:.3g}"


def _log_axis(ax, which: str = "y", suffix: str = "") -> None:
    """A log axis with labelled 1-2-5 ticks (1-only when the data spans many decades; 1, 1.5, 2, 3 .. 9 inside about
    one), no labelled minors; a range narrower than a factor of two (a ratio near 1x, say) gets evenly spaced round
    values instead (1, 1.05, 1.1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    ax.relim()
    ax.autoscale_view()
    lo, hi = ax.get_ylim() if which == "y" else ax.get_xlim()
    decades = (math.log10(hi) - math.log10(lo)) if lo > 0 and hi > lo else 1.0
    # Labelled ticks inside every range: 1-only over many decades, 1-2-5 over a few, every digit inside one.
    subs = (1.0,) if decades > 3.5 else (1.0, 2.0, 5.0) if decades > 1.2 else (1.0, 1.5, *(float(d) for d in range(2, 10)))
    if decades < math.log10(2.0):
        axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    else:
        axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, pos: _human(v) + suffix if _human(v) else ""))
    axis.set_minor_formatter(NullFormatter())


def _res_axis(ax, grid: list[int], label: str = "resolution (px, square input)") -> None:
    ax.set_xticks(grid)
    ax.set_xticklabels([str(r) for r in grid], rotation=45 if len(grid) > 5 else 0, fontsize=8)
    ax.set_xlabel(label)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def _runs(xs: list[float], grid: list) -> list[list[int]]:
    """Indices of xs grouped into runs of neighbouring grid points: a line is drawn only inside a run, so no
    line crosses a resolution (or batch) this curve was not measured at."""
    pos = {g: i for i, g in enumerate(grid)}
    runs: list[list[int]] = []
    for i, x in enumerate(xs):
        if runs and pos.get(x, -10) == pos.get(xs[runs[-1][-1]], -20) + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _draw(ax, xs: list, ys: list, style: dict[str, Any], grid: list, lo: list | None = None,
          hi: list | None = None) -> None:
    """Lines inside runs of measured neighbours, markers alone elsewhere, and the p20..p80 band (lo/hi)."""
    pts = [(x, y, None if lo is None else lo[i], None if hi is None else hi[i])
           for i, (x, y) in enumerate(zip(xs, ys)) if y is not None and y == y]
    if not pts:
        return
    pts.sort(key=lambda p: p[0])
    px = [p[0] for p in pts]
    for run in _runs(px, grid):
        rx, ry = [pts[i][0] for i in run], [pts[i][1] for i in run]
        line_style = dict(style) if len(run) > 1 else {**style, "linestyle": "none"}
        ax.plot(rx, ry, **line_style)
        rlo = [pts[i][2] for i in run]
        rhi = [pts[i][3] for i in run]
        if all(v is not None and v == v for v in rlo + rhi):
            if len(run) > 1:
                ax.fill_between(rx, rlo, rhi, color=style["color"], alpha=0.18, linewidth=0)
            else:
                # max(0, ...): a p50 taken from another source than p20/p80 (imported rows) may lie outside them
                ax.errorbar(rx, ry, yerr=[[max(0.0, ry[0] - rlo[0])], [max(0.0, rhi[0] - ry[0])]], color=style["color"],
                            capsize=3, linewidth=1, linestyle="none")


def _mark_oom(ax, xs: list[float], color: str) -> None:
    if xs:
        ax.scatter(xs, [0.97] * len(xs), marker="x", s=60, linewidths=2, color=color,
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=5)


def _legend_order(key: dict[str, Any]) -> tuple:
    """Vim before DeiT before other peers; ours, then official, then the reference; then by size."""
    fam = {"vim": 0, "deit": 1}.get(D.family(key["model"]), 2)
    impl = {"triton": 0, "official": 1, "torch": 3}.get(str(key["implementation"]), 2)
    attn = {"sdpa": 0, "eager": 1}.get(str(key.get("attn")), 2)
    return (fam, impl, attn, D.compile_mode(key) or "", {"t": 0, "s": 1, "b": 2}.get(D.size(key["model"]), 3),
            str(key["model"]), str(key))


def _handle(style: dict[str, Any], label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], label=label, **{k: v for k, v in style.items() if k != "alpha"})


def _memory_scale(df) -> tuple[float, str]:
    top = df["memory_mib"].max()
    return (MIB_PER_GIB, "GiB") if top == top and top >= MIB_PER_GIB else (1.0, "MiB")


def memory_label(df) -> str:
    """What the memory numbers are, in words, for axis labels and captions."""
    metrics = sorted({str(m) for m in df["memory_metric"].dropna()})
    if metrics == ["alloc"]:
        return "peak allocated by the torch allocator (torch.cuda.max_memory_allocated)"
    if metrics == ["rss"]:
        return "peak resident set (RSS) of the process, recorded on CPU (no allocator there)"
    return "GPU rows: peak allocated by the torch allocator; CPU rows: peak RSS of the process"


def _training(df) -> bool:
    """Whether the rows are training steps (a figure holds one mode: report.build splits by mode)."""
    return set(df["mode"].astype(str)) == {"train"}


def _group_title(group: dict[str, Any]) -> str:
    names = {"dtype": "", "batch": "batch ", "device": "", "gpu_name": "", "model": "", "implementation": "",
             "attn": "attn "}
    return ", ".join(f"{names.get(k, k + ' ')}{v}" for k, v in group.items()) if group else "all results"


# ------------------------------------------------------------------------------------------- resolution
def resolution_figure(df, out_dir: Path, name: str, group: dict[str, Any], headline: bool = False,
                      title: str | None = None) -> Figure:
    """Throughput and peak memory against resolution (log), the p20..p80 band of each line, OOM marked; when
    Vim and DeiT lines can be paired, their speed ratio and memory ratio (Vim / DeiT, log) against resolution,
    with the ratios at the largest resolution both measured and the crossover written beside the plots.

    headline: leave the reference backends out (the full report keeps them) and title it as the headline."""
    plt = _pyplot()
    if headline:
        df = df[[not D.is_reference(r) for _, r in df.iterrows()]]
    prov = D.provenance(df)
    show = [f for f in D.varying(df) if f not in ("model", "implementation", "attn", "compile")]
    summaries = D.pair_summaries(df)
    has_ratios = bool(summaries)
    grid = sorted({int(r) for r in df["res"].dropna()})
    scale, unit = _memory_scale(df)

    fig = plt.figure(figsize=(14, 8.8 if has_ratios else 5.0))
    gs = fig.add_gridspec(2 if has_ratios else 1, 3, width_ratios=[1, 1, 0.72], left=0.06, right=0.99,
                          bottom=0.15 if has_ratios else 0.27, top=0.90 if has_ratios else 0.84, wspace=0.3,
                          hspace=0.42)
    ax_fps, ax_mem = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    side = fig.add_subplot(gs[:, 2])
    side.axis("off")
    handles = []
    any_oom = any_band = False
    for key, rows in sorted(D.lines(df), key=lambda kr: _legend_order(kr[0])):
        style = line_style(key)
        extra = D.label_extra(key, show)
        handles.append(_handle(style, legend_label(key, extra)))
        ok = rows[rows["status"] == "ok"]
        xs = [int(r) for r in ok["res"]]
        band = ok["fps_p20"].notna().all() and len(ok) > 0
        any_band |= bool(band)
        _draw(ax_fps, xs, list(ok["fps"]), style, grid,
              list(ok["fps_p20"]) if band else None, list(ok["fps_p80"]) if band else None)
        _draw(ax_mem, xs, list(ok["memory_mib"] / scale), style, grid)
        oom = [int(r) for r in rows.loc[rows["status"] == "oom", "res"]]
        any_oom |= bool(oom)
        for ax in (ax_fps, ax_mem):
            _mark_oom(ax, oom, style["color"])
    train = _training(df)
    ax_fps.set(ylabel="training throughput (img/s = batch / p50 step, log)" if train else "throughput (img/s, log)",
               title="Training throughput (higher is better)" if train else "Throughput (higher is better)")
    mem_what = memory_label(df)
    short_mem = "peak RSS" if mem_what.startswith("peak resident") else "peak memory"
    ax_mem.set(ylabel=f"{short_mem} ({unit}, log)", title=f"{short_mem[0].upper()}{short_mem[1:]}"
               + (" over one training step" if train else "") + " (lower is better)")
    for ax in (ax_fps, ax_mem):
        _log_axis(ax)
        _res_axis(ax, grid)

    notes: list[str] = []
    if has_ratios:
        ax_speed, ax_ratio = fig.add_subplot(gs[1, 0]), fig.add_subplot(gs[1, 1])
        by_pair: dict[tuple, list[D.Ratio]] = {}
        for r in D.ratios(df):
            by_pair.setdefault((D.line_key(r.vim), D.line_key(r.deit)), []).append(r)
        for items in by_pair.values():
            items.sort(key=lambda r: r.res)
            vk, dk = items[0].vim, items[0].deit
            style = {**line_style(vk), "linestyle": baseline_style(dk)}
            _draw(ax_speed, [r.res for r in items], [r.speedup for r in items], style, grid)
            _draw(ax_ratio, [r.res for r in items], [r.memory_ratio for r in items], style, grid)
            # The value at the largest resolution, written next to its point.
            for ax, attr in ((ax_speed, "speedup"), (ax_ratio, "memory_ratio")):
                last = [r for r in items if getattr(r, attr) is not None]
                if last:
                    ax.annotate(f"{getattr(last[-1], attr):.3g}x", (last[-1].res, getattr(last[-1], attr)),
                                textcoords="offset points", xytext=(5, 0), fontsize=7, va="center",
                                color=style["color"])
            for ax in (ax_speed, ax_ratio):
                _mark_oom(ax, [r.res for r in items if r.note], style["color"])
        for s in summaries:
            if s.crossover.value is not None:
                ax_speed.plot([s.crossover.value], [1.0], marker="|", markersize=18, markeredgewidth=2.5,
                              color=colour(s.vim), linestyle="none")
        for ax in (ax_speed, ax_ratio):
            ax.axhline(1.0, color="k", linewidth=0.9)
            _log_axis(ax, suffix="x")
            _res_axis(ax, grid)
        ax_speed.set(ylabel="Vim img/s / DeiT img/s (log)", title="Speed ratio (above 1: Vim faster)")
        ax_ratio.set(ylabel=f"Vim {short_mem} / DeiT {short_mem} (log)",
                     title="Memory ratio (below 1: Vim needs less)")
        seen = {}
        for s in summaries:
            seen.setdefault(D.implementation_id(s.deit), s.deit)
        style_handles = [_handle({"color": "#444", "linestyle": baseline_style(k), "linewidth": 1.6},
                                 f"vs DeiT, {D.implementation_label(k)}") for k in seen.values()]
        summaries.sort(key=lambda s: (_legend_order(s.vim), _legend_order(s.deit)))
        for s in summaries:
            where = f"at {s.res} px" if s.res is not None else ""
            pair = f"{legend_label(s.vim)} vs {legend_label(s.deit)}"
            if D.label_extra(s.vim, show):
                pair += " (" + D.label_extra(s.vim, show) + ")"
            ratio = D.ratio_sentence(s.speedup, s.memory_saved)
            notes.append("\n".join([*textwrap.wrap(pair + ":", 46),
                                    *textwrap.wrap(f"{where}: {ratio}{'; ' + s.note if s.note else ''}", 46,
                                                   initial_indent="  ", subsequent_indent="    "),
                                    *textwrap.wrap(f"crossover: {s.crossover.text}", 46, initial_indent="  ",
                                                   subsequent_indent="    ")]))
    legend = side.legend(handles=handles, loc="upper left", fontsize=8, frameon=False,
                         title="lines (band: p20..p80 of the timed calls)" if any_band else "lines",
                         title_fontsize=8)
    legend._legend_box.align = "left"
    if has_ratios:
        side.add_artist(legend)
        ratio_legend = side.legend(handles=style_handles, loc="upper left", fontsize=8, frameon=False,
                                   bbox_to_anchor=(0, 0.66), title="ratio panels: Vim colour, divided by",
                                   title_fontsize=8)
        ratio_legend._legend_box.align = "left"
        if len(notes) > 4:   # more pairs than the space beside the plots holds: the table has them
            notes = notes[:3] + ["\n".join(textwrap.wrap(f"... and {len(notes) - 3} more pairs: see the summary "
                                                         "table (tables/summary.md)", 46))]
        side.text(0.0, 0.47, "At the largest resolution both measured:\n\n" + "\n".join(notes), fontsize=7.6,
                  va="top", ha="left", transform=side.transAxes, linespacing=1.25)
    title = title or (f"Headline: {_group_title(group)}" if headline else
                      f"Throughput and peak memory against resolution: {_group_title(group)}")
    caption = (D.provenance_text(prov) + (f". {OOM_NOTE}." if any_oom else ".") + f" Memory: {mem_what} "
               f"({unit} = 2^{30 if unit == 'GiB' else 20} bytes). Lines join neighbouring measured resolutions "
               "only; a lone marker is a resolution measured without its neighbours; | on the speed ratio's 1x "
               "line: the interpolated crossover." + (" Reference backends (Vim torch ops) are in the full report."
                                                      if headline else ""))
    fig.suptitle(title, fontsize=12)
    _caption(fig, caption)
    files = _save(fig, out_dir, name, title, caption, prov)
    plt.close(fig)
    return Figure(name, title, caption, prov, files)


def headline_sizes(df) -> list[str]:
    """Model sizes (t, s, b, ...) with a non-reference Vim line and a DeiT line: one headline figure each."""
    keep = df[[not D.is_reference(r) for _, r in df.iterrows()]]
    vim = {D.size(m) for m in keep.loc[keep["family"] == "vim", "model"]}
    deit = {D.size(m) for m in keep.loc[keep["family"] == "deit", "model"]}
    order = {"t": 0, "s": 1, "b": 2}
    return sorted(vim & deit, key=lambda s: (order.get(s, 9), s))


# ------------------------------------------------------------------------------------------- batch
def pick_batch_resolution(df) -> int | None:
    """The resolution with the most distinct batch sizes (the largest on ties); None when no resolution has two."""
    counts = df.groupby("res")["batch"].nunique()
    counts = counts[counts >= 2]
    if counts.empty:
        return None
    best = counts.max()
    return int(max(r for r, n in counts.items() if n == best))


def batch_figure(df, out_dir: Path, name: str, res: int) -> Figure | None:
    """Throughput against batch size at one resolution, one panel per precision; one curve per model /
    implementation / attention (a line measured at one batch size only is a lone marker). None when the data
    has fewer than two batch sizes there."""
    at = df[df["res"] == res]
    if at["batch"].nunique() < 2:
        return None
    plt = _pyplot()
    prov = D.provenance(at)
    dtypes = sorted({str(d) for d in at["dtype"]})
    fields = [f for f in D.LINE_FIELDS if f not in ("batch", "dtype")]
    show = [f for f in D.varying(at, fields) if f not in ("model", "implementation", "attn", "compile")]
    batches = sorted({int(b) for b in at["batch"]})
    fig = plt.figure(figsize=(5.4 * len(dtypes) + 3.8, 5.6))
    gs = fig.add_gridspec(1, len(dtypes) + 1, width_ratios=[1] * len(dtypes) + [0.7], left=0.07, right=0.99,
                          bottom=0.2, top=0.86, wspace=0.25)
    side = fig.add_subplot(gs[0, len(dtypes)])
    side.axis("off")
    handles: dict[str, Any] = {}
    any_oom = False
    for i, dtype in enumerate(dtypes):
        ax = fig.add_subplot(gs[0, i])
        rows_d = at[at["dtype"].astype(str) == dtype]
        groups = [(dict(zip(fields, k)), rows) for k, rows in rows_d.groupby(fields, dropna=False, sort=True)]
        for key, rows in sorted(groups, key=lambda kr: _legend_order(kr[0])):
            rows = rows.sort_values("batch")
            style = line_style(key)
            extra = D.label_extra({**key, "dtype": None}, show)
            ok = rows[rows["status"] == "ok"]
            band = ok["fps_p20"].notna().all() and len(ok) > 0
            _draw(ax, [int(b) for b in ok["batch"]], list(ok["fps"]), style, batches,
                  list(ok["fps_p20"]) if band else None, list(ok["fps_p80"]) if band else None)
            oom = [int(b) for b in rows.loc[rows["status"] == "oom", "batch"]]
            any_oom |= bool(oom)
            _mark_oom(ax, oom, style["color"])
            label = legend_label(key, extra)
            handles.setdefault(label, _handle(style, label))
        ax.set(xlabel="batch size (log)", title=dtype,
               ylabel=None if i else "training throughput (img/s = batch / p50 step, log)" if _training(at) else
               "throughput (img/s, log)")
        _log_axis(ax)
        ax.set_xscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", alpha=0.35)
    side.legend(handles=list(handles.values()), loc="upper left", fontsize=8, frameon=False,
                title="lines (band: p20..p80)", title_fontsize=8)
    title = f"Throughput against batch size at {res} px"
    fig.suptitle(title, fontsize=12)
    caption = D.provenance_text(prov) + (f". {OOM_NOTE.replace('resolution', 'batch')}." if any_oom else ".") + \
        " Lines join neighbouring measured batch sizes only; a lone marker is a batch size measured alone."
    _caption(fig, caption)
    files = _save(fig, out_dir, name, title, caption, prov)
    plt.close(fig)
    return Figure(name, title, caption, prov, files)
