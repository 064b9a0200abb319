"""Results measured on more than one GPU model (a run folder of a cluster sweep, files from several machines):
the same case side by side on each GPU type.

A *case line* is a curve of the resolution figures without its GPU: model, implementation, attention, precision,
batch and the other key fields. The figure draws one panel per case line that was measured on at least two GPU
models, one curve per GPU model; the table lists img/s per GPU model and the ratio to the reference GPU model
(the one with the most measured cases; ties: the first by name).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vimbench.report import data as D
from vimbench.report.tables import Table, _none

CASE_FIELDS = tuple(f for f in D.LINE_FIELDS if f != "gpu_name")


def gpu_models(df) -> list[str]:
    """GPU models with measured rows (CPU rows do not count)."""
    gpu_rows = df[(df["device"].astype(str) == "cuda") & (df["status"] == "ok")]
    return sorted({str(g) for g in gpu_rows["gpu"].dropna()})


def with_gpu_grouping(df, group_by: list[str]) -> list[str]:
    """One resolution figure per GPU model when the results hold several (curves of different GPUs in one
    figure read as different implementations)."""
    if group_by and len(gpu_models(df)) > 1 and "gpu_name" not in group_by:
        return [*group_by, "gpu_name"]
    return list(group_by)


def _compared(df):
    """(reference GPU, GPU models, ok GPU rows of the case lines measured on at least two GPU models)."""
    gpus = gpu_models(df)
    if len(gpus) < 2:
        return None, gpus, None
    rows = df[(df["device"].astype(str) == "cuda") & (df["status"] == "ok") & df["fps"].notna()].copy()
    rows["_case"] = [tuple(None if D._missing(r[f]) else r[f] for f in CASE_FIELDS) for _, r in rows.iterrows()]
    per_case = rows.groupby("_case")["gpu"].nunique()
    rows = rows[rows["_case"].isin(set(per_case[per_case >= 2].index))]
    if rows.empty:
        return None, gpus, None
    counts = rows.groupby("gpu").size()
    reference = sorted(gpus, key=lambda g: (-int(counts.get(g, 0)), g))[0]
    return reference, gpus, rows


def cross_gpu_table(df, caption: str) -> Table | None:
    """img/s of each case on each GPU model, and the ratio to the reference GPU model; None with one GPU model."""
    reference, gpus, rows = _compared(df)
    if rows is None:
        return None
    others = [g for g in gpus if g != reference]
    columns = ["model", "implementation", "attn", "dtype", "batch", "res (px)",
               *[f"img/s {g}" for g in gpus], *[f"{g} / {reference}" for g in others]]
    out = []
    for (case, res), group in rows.groupby(["_case", "res"], sort=True):
        key = dict(zip(CASE_FIELDS, case))
        fps = {g: float(group.loc[group["gpu"] == g, "fps"].iloc[0]) for g in gpus if (group["gpu"] == g).any()}
        ratios = [fps[g] / fps[reference] if g in fps and reference in fps else None for g in others]
        out.append([_none(key["model"]), _none(key["implementation"]), _none(key["attn"]), _none(key["dtype"]),
                    _none(key["batch"]), int(res), *[fps.get(g) for g in gpus], *ratios])
    return Table("cross_gpu", "The same cases on each GPU model", columns, out,
                 caption + f" Ratio: img/s on that GPU / img/s on {reference} (>1: faster than {reference}).",
                 digits={c: 2 for c in columns if " / " in c})


def cross_gpu_figure(df, out_dir: Path, name: str = "cross_gpu_throughput_vs_res"):
    """Throughput against resolution, one panel per case line, one curve per GPU model; None with one GPU model."""
    from vimbench.report.figures import Figure, _pyplot, _save

    reference, gpus, rows = _compared(df)
    if rows is None:
        return None
    plt = _pyplot()
    cases = sorted(rows["_case"].unique(), key=str)
    ncols = min(3, len(cases))
    nrows = -(-len(cases) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows + 0.8), squeeze=False)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    show = [f for f in D.varying(rows, CASE_FIELDS)]
    for ax, case in zip(axes.flat, cases):
        key: dict[str, Any] = dict(zip(CASE_FIELDS, case))
        lines = rows[rows["_case"] == case]
        for i, gpu in enumerate(gpus):
            curve = lines[lines["gpu"] == gpu].sort_values("res")
            if curve.empty:
                continue
            ax.plot(curve["res"].astype(float), curve["fps"], marker="o", color=colors[i % len(colors)],
                    linestyle="-" if gpu == reference else "--", label=gpu)
        resolutions = sorted({int(r) for r in lines["res"]})
        ax.set(yscale="log", xlabel="resolution (px)", ylabel="throughput (img/s, log)",
               title=D.line_label(key, show) or "all", xticks=resolutions)
        ax.tick_params(axis="x", labelrotation=45 if len(resolutions) > 6 else 0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    prov = D.provenance(rows)
    title = f"The same cases on {len(gpus)} GPU models: throughput against resolution"
    caption = (D.provenance_text(prov) + f". Solid: {reference} (reference); dashed: the other GPU models. Each "
               "GPU measured alone (one case at a time per GPU).")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.text(0.01, 0.005, caption, fontsize=7, va="bottom", ha="left", color="#333", wrap=True)
    files = _save(fig, out_dir, name, title, caption, prov)
    plt.close(fig)
    return Figure(name, title, caption, prov, files)
