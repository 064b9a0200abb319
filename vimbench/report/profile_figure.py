"""The profile figure: each kernel category's share of profiled time against resolution (rows of kind
"profile", vimbench.bench.profile)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vimbench.analysis.trace import CATEGORIES


def plot_shares(rows: list[dict[str, Any]], path: Path) -> Path:
    """Stacked bars of each category's share (%) of profiled time vs resolution, one bar per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["res"])
    labels = [str(r["res"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 2), 4.2))
    bottom = [0.0] * len(rows)
    colors = plt.get_cmap("tab10").colors
    for i, cat in enumerate(CATEGORIES):
        values = [r[f"pct_{cat}"] for r in rows]
        ax.bar(labels, values, bottom=bottom, label=cat, color=colors[i % len(colors)])
        bottom = [b + v for b, v in zip(bottom, values)]
    first = rows[0]
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("share of profiled kernel time (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{first['model']} {first['implementation']} b{first['batch']} {first['dtype']} "
                 f"{first['device']}", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
