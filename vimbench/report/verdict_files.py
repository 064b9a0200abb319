"""verdict.md and verdict.json for a judged claim set (report.verdicts), and judging stored results files.

verdict.md opens with a one-line summary, then the verdicts of the contenders, the reference backend's apart,
the measurements used, and the protocol differences (one readable item per line)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from vimbench.report import data as D
from vimbench.report.claims import load_claim_set
from vimbench.report.verdicts import (EXCEEDED, NOT_REPRODUCED, REPRODUCED, UNDETERMINED, Reproduction,
                                      judge)

VERDICT_COLUMNS = ["claim", "Vim implementation", "vs DeiT", "GPU", "claimed", "measured", "difference",
                   "verdict"]
_ORDER = (REPRODUCED, EXCEEDED, NOT_REPRODUCED, UNDETERMINED)


def verdict_rows(rep: Reproduction, reference: bool | None = None) -> list[list[Any]]:
    """Table rows; reference=False: contenders only, True: the reference backend only, None: all."""
    return [[v.claim_id, v.implementation, v.baseline, v.gpu, v.claimed, v.measured, v.difference, v.verdict]
            for v in rep.verdicts if reference is None or v.reference == reference]


def summary_line(rep: Reproduction) -> str:
    """'Of 12 verdicts (2 Vim implementations x 2 DeiT attentions x 3 claims): 4 reproduced, 3 exceeded, ...'"""
    contenders = [v for v in rep.verdicts if not v.reference]
    counts = rep.counts(reference=False)
    impls = sorted({v.implementation for v in contenders})
    bases = sorted({v.baseline for v in contenders})
    parts = ", ".join(f"{counts[k]} {k}" for k in _ORDER if counts.get(k))
    text = (f"{rep.claim_set.title}: of {len(contenders)} verdicts ({len(impls)} Vim implementation"
            f"{'s' if len(impls) != 1 else ''} x {len(bases)} DeiT baseline{'s' if len(bases) != 1 else ''} x "
            f"{len(rep.claim_set.claims)} claims), {parts or 'none'}")
    for best in rep.strongest:
        against = [v for v in contenders if v.strongest and v.gpu == best.gpu]
        got = ", ".join(f"{v.claim_id} ({v.implementation}) {v.verdict}" for v in against)
        text += (f"; against the strongest DeiT configuration found{_on(rep, best)} ({best.baseline}, "
                 f"{best.fps:,.0f} img/s at {best.res} px): {got or 'no verdict'}")
    ref = rep.counts(reference=True)
    if ref:
        text += "; the reference backend (not a contender): " + ", ".join(f"{ref[k]} {k}" for k in _ORDER
                                                                         if ref.get(k))
    return text + "."


def _on(rep: Reproduction, best) -> str:
    return f" on {best.gpu}" if len(rep.strongest) > 1 else ""


def _md_table(columns: Sequence[str], rows: list[list[Any]], align: str) -> list[str]:
    def esc(v: Any) -> str:
        return str(v).replace("|", "/")

    return ["| " + " | ".join(columns) + " |", align,
            *("| " + " | ".join(esc(c) for c in row) + " |" for row in rows)]


def to_markdown(rep: Reproduction) -> str:
    cs = rep.claim_set
    align = "|---|---|---|---|---:|---|---|---|"
    out = [f"# {cs.title}", "", f"**{summary_line(rep)}**", "", f"Source: {cs.source}.", "",
           f"Claim set `{cs.id}` ({cs.path.name}); conditions: {cs.conditions.dtype}, batch "
           f"{cs.conditions.batch}, {cs.subject.label} against {cs.baseline.label} "
           f"({', '.join(cs.baseline.attn)} attention judged separately).", "",
           f"Rule: a value claim is **reproduced** when the measured value is within {100 * cs.tolerance:.0f}% "
           "(relative) of the claim, **exceeded** when the measured gain is larger than that, **not reproduced** "
           "when smaller; a range claim is reproduced inside the range and exceeded below it (Vim overtakes "
           "sooner). **undetermined**: the ratio does not exist because the baseline ran out of memory.", "",
           "Runs used: " + ", ".join(f"`{s}`" for s in rep.sources), "", "## Claims", ""]
    out += [f"- **{c.id}**: {c.statement}" for c in cs.claims]
    out += ["", "## Verdicts", ""]
    rows = verdict_rows(rep, reference=False)
    ref_rows = verdict_rows(rep, reference=True)
    for row in rows + ref_rows:
        row[7] = f"**{row[7]}**"
    out += _md_table(VERDICT_COLUMNS, rows, align)
    for best in rep.strongest:
        strong = [r for r, v in zip(verdict_rows(rep), rep.verdicts)
                  if v.strongest and not v.reference and v.gpu == best.gpu]
        out += ["", f"## Against the strongest DeiT configuration found{_on(rep, best)}", "",
                f"The fastest {cs.baseline.label} in these results at {best.res} px is **{best.baseline}** "
                f"({best.fps:,.1f} img/s on {best.gpu}), compiled configurations included: the peer a user would "
                "pick. Its verdicts, from the table above:", ""]
        for row in strong:
            row[7] = f"**{row[7]}**"
        out += _md_table(VERDICT_COLUMNS, strong, align)
    if ref_rows:
        out += ["", "## Reference backend (pure-PyTorch Vim ops: a correctness reference, not a contender)", ""]
        out += _md_table(VERDICT_COLUMNS, ref_rows, align)
    out += ["", "## Measurements used", ""]

    def cell(value, status):
        return f"{value:,.1f}" if value is not None else (status or "-").upper()

    out += _md_table(["Vim implementation", "vs DeiT", "res (px)", "Vim img/s", "DeiT img/s", "Vim peak (MiB)",
                      "DeiT peak (MiB)"],
                     [[m["implementation"], m["baseline"], m["res"], cell(m["subject_fps"], m["subject_status"]),
                       cell(m["baseline_fps"], m["baseline_status"]),
                       cell(m["subject_peak_mib"], m["subject_status"]),
                       cell(m["baseline_peak_mib"], m["baseline_status"])] for m in rep.measurements],
                     "|---|---|---:|---:|---:|---:|---:|")
    out += ["", "## Differences between the paper's protocol and ours", ""]
    out += _md_table(["aspect", "paper", "ours"],
                     [[a, p, o.replace(" / ", "<br>")] for a, p, o in rep.differences], "|---|---|---|")
    if rep.skipped:
        out += ["", "## Not judged", ""] + [f"- {s}" for s in rep.skipped]
    return "\n".join(out) + "\n"


def write_outputs(rep: Reproduction, out: Path) -> list[Path]:
    """verdict.md and verdict.json under out (a folder)."""
    import json
    from dataclasses import asdict

    out.mkdir(parents=True, exist_ok=True)
    md = out / "verdict.md"
    md.write_text(to_markdown(rep), encoding="utf-8")
    js = out / "verdict.json"
    js.write_text(json.dumps({"claim_set": rep.claim_set.id, "summary": summary_line(rep), "sources": rep.sources,
                              "runs": rep.runs, "verdicts": [asdict(v) for v in rep.verdicts],
                              "differences": [{"aspect": a, "paper": p, "ours": o} for a, p, o in rep.differences],
                              "measurements": rep.measurements, "skipped": rep.skipped,
                              "strongest": [asdict(s) for s in rep.strongest]}, indent=1, default=str) + "\n",
                  encoding="utf-8")
    return [md, js]


def judge_results(name: str | Path, paths: Sequence[str | Path]) -> Reproduction:
    """Load results files (or folders) and judge the claim set on them."""
    from vimbench.report.build import run_headers
    from vimbench.results import load_results

    cs = load_claim_set(name)
    df = D.prepare(load_results(list(paths)))
    return judge(cs, df, run_headers(df))
