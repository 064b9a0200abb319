"""One self-contained HTML page: figures embedded as base64 PNG, the tables, and the environment of every run.

A tiny inline script records, after the page has loaded, how many images decoded and at what size, and how many
table rows exist, in the attributes of #render-check; a headless browser can dump the DOM and read them."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from vimbench.report.figures import Figure
from vimbench.report.tables import Table, to_html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #444; }
table { border-collapse: collapse; font-size: 0.8em; margin: 1em 0; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.env td:first-child { font-weight: bold; white-space: nowrap; } .small { font-size: 0.85em; color: #555; }
"""

_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  var check = document.getElementById("render-check");
  check.setAttribute("data-images", String(imgs.length));
  check.setAttribute("data-images-loaded", String(ok.length));
  check.setAttribute("data-sizes", imgs.map(function (i) {
    var box = i.getBoundingClientRect();
    return i.naturalWidth + "x" + i.naturalHeight + "@" + Math.round(box.width) + "x" + Math.round(box.height);
  }).join(" "));
  check.setAttribute("data-tables", String(document.querySelectorAll("table.results").length));
  check.setAttribute("data-table-rows", String(document.querySelectorAll("table.results tbody tr").length));
  check.setAttribute("data-status", "loaded");
});
"""


def _figure_html(fig: Figure, out_dir: Path) -> str:
    png = fig.files["png"]
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    links = " ".join(f'<a href="{html.escape(Path(p).relative_to(out_dir).as_posix())}">{ext.upper()}</a>'
                     for ext, p in fig.files.items())
    return (f'<figure id="figure-{html.escape(fig.name)}">'
            f'<img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">'
            f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)} "
            f'<span class="small">Files: {links}</span></figcaption></figure>')


def _value(v: Any) -> str:
    if isinstance(v, (dict, list)):
        import json

        return json.dumps(v, default=str)
    return "-" if v is None else str(v)


def _env_html(run: dict[str, Any]) -> str:
    env = run.get("env") or {}
    top = [(k, run.get(k)) for k in ("run_id", "created", "command", "source") if run.get(k) is not None]
    top += [(k, v) for k, v in run.items() if k not in ("kind", "env", "run_id", "created", "command", "source")]
    rows = "\n".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_value(v))}</td></tr>"
                     for k, v in [*top, *((f"env.{k}", v) for k, v in env.items())])
    return f'<table class="env"><caption>run {html.escape(str(run.get("run_id")))}</caption>{rows}</table>'


def write_index(out_dir: Path, title: str, intro: str, figures: Sequence[Figure], tables: Sequence[Table],
                runs: Sequence[dict[str, Any]]) -> Path:
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(intro)}</p>",
        '<div id="render-check" data-status="pending" hidden></div>',
        "<h2>Figures</h2>", *(_figure_html(f, out_dir) for f in figures),
        "<h2>Tables</h2>",
        '<p class="small">The same tables are in tables/ as Markdown, CSV and LaTeX.</p>',
        *(to_html(t) + (f'<p class="small">{html.escape(t.caption)}</p>' if t.caption else "") for t in tables),
        "<h2>Environment of every run</h2>", *(_env_html(r) for r in runs),
        f"<script>{_CHECK_SCRIPT}</script>", "</body></html>",
    ]
    path = out_dir / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
