"""Paper claims against measured results: `vimbench reproduce <claim-set>`.

A claim set is a TOML file in vimbench/report/claims/ (see vim_fig1.toml): a subject model (Vim), a baseline
(DeiT, one verdict per attention backend), the conditions (precision, batch, resolutions), the claims and how the
paper measured. Three metrics are understood:
    speedup        subject img/s / baseline img/s at `res`                      (value claim)
    memory_saved   1 - subject peak allocated / baseline peak allocated at `res` (value claim, a fraction)
    crossover_res  lowest resolution from which the subject stays faster, interpolated (range claim)
A value claim is reproduced when |measured - claimed| <= tolerance * |claimed|; a range claim when the measured
value lies inside the range. Every subject implementation present (official, torch, triton, ...) is judged
separately against every baseline attention backend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vimbench.errors import VimbenchError
from vimbench.report import data as D

CLAIMS_DIR = Path(__file__).parent / "claims"
REPRODUCED, NOT_REPRODUCED, UNDETERMINED = "reproduced", "not reproduced", "undetermined"


# ----------------------------------------------------------------------------------------------- claim sets
@dataclass(frozen=True)
class ClaimSet:
    id: str
    title: str
    source: str
    suite: str | None
    tolerance: float
    subject: dict[str, Any]
    baseline: dict[str, Any]
    conditions: dict[str, Any]
    claims: list[dict[str, Any]]
    protocol: list[dict[str, Any]]
    path: Path


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise VimbenchError("reading claim files on Python 3.10 needs the tomli package: pip install tomli") \
                from None
    return tomllib


def available_claim_sets() -> list[str]:
    return sorted(p.stem.replace("_", "-") for p in CLAIMS_DIR.glob("*.toml"))


def load_claim_set(name: str | Path) -> ClaimSet:
    """A claim set by id (vim-fig1) or by path to a TOML file."""
    path = Path(name)
    if not (path.suffix == ".toml" and path.exists()):
        path = CLAIMS_DIR / f"{str(name).strip().lower().replace('-', '_')}.toml"
    if not path.exists():
        raise VimbenchError(f"unknown claim set {str(name)!r}; known: {', '.join(available_claim_sets())} "
                            "(or give the path of a claims .toml file)")
    tomllib = _toml()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise VimbenchError(f"{path}: not valid TOML ({exc})") from exc
    try:
        cs = ClaimSet(id=raw["id"], title=raw.get("title", raw["id"]), source=raw.get("source", ""),
                      suite=raw.get("suite"), tolerance=float(raw.get("tolerance", 0.15)), subject=raw["subject"],
                      baseline=raw["baseline"], conditions=raw["conditions"], claims=list(raw["claims"]),
                      protocol=list(raw.get("protocol", [])), path=path)
    except KeyError as exc:
        raise VimbenchError(f"{path}: the claim set lacks {exc.args[0]!r}") from None
    for c in cs.claims:
        if c.get("metric") not in METRICS:
            raise VimbenchError(f"{path}: claim {c.get('id')!r} has metric {c.get('metric')!r}; "
                                f"known: {', '.join(METRICS)}")
    return cs


# ----------------------------------------------------------------------------------------------- judging
@dataclass
class Crossover:
    value: float | None        # interpolated resolution, px; None when there is no crossover inside the data
    below: int | None          # last measured resolution where the subject is slower
    above: int | None          # first measured resolution from which it stays faster
    text: str


@dataclass
class Verdict:
    claim_id: str
    statement: str
    implementation: str        # subject line label (official, triton, torch graphs, ...)
    baseline: str              # baseline attention (eager, sdpa)
    gpu: str
    claimed: str
    measured: str
    rel_diff: float | None     # (measured - claimed) / claimed for value claims
    verdict: str
    measured_value: float | None = None


@dataclass
class Reproduction:
    claim_set: ClaimSet
    verdicts: list[Verdict]
    differences: list[tuple[str, str, str]]     # aspect, paper, ours
    measurements: list[dict[str, Any]]          # per (implementation, res): subject and baseline numbers
    skipped: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _faster(v, d) -> bool | None:
    """Whether the subject is faster at one resolution; an OOM loses. None when neither side ran."""
    v_ok, d_ok = v is not None and v["status"] == "ok", d is not None and d["status"] == "ok"
    if v_ok and d_ok:
        return float(v["fps"]) > float(d["fps"])
    if v_ok and d is not None and d["status"] == "oom":
        return True
    if d_ok and v is not None and v["status"] == "oom":
        return False
    return None


def find_crossover(subject: dict[int, Any], baseline: dict[int, Any]) -> Crossover:
    """The lowest resolution from which the subject stays faster than the baseline at every larger measured
    resolution, interpolated linearly in log(throughput ratio) between the two measured resolutions around it.

    subject / baseline: res -> row (with "status" and "fps")."""
    points = [(r, _faster(subject.get(r), baseline.get(r))) for r in sorted(set(subject) & set(baseline))]
    points = [(r, f) for r, f in points if f is not None]
    if not points:
        return Crossover(None, None, None, "no resolution where both ran")
    if not points[-1][1]:
        return Crossover(None, points[-1][0], None, f"none: slower at every resolution up to {points[-1][0]} px"
                         if not any(f for _, f in points) else
                         f"none: still slower at the largest resolution, {points[-1][0]} px")
    i = len(points) - 1
    while i > 0 and points[i - 1][1]:
        i -= 1
    if i == 0:
        return Crossover(None, None, points[0][0], f"below {points[0][0]} px: faster at every resolution measured")
    lo, hi = points[i - 1][0], points[i][0]
    v_lo, d_lo, v_hi, d_hi = subject[lo], baseline[lo], subject[hi], baseline[hi]
    if all(r["status"] == "ok" for r in (v_lo, d_lo, v_hi, d_hi)):
        l0 = math.log(float(v_lo["fps"]) / float(d_lo["fps"]))
        l1 = math.log(float(v_hi["fps"]) / float(d_hi["fps"]))
        x = lo + (hi - lo) * (-l0) / (l1 - l0) if l1 != l0 else (lo + hi) / 2
    else:
        x = (lo + hi) / 2  # an OOM on one side: no ratio to interpolate, take the middle
    return Crossover(x, lo, hi, f"between {lo} and {hi} px (interpolated {x:.0f} px)")


def _rel(measured: float, claimed: float) -> float:
    return (measured - claimed) / abs(claimed)


def _judge_value(claim: dict[str, Any], measured: float | None, tol: float, fmt_value, why_missing: str):
    claimed = float(claim["value"])
    if measured is None:
        return fmt_value(claimed), why_missing, None, UNDETERMINED if "OOM" in why_missing and "DeiT" in \
            why_missing else NOT_REPRODUCED
    rel = _rel(measured, claimed)
    return fmt_value(claimed), fmt_value(measured), rel, REPRODUCED if abs(rel) <= tol else NOT_REPRODUCED


def _status_note(v, d, subject_label: str, baseline_label: str) -> str:
    parts = []
    for label, row in ((subject_label, v), (baseline_label, d)):
        if row is None:
            parts.append(f"{label} not measured")
        elif row["status"] != "ok":
            parts.append(f"{label} {row['status'].upper() if row['status'] == 'oom' else row['status']}")
    return ", ".join(parts) or "not computable"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


METRICS = ("speedup", "memory_saved", "crossover_res")


def _subject_label(key: dict[str, Any]) -> str:
    label = str(key["implementation"])
    if key.get("compile") not in (None, "none"):
        label += f" {key['compile']}"
    if key.get("vim_slice"):
        label += f" slice{int(key['vim_slice'])}"
    for flag, text in D.FLAG_FIELDS.items():
        if key.get(flag):
            label += f" {text}"
    return label


def _by_res(rows) -> dict[int, Any]:
    return {int(r["res"]): r for _, r in rows.iterrows()}


def _fact(facts: dict[str, set[str]], name: str) -> str:
    values = sorted(v for v in facts.get(name, set()) if v)
    return "; ".join(values) if values else "not recorded"


def _facts(df, runs: Sequence[dict[str, Any]], cs: ClaimSet) -> dict[str, set[str]]:
    """What our runs recorded about each protocol aspect, as text."""
    facts: dict[str, set[str]] = {k: set() for k in ("gpu", "precision", "tf32", "attention", "timing", "memory",
                                                       "cudnn_benchmark", "software", "implementation", "warmup")}
    for _, r in df.iterrows():
        facts["gpu"].add(str(r["gpu"]))
        facts["precision"].add(f"{r['dtype']}" + (" (autocast)" if r["dtype"] in ("bf16", "fp16") else
                                                  ", no autocast" if r["dtype"] == "fp32" else ""))
        if isinstance(r.get("timing_method"), str) and r["dtype"] in ("fp32", "tf32"):
            # vimbench sets these per case (bench/runner.py precision_flags); the header shows process defaults
            facts["tf32"].add("TF32 off for matmul and cuDNN (fp32 mode, set per case)" if r["dtype"] == "fp32"
                              else "TF32 on for matmul and cuDNN (tf32 mode)")
        if D.family(r["model"]) == "deit" and isinstance(r["attn"], str):
            facts["attention"].add({"sdpa": "sdpa (fused, timm default)",
                                    "eager": "eager (fused attention off)"}.get(r["attn"], r["attn"]))
        if D.family(r["model"]) == "vim":
            facts["implementation"].add(_subject_label(r))
        method = r.get("timing_method")
        if isinstance(method, str):
            w, n = r.get("warmup"), r.get("iters")
            facts["timing"].add(f"{method}, {int(w) if w == w and w is not None else '?'} warm-up, "
                                f"{int(n) if n == n and n is not None else '?'} timed calls, median")
        mem = r.get("memory_method")
        if isinstance(mem, str):
            facts["memory"].add(f"{mem}: peak allocated (torch.cuda.max_memory_allocated)"
                                if "torch" in mem else mem)
    for run in runs:
        env = run.get("env") or {}
        if run.get("imported") or env.get("imported_from_anchors"):
            protocol = run.get("protocol") or env.get("protocol")
            if isinstance(protocol, dict):  # one text per mode; the claims are about inference
                protocol = protocol.get("infer")
            facts["timing"].add(f"imported anchors protocol: {protocol}")
        if env.get("cudnn_benchmark") is not None:
            facts["cudnn_benchmark"].add(str(env.get("cudnn_benchmark")))
        sw = ", ".join(f"{k} {env[k]}" for k in ("torch", "timm", "triton") if env.get(k))
        if sw:
            facts["software"].add(sw)
        if env.get("vim_impl"):
            facts["implementation"].add(f"official = {env['vim_impl']}")
    return facts


def reproduce(cs: ClaimSet, df, runs: Sequence[dict[str, Any]] = ()) -> Reproduction:
    """Judge every claim of cs on prepared case rows (report.data.prepare). Raises VimbenchError, saying what is
    missing and how to get it, when the rows cannot support a verdict."""
    cond = cs.conditions
    dtype, batch, need = str(cond["dtype"]), int(cond["batch"]), int(cond["required_res"])
    sub_model, base_model = cs.subject["model"], cs.baseline["model"]
    sub_name, base_name = cs.subject.get("label", sub_model), cs.baseline.get("label", base_model)
    hint = (f"measure it with `vimbench reproduce {cs.id} --run` on a GPU"
            + (f" (suite {cs.suite})" if cs.suite else "") + " or pass results that hold it")
    rows = df[(df["dtype"] == dtype) & (df["batch"] == batch) & (df["mode"] == "infer")]
    sub = rows[rows["model"] == sub_model]
    base = rows[rows["model"] == base_model]
    where = f"{dtype}, batch {batch}"
    if sub.empty:
        raise VimbenchError(f"the results have no {sub_name} ({sub_model}) rows at {where}; {hint}")
    attns = list(cs.baseline.get("attn") or [None])
    for attn in attns:
        b = base if attn is None else base[base["attn"] == attn]
        if b.empty:
            raise VimbenchError(f"the results have no {base_name} ({base_model}"
                                f"{'/' + attn if attn else ''}) rows at {where}; {hint}")
        if need not in set(int(r) for r in b["res"]):
            raise VimbenchError(f"the results have no {base_name}{'/' + attn if attn else ''} row at {need} px "
                                f"({where}); {hint}")

    verdicts: list[Verdict] = []
    measurements: list[dict[str, Any]] = []
    skipped: list[str] = []
    judged = 0
    for skey, srows in D.lines(sub):
        label = _subject_label(skey)
        sres = _by_res(srows)
        if need not in sres or not any(r < need for r in sres):
            skipped.append(f"{sub_name} {label} on {skey['gpu_name']}: needs rows at {need} px and at least one "
                           f"lower resolution, has {', '.join(str(r) for r in sorted(sres))}")
            continue
        for attn in attns:
            b = base if attn is None else base[base["attn"] == attn]
            b = b[(b["device"] == skey["device"]) & (b["gpu_name"] == skey["gpu_name"])]
            for flag in D.FLAG_FIELDS:  # h2d on both sides, when the baseline has it
                same = b[b[flag] == bool(skey[flag])]
                b = same if not same.empty else b
            # the same compile mode on both sides when the baseline has it, else the eager baseline
            same = b[b["compile"] == skey["compile"]]
            b = same if not same.empty else b[b["compile"] == "none"]
            bres = _by_res(b)
            if need not in bres:
                skipped.append(f"{sub_name} {label} vs {base_name}/{attn} on {skey['gpu_name']}: "
                               f"no {base_name} row at {need} px on that device")
                continue
            judged += 1
            for res in sorted(set(sres) | set(bres)):
                v, d = sres.get(res), bres.get(res)
                measurements.append({
                    "implementation": label, "baseline": attn or "-", "gpu": skey["gpu_name"], "res": res,
                    "subject_fps": _num(v, "fps"), "baseline_fps": _num(d, "fps"),
                    "subject_peak_mib": _num(v, "peak_alloc_mib"), "baseline_peak_mib": _num(d, "peak_alloc_mib"),
                    "subject_status": None if v is None else v["status"],
                    "baseline_status": None if d is None else d["status"]})
            for claim in cs.claims:
                verdicts.append(_judge(cs, claim, label, attn, skey["gpu_name"], sres, bres, sub_name, base_name))
    if judged == 0:
        raise VimbenchError(f"no {sub_name} implementation has rows at {need} px and a lower resolution at {where} "
                            f"next to {base_name} on the same device ({'; '.join(skipped)}); {hint}")
    facts = _facts(rows[rows["model"].isin([sub_model, base_model])], runs, cs)
    differences = [(p.get("aspect", "?"), p.get("paper", "?"), _fact(facts, p.get("ours", ""))) for p in cs.protocol]
    return Reproduction(cs, verdicts, differences, measurements, skipped,
                        sorted({str(s) for s in rows["source"].dropna()}))


def _num(row, col: str) -> float | None:
    if row is None or row["status"] != "ok":
        return None
    v = row[col]
    return None if v is None or v != v else float(v)


def _judge(cs: ClaimSet, claim: dict[str, Any], label: str, attn: str | None, gpu: str, sres, bres,
           sub_name: str, base_name: str) -> Verdict:
    metric = claim["metric"]
    base_label = attn or "-"
    common = dict(claim_id=claim["id"], statement=claim.get("statement", claim["id"]), implementation=label,
                  baseline=base_label, gpu=gpu)
    if metric == "crossover_res":
        lo, hi = (float(x) for x in claim["range"])
        cross = find_crossover(sres, bres)
        ok = cross.value is not None and lo <= cross.value <= hi
        return Verdict(**common, claimed=f"between {lo:.0f} and {hi:.0f} px", measured=cross.text, rel_diff=None,
                       verdict=REPRODUCED if ok else NOT_REPRODUCED, measured_value=cross.value)
    res = int(claim.get("res", cs.conditions["required_res"]))
    v, d = sres.get(res), bres.get(res)
    measured = None
    if metric == "speedup":
        vf, df_ = _num(v, "fps"), _num(d, "fps")
        measured = vf / df_ if vf and df_ else None
        shown = _x
    else:  # memory_saved
        vm, dm = _num(v, "peak_alloc_mib"), _num(d, "peak_alloc_mib")
        measured = 1.0 - vm / dm if vm is not None and dm else None
        shown = _pct
    why = _status_note(v, d, sub_name, base_name) + f" at {res} px"
    claimed, measured_text, rel, verdict = _judge_value(claim, measured, cs.tolerance, shown, why)
    return Verdict(**common, claimed=claimed, measured=measured_text, rel_diff=rel, verdict=verdict,
                   measured_value=measured)


# ----------------------------------------------------------------------------------------------- output
VERDICT_COLUMNS = ["claim", "Vim implementation", "vs DeiT attention", "GPU", "claimed", "measured",
                   "difference (%)", "verdict"]


def verdict_rows(rep: Reproduction) -> list[list[Any]]:
    return [[v.claim_id, v.implementation, v.baseline, v.gpu, v.claimed, v.measured,
             None if v.rel_diff is None else 100 * v.rel_diff, v.verdict] for v in rep.verdicts]


def to_markdown(rep: Reproduction) -> str:
    cs = rep.claim_set
    out = [f"# {cs.title}", "", f"Source: {cs.source}.", "",
           f"Claim set `{cs.id}` ({cs.path.name}); conditions: {cs.conditions['dtype']}, batch "
           f"{cs.conditions['batch']}, {cs.subject.get('label')} against {cs.baseline.get('label')} "
           f"({', '.join(cs.baseline.get('attn') or [])} attention judged separately).", "",
           f"Rule: a value claim is reproduced when the measured value is within {100 * cs.tolerance:.0f}% "
           "(relative) of the claim; a range claim when the measured value lies inside the range. "
           "'undetermined': the ratio does not exist because the baseline ran out of memory.", "",
           "Results: " + ", ".join(f"`{s}`" for s in rep.sources), "", "## Claims", ""]
    for c in cs.claims:
        out.append(f"- **{c['id']}**: {c.get('statement', '')}")
    out += ["", "## Verdicts", "", "| " + " | ".join(VERDICT_COLUMNS) + " |",
            "|---|---|---|---|---:|---|---:|---|"]
    for row in verdict_rows(rep):
        row[6] = "-" if row[6] is None else f"{row[6]:+.1f}"
        row[7] = f"**{row[7]}**"
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    out += ["", "## Measurements used", "",
            "| Vim implementation | vs DeiT | res (px) | Vim img/s | DeiT img/s | Vim peak alloc (MiB) | "
            "DeiT peak alloc (MiB) |", "|---|---|---:|---:|---:|---:|---:|"]
    for m in rep.measurements:
        def cell(value, status):
            return f"{value:,.1f}" if value is not None else (status or "-").upper()
        out.append(f"| {m['implementation']} | {m['baseline']} | {m['res']} | "
                   f"{cell(m['subject_fps'], m['subject_status'])} | {cell(m['baseline_fps'], m['baseline_status'])} | "
                   f"{cell(m['subject_peak_mib'], m['subject_status'])} | "
                   f"{cell(m['baseline_peak_mib'], m['baseline_status'])} |")
    out += ["", "## Differences between the paper's protocol and ours", "", "| aspect | paper | ours |",
            "|---|---|---|"]
    out += [f"| {a} | {p} | {o.replace('|', '/')} |" for a, p, o in rep.differences]
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
    js.write_text(json.dumps({"claim_set": rep.claim_set.id, "sources": rep.sources,
                              "verdicts": [asdict(v) for v in rep.verdicts],
                              "differences": [{"aspect": a, "paper": p, "ours": o} for a, p, o in rep.differences],
                              "measurements": rep.measurements, "skipped": rep.skipped}, indent=1, default=str) + "\n",
                  encoding="utf-8")
    return [md, js]


def reproduce_from_results(name: str | Path, paths: Sequence[str | Path]) -> Reproduction:
    from vimbench.report.build import run_headers
    from vimbench.results import load_results

    cs = load_claim_set(name)
    df = D.prepare(load_results(list(paths)))
    return reproduce(cs, df, run_headers(df))


def check_can_run(name: str | Path) -> None:
    """Raise, saying what to do instead, unless the claim set's suite can be measured here (suite named, GPU)."""
    cs = load_claim_set(name)
    if not cs.suite:
        raise VimbenchError(f"claim set {cs.id} names no suite to run; pass --results FILES")
    import torch

    if not torch.cuda.is_available():
        raise VimbenchError(f"no CUDA GPU on this machine, so {cs.id} cannot be measured here; pass --results "
                            "FILES from a GPU run (e.g. results/anchors-official-h200-2026-11-29.jsonl)")


def claim_suite(name: str | Path):
    """The sweep that measures the claim set (a SweepConfig) and its number of cases. Needs a GPU."""
    check_can_run(name)
    cs = load_claim_set(name)
    try:
        from vimbench.bench.sweep import plan_sweep, resolve_config
    except ImportError as exc:
        raise VimbenchError(f"the sweep engine is not available ({exc}); run `vimbench sweep --suite {cs.suite}` "
                            "and pass its results with --results") from None
    config, _ = resolve_config(cs.suite, {}, cuda_available=True)
    return config, len(plan_sweep(config).cases)


def run_claim_suite(name: str | Path, config, results_dir: str | Path, progress=None) -> list[Path]:
    """Measure the claim set's sweep (from claim_suite) into a new results file under results_dir."""
    from vimbench.bench.sweep import run_sweep
    from vimbench.results import new_run_id

    cs = load_claim_set(name)
    run_id = new_run_id()
    out = Path(results_dir) / f"{cs.id}-{run_id}.jsonl"
    run_sweep(config, out=out, progress=progress, command=f"vimbench reproduce {cs.id} --run", run_id=run_id)
    return [out]
