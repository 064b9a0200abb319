"""Published ImageNet-1k accuracy against measured throughput (the figure most backbone papers print).

Accuracy comes from published_accuracy.csv (shipped with the package; every row names its source: the Vim README
and paper, the DeiT paper). Throughput is ours: each model's measured img/s at 224 px and at the largest
resolution where two or more of the models were measured, in the precision and batch with the most models. The
Pareto front (no other point both faster and more accurate) is drawn through the points on it."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vimbench.report import data as D

ACCURACY_CSV = Path(__file__).with_name("published_accuracy.csv")


@dataclass(frozen=True)
class Published:
    model: str           # vim_t, deit_s, ...
    variant: str         # official, finetuned_fine_granularity
    top1: float          # ImageNet-1k top-1, %
    params_m: float
    source: str


def published_accuracy(path: Path = ACCURACY_CSV) -> list[Published]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Published(r["model"], r["variant"], float(r["imagenet1k_top1"]), float(r["params_m"]), r["source"])
                for r in csv.DictReader(fh)]


@dataclass(frozen=True)
class Point:
    key: dict[str, Any]   # the line key (model, implementation, ...)
    fps: float
    top1: float
    source: str


def pareto(points: list[Point]) -> list[Point]:
    """Points no other point beats in both throughput and accuracy, by throughput."""
    front = [p for p in points
             if not any(q.fps >= p.fps and q.top1 >= p.top1 and (q.fps > p.fps or q.top1 > p.top1) for q in points)]
    return sorted(front, key=lambda p: p.fps)


def accuracy_points(df, res: int) -> list[Point]:
    """One point per measured line at res (status ok) whose model has an official published accuracy."""
    acc = {p.model: p for p in published_accuracy() if p.variant == "official"}
    out = []
    for _, r in df[(df["res"] == res) & (df["status"] == "ok")].iterrows():
        pub = acc.get(str(r["model"]))
        if pub is None or D.is_reference(r) or r["fps"] != r["fps"]:
            continue
        out.append(Point({f: r[f] for f in D.LINE_FIELDS}, float(r["fps"]), pub.top1, pub.source))
    return out


def _pick_condition(df):
    """The precision and batch with the most models that have a published accuracy, at 224 px."""
    known = {p.model for p in published_accuracy()}
    at = df[(df["res"] == 224) & (df["status"] == "ok") & df["model"].isin(known)]
    if at.empty:
        return None
    counts = at.groupby(["dtype", "batch"])["model"].nunique()
    best = counts.max()
    if best < 2:
        return None
    dtype, batch = max((k for k, n in counts.items() if n == best), key=lambda k: (int(k[1]), str(k[0])))
    return dtype, int(batch)


def accuracy_figure(df, out_dir: Path, name: str):
    """None when fewer than two models with a published accuracy were measured at 224 px."""
    from vimbench.report.figures import Figure, _caption, _handle, _log_axis, _pyplot, _save
    from vimbench.report.style import line_style

    picked = _pick_condition(df)
    if picked is None:
        return None
    dtype, batch = picked
    rows = df[(df["dtype"] == dtype) & (df["batch"] == batch)]
    known = {p.model for p in published_accuracy()}
    with_acc = rows[rows["model"].isin(known) & (rows["status"] == "ok")]
    counts = with_acc.groupby("res")["model"].nunique()
    high = [int(r) for r, n in counts.items() if n >= 2 and int(r) > 224]
    panels = [224] + ([max(high)] if high else [])
    plt = _pyplot()
    prov = D.provenance(rows[rows["res"].isin(panels)])
    fig = plt.figure(figsize=(6.2 * len(panels) + 3.6, 5.8))
    gs = fig.add_gridspec(1, len(panels) + 1, width_ratios=[1] * len(panels) + [0.62], left=0.06, right=0.99,
                          bottom=0.22, top=0.88, wspace=0.22)
    handles: dict[str, Any] = {}
    for i, res in enumerate(panels):
        ax = fig.add_subplot(gs[0, i])
        points = accuracy_points(rows, res)
        labelled: list[Point] = []
        for p in sorted(points, key=lambda p: p.fps):
            style = line_style(p.key)
            ax.plot([p.fps], [p.top1], **{**style, "linestyle": "none", "markersize": 8})
            # A second point of the same accuracy close by gets its label below, not on top of the first.
            crowded = any(q.top1 == p.top1 and p.fps / q.fps < 1.6 for q in labelled)
            ax.annotate(D.pretty_model(p.key["model"]), (p.fps, p.top1), textcoords="offset points",
                        xytext=(6, -13 if crowded else -3), fontsize=8)
            labelled.append(p)
            family = "Vim" if D.family(p.key["model"]) == "vim" else "DeiT"
            label = f"{family}, {D.implementation_label(p.key)}"
            handles.setdefault(label, _handle({**style, "linestyle": "none", "marker": "o"}, label))
        front = pareto(points)
        if len(front) > 1:
            ax.step([p.fps for p in front], [p.top1 for p in front], where="post", color="#555", linewidth=1,
                    linestyle="--", zorder=0)
        ax.scatter([p.fps for p in front], [p.top1 for p in front], s=160, facecolors="none", edgecolors="#333",
                   linewidths=1.2, zorder=4)
        ax.set(xlabel="measured throughput (img/s, log)", title=f"{res} px")
        if i == 0:
            ax.set_ylabel("published ImageNet-1k top-1 (%)")
        _log_axis(ax, which="x")
        ax.margins(x=0.15, y=0.12)
        ax.grid(True, which="major", alpha=0.35)
    side = fig.add_subplot(gs[0, len(panels)])
    side.axis("off")
    pareto_handle = _handle({"color": "#555", "linestyle": "--", "marker": "o", "markerfacecolor": "none",
                             "markeredgecolor": "#333", "markersize": 10}, "Pareto front (circled)")
    side.legend(handles=[*handles.values(), pareto_handle], loc="upper left", fontsize=8, frameon=False)
    shown = {str(m) for m in rows["model"]}
    sources = sorted({f"{D.pretty_model(p.model)}: {p.source}" for p in published_accuracy()
                      if p.variant == "official" and p.model in shown})
    title = f"Published accuracy against measured throughput ({dtype}, batch {batch})"
    caption = (f"Accuracy: published ImageNet-1k top-1 of the released 224 px checkpoints ({'; '.join(sources)}); "
               f"the models here run with random weights, so only their speed is ours. Throughput: "
               + D.provenance_text(prov) + ". Pareto front: no other point both faster and more "
               "accurate. Reference backends left out.")
    fig.suptitle(title, fontsize=12)
    _caption(fig, caption)
    files = _save(fig, out_dir, name, title, caption, prov)
    plt.close(fig)
    return Figure(name, title, caption, prov, files)
