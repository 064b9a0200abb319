"""Figures built from prepared case rows (see report.data): throughput and peak memory against resolution with a
Vim-vs-DeiT ratio panel (after Figure 1 of the Vim paper), and throughput against batch size at one resolution.

Every figure is written as PNG and SVG, with its provenance (GPU, precision, batch, dates, run ids) in a caption
under the plot and in the file metadata (PNG text chunks; SVG <title>, <desc> and Dublin Core fields).
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimbench.report import data as D

MIB_PER_GIB = 1024.0
DPI = 80
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


def _style(i: int) -> dict[str, Any]:
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
              "#7f7f7f", "#bcbd22"]
    return {"color": colors[i % len(colors)]}


def _line_style(key: dict[str, Any]) -> dict[str, Any]:
    if D.family(key["model"]) == "deit":
        return {"linestyle": "--" if key.get("attn") == "eager" else ":", "marker": "s"}
    return {"linestyle": "-", "marker": "o"}


def _mark_oom(ax, xs: list[float], color: str) -> None:
    if xs:
        ax.scatter(xs, [0.97] * len(xs), marker="x", s=60, linewidths=2, color=color,
                   transform=ax.get_xaxis_transform(), clip_on=False, zorder=5)


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


def _caption(fig, text: str) -> None:
    import textwrap

    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(text, 170)), fontsize=7, va="bottom", ha="left", color="#333")


def _training(df) -> bool:
    """Whether the rows are training steps (a figure holds one mode: report.build splits by mode)."""
    return set(df["mode"].astype(str)) == {"train"}


def _group_title(group: dict[str, Any]) -> str:
    names = {"dtype": "", "batch": "batch ", "device": "", "gpu_name": "", "model": "", "implementation": "",
             "attn": "attn "}
    return ", ".join(f"{names.get(k, k + ' ')}{v}" for k, v in group.items()) if group else "all results"


def resolution_figure(df, out_dir: Path, name: str, group: dict[str, Any]) -> Figure:
    """Throughput (log) and peak allocated memory (GiB, log) against resolution, one curve per line, OOM marked,
    plus speed-up and memory saved of each Vim line against each DeiT line at the same conditions."""
    plt = _pyplot()
    prov = D.provenance(df)
    show = D.varying(df)
    rat = D.ratios(df)
    ncols = 2
    nrows = 2 if rat else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 4.6 * nrows + 0.6), squeeze=False)
    ax_fps, ax_mem = axes[0]
    resolutions = sorted({int(r) for r in df["res"].dropna()})
    any_oom = False
    for i, (key, rows) in enumerate(D.lines(df)):
        style = {**_style(i), **_line_style(key)}
        label = D.line_label(key, show)
        ok = rows[rows["status"] == "ok"]
        oom = [int(r) for r in rows.loc[rows["status"] == "oom", "res"]]
        any_oom |= bool(oom)
        ax_fps.plot(ok["res"].astype(float), ok["fps"], label=label, **style)
        ax_mem.plot(ok["res"].astype(float), ok["peak_alloc_mib"] / MIB_PER_GIB, label=label, **style)
        for ax in (ax_fps, ax_mem):
            _mark_oom(ax, oom, style["color"])
    train = _training(df)
    ax_fps.set(yscale="log", xlabel="resolution (px, square input)",
               ylabel="training throughput (img/s = batch / p50 step, log)" if train else
               "throughput (img/s, log scale)", title="Training throughput" if train else "Throughput")
    ax_mem.set(yscale="log", xlabel="resolution (px, square input)",
               ylabel="peak memory (GiB, torch allocator peak allocated, log)",
               title="Peak GPU memory over one training step" if train else "Peak GPU memory")
    for ax in (ax_fps, ax_mem):
        ax.set_xticks(resolutions)
        ax.tick_params(axis="x", labelrotation=45 if len(resolutions) > 6 else 0)
        ax.grid(True, which="both", alpha=0.3)
    ax_fps.legend(fontsize=7, loc="best")
    if rat:
        ax_speed, ax_saved = axes[1]
        pairs: dict[tuple, list[D.Ratio]] = {}
        for r in rat:
            pairs.setdefault((D.line_key(r.vim), D.line_key(r.deit)), []).append(r)
        pair_show = [f for f in show if f not in D.PAIR_FIELDS]
        for i, (_, items) in enumerate(pairs.items()):
            items.sort(key=lambda r: r.res)
            label = f"{D.line_label(items[0].vim, pair_show)} vs {D.line_label(items[0].deit, pair_show)}"
            if len(df["dtype"].unique()) > 1 or len(df["batch"].unique()) > 1:
                label += f" ({items[0].vim['dtype']}, b{items[0].vim['batch']})"
            style = {**_style(i), "marker": "o", "linestyle": "-" if items[0].deit.get("attn") != "eager" else "--"}
            xs = [r.res for r in items if r.speedup is not None]
            ax_speed.plot(xs, [r.speedup for r in items if r.speedup is not None], label=label, **style)
            xs_m = [r.res for r in items if r.memory_saved is not None]
            ax_saved.plot(xs_m, [100 * r.memory_saved for r in items if r.memory_saved is not None], label=label,
                          **style)
            oom = [r.res for r in items if r.note]
            any_oom |= bool(oom)
            for ax in (ax_speed, ax_saved):
                _mark_oom(ax, oom, style["color"])
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        ax_speed.axhline(1.0, color="k", linewidth=0.8)
        ax_speed.set(yscale="log", xlabel="resolution (px)", ylabel="speed-up (Vim img/s / DeiT img/s, log)",
                     title="Vim speed-up over DeiT (>1: Vim faster)")
        ax_saved.axhline(0.0, color="k", linewidth=0.8)
        ax_saved.set(xlabel="resolution (px)", ylabel="memory saved (%, 1 - Vim peak / DeiT peak)",
                     title="Vim memory saved vs DeiT (>0: Vim smaller)")
        ax_speed.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax_speed.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap across decades
        for ax in (ax_speed, ax_saved):
            ax.set_xticks(resolutions)
            ax.grid(True, which="both", alpha=0.3)
        ax_speed.legend(fontsize=7, loc="best")
    title = f"Throughput and peak memory against resolution: {_group_title(group)}"
    caption = D.provenance_text(prov) + (f". {OOM_NOTE}." if any_oom else ".") + \
        " Memory: torch.cuda.max_memory_allocated (GiB = 2^30 bytes)."
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    _caption(fig, caption)
    files = _save(fig, out_dir, name, title, caption, prov)
    plt.close(fig)
    return Figure(name, title, caption, prov, files)


def pick_batch_resolution(df) -> int | None:
    """The resolution with the most distinct batch sizes (the largest on ties); None when no resolution has two."""
    counts = df.groupby("res")["batch"].nunique()
    counts = counts[counts >= 2]
    if counts.empty:
        return None
    best = counts.max()
    return int(max(r for r, n in counts.items() if n == best))


def batch_figure(df, out_dir: Path, name: str, res: int) -> Figure | None:
    """Throughput against batch size at one resolution; one curve per model / implementation / attention /
    precision. None when the data has fewer than two batch sizes there."""
    at = df[df["res"] == res]
    if at["batch"].nunique() < 2:
        return None
    plt = _pyplot()
    prov = D.provenance(at)
    fields = [f for f in D.LINE_FIELDS if f != "batch"]
    show = D.varying(at, fields)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    i = 0
    any_oom = False
    for key, rows in at.groupby(fields, dropna=False, sort=True):
        key = dict(zip(fields, key))
        rows = rows.sort_values("batch")
        if rows["batch"].nunique() < 2:
            continue
        style = {**_style(i), **_line_style(key)}
        ok = rows[rows["status"] == "ok"]
        ax.plot(ok["batch"].astype(float), ok["fps"], label=D.line_label(key, show), **style)
        oom = [int(b) for b in rows.loc[rows["status"] == "oom", "batch"]]
        any_oom |= bool(oom)
        _mark_oom(ax, oom, style["color"])
        i += 1
    if i == 0:
        plt.close(fig)
        return None
    batches = sorted({int(b) for b in at["batch"]})
    ax.set(xscale="log", yscale="log", xlabel="batch size (log)",
           ylabel="training throughput (img/s = batch / p50 step, log)" if _training(at) else
           "throughput (img/s, log scale)", title=f"Throughput against batch size at {res} px")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    title = f"Throughput against batch size at {res} px"
    caption = D.provenance_text(prov) + (f". {OOM_NOTE.replace('resolution', 'batch')}." if any_oom else ".")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    _caption(fig, caption)
    files = _save(fig, out_dir, name, title, caption, prov)
    plt.close(fig)
    return Figure(name, title, caption, prov, files)
