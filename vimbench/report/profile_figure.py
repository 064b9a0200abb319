"""The profile figure (rows of kind "profile", vimbench.bench.profile): where one forward's (mode "infer") or one
training step's (mode "train") time goes, per resolution, in milliseconds and as shares of the call, with the time
the GPU sat idle (host-bound launches) as its own part. One figure holds one mode: a training step never shares
bars with a forward. Categories no row uses are left out; the title names the mode and the GPU."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vimbench.analysis.trace import CATEGORIES
from vimbench.errors import VimbenchError

# Fixed colours, so a category looks the same in every profile figure.
CATEGORY_COLOURS = {"scan": "#c81d25", "gemm": "#1f5fa6", "conv": "#f28e2b", "norm": "#3a9e4f",
                    "attention": "#7b3294", "elementwise/copy": "#9c755f", "optimizer": "#17becf",
                    "other": "#8a8a8a"}
CALL = {"infer": "forward", "train": "training step"}   # what one profiled call is, per mode
IDLE_COLOUR = "#e6e6e6"


def idle_ms(row: dict[str, Any]) -> float:
    """Milliseconds of the (unprofiled, median) call in which no GPU kernel ran: latency - kernel time."""
    return max(0.0, float(row["latency_ms_p50"]) - float(row["profiled_ms"]))


def used_categories(rows: list[dict[str, Any]]) -> list[str]:
    return [c for c in CATEGORIES if any((r.get(f"ms_{c}") or 0.0) > 0 for r in rows)]


def row_mode(row: dict[str, Any]) -> str:
    """A profile row's mode (rows written before training profiles existed are forwards)."""
    return row.get("mode") or "infer"


def plot_shares(rows: list[dict[str, Any]], path: Path, gpu: str | None = None) -> Path:
    """Two panels against resolution: milliseconds per call (forward or training step) stacked by category plus
    the GPU's idle time, and the same as shares (%) of the call. Written as PNG at `path`. The rows must share one
    mode."""
    modes = sorted({row_mode(r) for r in rows})
    if len(modes) != 1:
        raise VimbenchError(f"profile rows of modes {' and '.join(modes) or 'none'} cannot share one figure; "
                            f"draw each mode's rows separately")
    call = CALL.get(modes[0], modes[0])
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["res"])
    cats = used_categories(rows)
    labels = [f"{r['res']} px" for r in rows]
    fig, (ax_ms, ax_pct) = plt.subplots(1, 2, figsize=(max(9.0, 2.2 * len(rows) + 6), 4.8))
    for ax, share in ((ax_ms, False), (ax_pct, True)):
        bottom = [0.0] * len(rows)
        for cat in [*cats, "idle"]:
            ms = [idle_ms(r) if cat == "idle" else float(r.get(f"ms_{cat}") or 0.0) for r in rows]
            values = [100.0 * m / float(r["latency_ms_p50"]) for m, r in zip(ms, rows)] if share else ms
            ax.bar(labels, values, bottom=bottom, color=IDLE_COLOUR if cat == "idle" else CATEGORY_COLOURS[cat],
                   hatch="//" if cat == "idle" else None, edgecolor="#999" if cat == "idle" else "none",
                   label="GPU idle (host-bound)" if cat == "idle" else cat, width=0.6)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xlabel("resolution")
        ax.grid(True, axis="y", alpha=0.3)
    for i, r in enumerate(rows):
        busy, total = float(r["profiled_ms"]), float(r["latency_ms_p50"])
        ax_ms.annotate(f"{total:.1f} ms\n(GPU busy {busy:.1f})", (i, total), textcoords="offset points",
                       xytext=(0, 3), ha="center", fontsize=8)
        ax_pct.annotate(f"idle {100 * idle_ms(r) / total:.0f}%", (i, 100.0), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)
    ax_ms.set(ylabel=f"milliseconds per {call} (median latency)", title=f"Time per {call}")
    ax_ms.set_ylim(0, max(float(r["latency_ms_p50"]) for r in rows) * 1.18)
    ax_pct.set(ylabel=f"share of the {call} (%)", title=f"Shares of the {call}", ylim=(0, 112))
    handles, names = ax_ms.get_legend_handles_labels()
    fig.legend(handles[::-1], names[::-1], loc="center right", fontsize=8, frameon=False)
    first = rows[0]
    on = gpu or first.get("gpu_name") or first["device"]
    impl = first["implementation"] + (f"/{first['attn']}" if first.get("attn") else "")
    fig.suptitle(f"Where a {call}'s time goes: {first['model']} {impl}, batch {first['batch']}, "
                 f"{first['dtype']}, on {on}", fontsize=11)
    fig.text(0.01, 0.01, f"Kernel time per category from one torch.profiler {call}; latency: median of unprofiled "
             f"timed {call}s;\nGPU idle = latency - kernel time (Python and launch overhead the GPU waits on)"
             + ("; a step: zero_grad, forward, cross-entropy, backward, AdamW." if modes[0] == "train" else "."),
             fontsize=7, color="#333")
    fig.tight_layout(rect=(0, 0.06, 0.84, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, facecolor="white")
    plt.close(fig)
    return path


def figure_from_results(results: Path, path: Path) -> Path:
    """The figure of a stored profile results file (the GPU named from its header; one run profiles one mode)."""
    lines = [json.loads(line) for line in Path(results).read_text(encoding="utf-8").splitlines() if line.strip()]
    header = lines[0] if lines and lines[0].get("kind") == "header" else {}
    rows = [r for r in lines if r.get("kind") == "profile" and r.get("status") == "ok"]
    return plot_shares(rows, path, gpu=(header.get("env") or {}).get("gpu_name"))
