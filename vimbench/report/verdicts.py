"""Judging a claim set (report.claims) on prepared case rows (report.data.prepare): pure functions, no files.

Ratios and the crossover are report.data's (the same numbers the report's tables and figures show). Outcomes:
    reproduced      |measured - claimed| <= tolerance * |claimed| (ranges: inside)
    exceeded        the measured gain is larger than the claim beyond the tolerance (ranges: Vim overtakes at a
                    lower resolution than the range)
    not reproduced  the measured gain is smaller (ranges: later, or never)
    undetermined    the ratio does not exist because the baseline ran out of memory
Every subject implementation present (official, triton, torch, ...) is judged separately against every baseline
attention backend and compile mode; the reference backend (Vim on pure-PyTorch ops) is judged too, and reported
apart. The strongest DeiT configuration found (the highest img/s at the claims' required resolution, compiled ones
included) is named per GPU, and the verdicts against it are marked: the peer a user would actually pick.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from vimbench.errors import VimbenchError
from vimbench.report import data as D
from vimbench.report.claims import Claim, ClaimSet

REPRODUCED, EXCEEDED, NOT_REPRODUCED, UNDETERMINED = "reproduced", "exceeded", "not reproduced", "undetermined"
# The protocol facts vimbench derives from rows and run headers (a claim set's protocol aspects name them).
FACTS = ("gpu", "precision", "tf32", "attention", "timing", "memory", "warmup", "cudnn_benchmark", "software",
         "implementation")


@dataclass
class Verdict:
    claim_id: str
    statement: str
    implementation: str        # subject line label (official, triton, torch graphs, ...)
    baseline: str              # baseline attention (eager, sdpa)
    gpu: str
    claimed: str
    measured: str
    difference: str            # in the claim's own terms: "+79% faster", "+1.4 points", "645 px below the range"
    verdict: str
    measured_value: float | None = None
    rel_diff: float | None = None   # (measured - claimed) / claimed, value claims only
    reference: bool = False         # the subject is a reference backend (not an efficiency contender)
    strongest: bool = False         # the baseline is the strongest DeiT configuration found on this GPU


@dataclass
class Strongest:
    """The fastest DeiT configuration at the required resolution on one GPU, among the baselines judged."""
    baseline: str              # its label as in the verdicts ("sdpa", "sdpa compiled(max-autotune)", ...)
    gpu: str
    res: int
    fps: float


@dataclass
class Reproduction:
    claim_set: ClaimSet
    verdicts: list[Verdict]
    differences: list[tuple[str, str, str]]     # aspect, paper, ours
    measurements: list[dict[str, Any]]          # per (implementation, res): subject and baseline numbers
    skipped: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)   # the results files whose rows were judged
    runs: list[str] = field(default_factory=list)      # their run ids
    strongest: list[Strongest] = field(default_factory=list)  # per GPU

    def counts(self, reference: bool = False) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.verdicts:
            if v.reference == reference:
                out[v.verdict] = out.get(v.verdict, 0) + 1
        return out


# ------------------------------------------------------------------------------------------- one claim
def judge_value(claimed: float, measured: float | None, tolerance: float, baseline_oom: bool = False) -> str:
    """The outcome of a value claim (a gain: larger is better)."""
    if measured is None:
        return UNDETERMINED if baseline_oom else NOT_REPRODUCED
    rel = (measured - claimed) / abs(claimed)
    if abs(rel) <= tolerance:
        return REPRODUCED
    return EXCEEDED if rel > 0 else NOT_REPRODUCED


def judge_range(lo: float, hi: float, measured: float | None, faster_everywhere: bool = False) -> str:
    """The outcome of a crossover claim: inside the range, below it (exceeded: Vim overtakes sooner), above it
    or never (not reproduced)."""
    if measured is None:
        return EXCEEDED if faster_everywhere else NOT_REPRODUCED
    if lo <= measured <= hi:
        return REPRODUCED
    return EXCEEDED if measured < lo else NOT_REPRODUCED


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _status_note(v, d, subject_label: str, baseline_label: str) -> str:
    parts = []
    for label, row in ((subject_label, v), (baseline_label, d)):
        if row is None:
            parts.append(f"{label} not measured")
        elif row["status"] != "ok":
            parts.append(f"{label} {row['status'].upper() if row['status'] == 'oom' else row['status']}")
    return ", ".join(parts) or "not computable"


def judge_claim(cs: ClaimSet, claim: Claim, label: str, attn: str | None, gpu: str, sres: dict[int, Any],
                bres: dict[int, Any]) -> Verdict:
    """One claim for one subject line (sres: res -> row) against one baseline line (bres)."""
    common = dict(claim_id=claim.id, statement=claim.statement, implementation=label, baseline=attn or "-",
                  gpu=gpu)
    if claim.metric == "crossover_res":
        lo, hi = claim.range
        cross = D.find_crossover(sres, bres)
        everywhere = cross.value is None and cross.above is not None
        verdict = judge_range(lo, hi, cross.value, everywhere)
        if cross.value is None:
            diff = "-"
        elif cross.value < lo:
            diff = f"{lo - cross.value:.0f} px below the range"
        elif cross.value > hi:
            diff = f"{cross.value - hi:.0f} px above the range"
        else:
            diff = "inside"
        return Verdict(**common, claimed=f"between {lo:.0f} and {hi:.0f} px", measured=cross.text,
                       difference=diff, verdict=verdict, measured_value=cross.value)
    res = claim.res
    v, d = sres.get(res), bres.get(res)
    if claim.metric == "speedup":
        measured, shown = D.speedup(v, d), _x
    else:  # memory_saved
        measured, shown = D.memory_saved(v, d), _pct
    baseline_oom = d is not None and d["status"] == "oom"
    verdict = judge_value(claim.value, measured, cs.tolerance, baseline_oom)
    if measured is None:
        text = _status_note(v, d, cs.subject.label, cs.baseline.label) + f" at {res} px"
        return Verdict(**common, claimed=shown(claim.value), measured=text, difference="-", verdict=verdict)
    rel = (measured - claim.value) / abs(claim.value)
    if claim.metric == "speedup":
        diff = f"{100 * rel:+.0f}% {'faster' if rel >= 0 else 'slower'} than claimed"
    else:  # a percentage: its difference is in percentage points, never a percentage of a percentage
        diff = f"{100 * (measured - claim.value):+.1f} points"
    return Verdict(**common, claimed=shown(claim.value), measured=shown(measured), difference=diff,
                   verdict=verdict, measured_value=measured, rel_diff=rel)


# ------------------------------------------------------------------------------------------- protocol facts
def _subject_label(key: dict[str, Any]) -> str:
    label = str(key["implementation"])
    mode = D.compile_mode(key)
    if mode:
        label += " compiled" + ("" if mode == "default" else f"({mode})")
    if D.is_graphs(key):
        label += " graphs"
    if key.get("h2d"):
        label += " +h2d"
    return label


def facts(df, runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, set[str]]]:
    """What our runs recorded about each protocol aspect: fact -> value -> the runs (file stems) it came from."""
    out: dict[str, dict[str, set[str]]] = {k: {} for k in FACTS}

    def add(name: str, value: str, run: str) -> None:
        out[name].setdefault(value, set()).add(run)

    for _, r in df.iterrows():
        run = str(r.get("run_id") or "?")
        add("gpu", str(r["gpu"]), run)
        add("precision", f"{r['dtype']}" + (" (autocast)" if r["dtype"] in ("bf16", "fp16") else
                                            ", no autocast" if r["dtype"] == "fp32" else ""), run)
        if isinstance(r.get("timing_method"), str) and r["dtype"] in ("fp32", "tf32"):
            # vimbench sets these per case (bench/runner.py precision_flags); the header shows process defaults
            add("tf32", "TF32 off for matmul and cuDNN (fp32 mode, set per case)" if r["dtype"] == "fp32"
                else "TF32 on for matmul and cuDNN (tf32 mode)", run)
        if D.family(r["model"]) == "deit" and isinstance(r["attn"], str):
            add("attention", {"sdpa": "sdpa (fused, timm default)",
                              "eager": "eager (fused attention off)"}.get(r["attn"], r["attn"]), run)
        if D.family(r["model"]) == "vim":
            add("implementation", _subject_label(r), run)
        method = r.get("timing_method")
        if isinstance(method, str):
            w, n = r.get("warmup"), r.get("iters")
            add("timing", f"{method.replace('_', ' ')}, {int(w) if w == w and w is not None else '?'} warm-up, "
                          f"{int(n) if n == n and n is not None else '?'} timed calls, median", run)
        mem = r.get("memory_method")
        if isinstance(mem, str):
            add("memory", "peak allocated (torch.cuda.max_memory_allocated)" if "torch" in mem else mem, run)
    for header in runs:
        env = header.get("env") or {}
        run = str(header.get("run_id") or "?")
        if header.get("imported") or env.get("imported_from_anchors"):
            protocol = header.get("protocol") or env.get("protocol")
            if isinstance(protocol, dict):  # one text per mode; the claims are about inference
                protocol = protocol.get("infer")
            add("timing", f"imported reference measurements: {protocol}", run)
        if env.get("cudnn_benchmark") is not None:
            add("cudnn_benchmark", str(env.get("cudnn_benchmark")), run)
        sw = ", ".join(f"{k} {env[k]}" for k in ("torch", "timm", "triton") if env.get(k))
        if sw:
            add("software", sw, run)
        if env.get("vim_impl"):
            add("implementation", f"official = {env['vim_impl']}", run)
    return out


def fact_text(values: dict[str, set[str]], n_runs: int) -> str:
    """Each distinct value once, with the runs it came from when the runs differ. Items joined by ' / '."""
    if not values:
        return "not recorded"
    same_runs = len({frozenset(r) for r in values.values()}) == 1
    items = []
    for value in sorted(values):
        runs = values[value]
        items.append(value if same_runs or len(runs) >= n_runs else f"{value} ({', '.join(sorted(runs))})")
    return " / ".join(items)


# ------------------------------------------------------------------------------------------- a claim set
def _num(row, col: str) -> float | None:
    if row is None or row["status"] != "ok":
        return None
    v = row[col]
    return None if v is None or v != v else float(v)


def judge(cs: ClaimSet, df, runs: Sequence[dict[str, Any]] = ()) -> Reproduction:
    """Judge every claim of cs on prepared case rows. Raises VimbenchError, saying what is missing and how to
    get it, when the rows cannot support a verdict."""
    cond = cs.conditions
    dtype, batch, need = cond.dtype, cond.batch, cond.required_res
    sub_model, base_model = cs.subject.model, cs.baseline.model
    sub_name, base_name = cs.subject.label, cs.baseline.label
    hint = (f"measure it with `vimbench reproduce {cs.id} --run` on a GPU"
            + (f" (suite {cs.suite})" if cs.suite else "") + " or pass results that hold it")
    rows = df[(df["dtype"] == dtype) & (df["batch"] == batch) & (df["mode"] == "infer")]
    sub = rows[rows["model"] == sub_model]
    base = rows[rows["model"] == base_model]
    where = f"{dtype}, batch {batch}"
    if sub.empty:
        raise VimbenchError(f"the results have no {sub_name} ({sub_model}) rows at {where}; {hint}")
    attns = list(cs.baseline.attn or [None])
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
    used_sources: set[str] = set()
    used_runs: set[str] = set()
    strongest: dict[str, Strongest] = {}  # per GPU
    for skey, srows in D.lines(sub):
        label = _subject_label(skey)
        sres = D.by_res(srows)
        if need not in sres or not any(r < need for r in sres):
            skipped.append(f"{sub_name} {label} on {skey['gpu_name']}: needs rows at {need} px and at least one "
                           f"lower resolution, has {', '.join(str(r) for r in sorted(sres))}")
            continue
        for attn in attns:
            by_attn = base if attn is None else base[base["attn"] == attn]
            by_attn = by_attn[(by_attn["device"] == skey["device"]) & (by_attn["gpu_name"] == skey["gpu_name"])]
            # A compiled baseline (rows with a compile mode) is one more peer, judged on its own.
            modes = sorted({D.compile_mode(r) for _, r in by_attn.iterrows()}, key=lambda m: (m is not None, m or ""))
            for mode in modes or [None]:
                b = by_attn[[D.compile_mode(r) == mode for _, r in by_attn.iterrows()]]
                for flag in D.FLAG_FIELDS:  # graphs / h2d on both sides, when the baseline has it
                    same = b[b[flag] == bool(skey[flag])]
                    b = same if not same.empty else b
                base_label = (attn or "-") + ("" if mode is None else
                                              " compiled" + ("" if mode == "default" else f"({mode})"))
                bres = D.by_res(b)
                if need not in bres:
                    skipped.append(f"{sub_name} {label} vs {base_name}/{base_label} on {skey['gpu_name']}: "
                                   f"no {base_name} row at {need} px on that device")
                    continue
                fps = _num(bres[need], "fps")
                best = strongest.get(skey["gpu_name"])
                if fps is not None and (best is None or fps > best.fps):
                    strongest[skey["gpu_name"]] = Strongest(base_label, skey["gpu_name"], need, fps)
                for part in (srows, b):
                    used_sources.update(str(s) for s in part["source"].dropna())
                    used_runs.update(str(s) for s in part["run_id"].dropna())
                for res in sorted(set(sres) | set(bres)):
                    v, d = sres.get(res), bres.get(res)
                    measurements.append({
                        "implementation": label, "baseline": base_label, "gpu": skey["gpu_name"], "res": res,
                        "subject_fps": _num(v, "fps"), "baseline_fps": _num(d, "fps"),
                        "subject_peak_mib": _num(v, "memory_mib"), "baseline_peak_mib": _num(d, "memory_mib"),
                        "subject_status": None if v is None else v["status"],
                        "baseline_status": None if d is None else d["status"]})
                for claim in cs.claims:
                    verdict = judge_claim(cs, claim, label, base_label, skey["gpu_name"], sres, bres)
                    verdict.reference = D.is_reference(skey)
                    verdicts.append(verdict)
    for v in verdicts:
        best = strongest.get(v.gpu)
        v.strongest = best is not None and v.baseline == best.baseline
    if not verdicts:
        raise VimbenchError(f"no {sub_name} implementation has rows at {need} px and a lower resolution at {where} "
                            f"next to {base_name} on the same device ({'; '.join(skipped)}); {hint}")
    judged = rows[rows["model"].isin([sub_model, base_model]) & rows["source"].astype(str).isin(used_sources)]
    used_headers = [r for r in runs if str(r.get("run_id")) in used_runs]
    found = facts(judged, used_headers)
    n_runs = len(used_runs)
    differences = [(p.aspect, p.paper, fact_text(found.get(p.ours, {}), n_runs)) for p in cs.protocol]
    return Reproduction(cs, verdicts, differences, measurements, skipped, sorted(used_sources), sorted(used_runs),
                        [strongest[g] for g in sorted(strongest)])
