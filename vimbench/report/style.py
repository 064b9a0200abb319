"""How each line looks, in every figure: one colour per implementation (Vim Triton is the same red in the
throughput, memory and ratio panels of every figure), a line style per family, a marker per model size.

Colours come from a fixed table for the implementations the project knows, and from a hash of the name for any
other (a timm peer), so a colour never depends on which other lines share the figure."""
from __future__ import annotations

import zlib
from typing import Any

from vimbench.report import data as D

# Vim in reds (ours strong, official lighter, the torch reference grey); DeiT in blues and greens.
COLOURS = {
    "vim:triton": "#c81d25",
    "vim:official": "#f08a6c",
    "vim:torch": "#8a8a8a",
    "deit:sdpa": "#1f5fa6",
    "deit:eager": "#3a9e4f",
    "deit:sdpa+compile": "#7b3294",
    "deit:eager+compile": "#b07cc6",
    "vim:triton+compile": "#8b0000",
}
EXTRA_COLOURS = ("#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#9467bd", "#2f4b7c", "#d4a017",
                 "#006d5b", "#a05195")
MARKERS = {"t": "o", "s": "s", "b": "^"}
# In ratio panels the colour is the Vim implementation's; the line style says which DeiT it is divided by.
BASELINE_STYLES = {"deit:sdpa": "-", "deit:eager": "--", "deit:sdpa+compile": "-.", "deit:eager+compile": ":"}


def colour(key: Any) -> str:
    ident = D.implementation_id(key)
    if ident in COLOURS:
        return COLOURS[ident]
    return EXTRA_COLOURS[zlib.crc32(ident.encode()) % len(EXTRA_COLOURS)]


def line_style(key: Any) -> dict[str, Any]:
    """matplotlib keyword arguments for one line of a throughput or memory panel."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    fam = D.family(get("model"))
    official = fam == "vim" and str(get("implementation")) == "official"
    style = {"color": colour(key), "marker": MARKERS.get(D.size(get("model")), "D"),
             "linestyle": {"vim": "-", "deit": "--"}.get(fam, "-."), "linewidth": 1.3 if official else 2.0,
             "markersize": 5 if official else 6}
    if D.is_reference(key):
        style["linestyle"] = ":"
    if official:
        style["alpha"] = 0.85
    return style


def baseline_style(deit_key: Any) -> str:
    return BASELINE_STYLES.get(D.implementation_id(deit_key), "-.")


def legend_label(key: Any, extra: str = "") -> str:
    """'Vim-Ti, Triton (ours)', 'DeiT-Ti, eager attention, compiled', plus whatever else varies (extra)."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    text = f"{D.pretty_model(get('model'))}, {D.implementation_label(key)}"
    return f"{text} {extra}".strip()
