"""`vimbench compare A B`: an A/B of two sets of results (files or run folders), case by case.

Cases match on their key (vimbench.results.CaseKey fields: model, res, batch, dtype, implementation, attn, device,
mode, ...); when a side holds the same case more than once, its newest row is used. For each matching case:
    ratio = B p50 / A p50 (latency; < 1: B is faster), memory ratio = B peak / A peak,
and a verdict that respects the noise each row recorded. A row's spread is its p20..p80 latency band (the middle
60 % of its timed calls). B is "slower" only when its whole band lies above A's band (B p20 > A p80) and the
ratio exceeds 1 + min_change; "faster" mirrors it; anything else is "same". min_change (default 2 %) covers the
run-to-run drift (clocks, temperature) that one run's band cannot see. Rows without p20/p80 (imported anchors)
fall back to min_change alone. Cases whose status differs (ok on one side, oom/error on the other) are listed as
"status changed" and are not in the geometric means.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from vimbench.errors import VimbenchError
from vimbench.report.tables import Table
from vimbench.results import KEY_FIELDS, CaseKey, key_of_row

DEFAULT_MIN_CHANGE = 0.02
VERDICTS = ("faster", "slower", "same", "status changed")


@dataclass(frozen=True)
class Side:
    """One case's numbers on one side of the comparison."""
    status: str
    p20_ms: float | None
    p50_ms: float | None
    p80_ms: float | None
    peak_mib: float | None
    source: str
    host_us: float | None = None  # the host's speed when the case began (host_us_per_op; None before the field)

    @property
    def band(self) -> tuple[float, float] | None:
        if self.p20_ms is None or self.p80_ms is None:
            return None
        return self.p20_ms, self.p80_ms

    @property
    def spread(self) -> float | None:
        """(p80 - p20) / p50: the relative width of the row's middle band."""
        if self.band is None or not self.p50_ms:
            return None
        return (self.p80_ms - self.p20_ms) / self.p50_ms


@dataclass(frozen=True)
class CaseComparison:
    key: CaseKey
    a: Side
    b: Side
    verdict: str

    @property
    def ratio(self) -> float | None:
        """B p50 / A p50 (latency)."""
        if self.a.p50_ms and self.b.p50_ms and self.verdict != "status changed":
            return self.b.p50_ms / self.a.p50_ms
        return None

    @property
    def memory_ratio(self) -> float | None:
        if self.a.peak_mib and self.b.peak_mib and self.verdict != "status changed":
            return self.b.peak_mib / self.a.peak_mib
        return None

    @property
    def noise(self) -> float | None:
        """The larger relative band of the two rows (None if a row recorded none)."""
        spreads = [s for s in (self.a.spread, self.b.spread) if s is not None]
        return max(spreads) if spreads else None


@dataclass
class ABComparison:
    cases: list[CaseComparison]
    only_a: list[CaseKey] = field(default_factory=list)
    only_b: list[CaseKey] = field(default_factory=list)
    min_change: float = DEFAULT_MIN_CHANGE

    def count(self, verdict: str) -> int:
        return sum(c.verdict == verdict for c in self.cases)

    @property
    def slower(self) -> list[CaseComparison]:
        return [c for c in self.cases if c.verdict == "slower"]

    @property
    def latency_geomean(self) -> float | None:
        return _geomean([c.ratio for c in self.cases])

    @property
    def memory_geomean(self) -> float | None:
        return _geomean([c.memory_ratio for c in self.cases])

    def summary(self) -> str:
        """One line: the geometric mean of B/A latency, the verdict counts, memory and the unmatched cases."""
        g = self.latency_geomean
        n = sum(c.ratio is not None for c in self.cases)
        if g is None:
            head = f"{len(self.cases)} matching cases, none with a p50 on both sides"
        else:
            speed = f"B {1 / g:.2f}x faster" if g < 1 else f"B {g:.2f}x slower" if g > 1 else "equal"
            head = f"B/A p50 latency geometric mean {g:.3f} over {n} cases ({speed})"
        counts = ", ".join(f"{self.count(v)} {v}" for v in VERDICTS if self.count(v) or v != "status changed")
        m = self.memory_geomean
        memory = f"; peak memory B/A geometric mean {m:.3f}" if m is not None else ""
        return (f"{head}: {counts}{memory}; {len(self.only_a)} only in A, {len(self.only_b)} only in B "
                f"(noise: p20..p80 bands, min change {self.min_change:.0%}){self.host_note()}")

    def host_note(self) -> str:
        """A sentence when A's and B's rows were measured at host speeds more than HOST_DRIFT apart (medians of
        host_us_per_op): host-bound cases (eager, small sizes) then move with the host, not only with the code."""
        from vimbench.bench.env import host_speed_moved

        a = statistics.median(v) if (v := [c.a.host_us for c in self.cases if c.a.host_us]) else None
        b = statistics.median(v) if (v := [c.b.host_us for c in self.cases if c.b.host_us]) else None
        if a is None or b is None or not host_speed_moved([a, b]):
            return ""
        return (f". Host speed differs: a tiny CPU torch op took {a:.1f} us in A, {b:.1f} us in B (median "
                "host_us_per_op); host-bound cases reflect the host too")


def _geomean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def _side(row: dict[str, Any]) -> Side:
    peak = _num(row.get("peak_alloc_mib"))
    if peak is None:
        peak = _num(row.get("cpu_peak_rss_mib"))
    return Side(str(row.get("status")), _num(row.get("latency_ms_p20")), _num(row.get("latency_ms_p50")),
                _num(row.get("latency_ms_p80")), peak, str(row.get("source", "")), _num(row.get("host_us_per_op")))


def verdict(a: Side, b: Side, min_change: float = DEFAULT_MIN_CHANGE) -> str:
    """faster | slower | same | status changed (rule in the module docstring)."""
    if a.status != b.status or a.status != "ok":
        return "status changed" if a.status != b.status else "same"
    if not a.p50_ms or not b.p50_ms:
        return "same"
    ratio = b.p50_ms / a.p50_ms
    apart_up = a.band is None or b.band is None or b.band[0] > a.band[1]
    apart_down = a.band is None or b.band is None or b.band[1] < a.band[0]
    if ratio > 1 + min_change and apart_up:
        return "slower"
    if ratio < 1 - min_change and apart_down:
        return "faster"
    return "same"


def _newest_by_key(df) -> dict[CaseKey, dict[str, Any]]:
    """The last row of each case (files in the order given, rows in file order): a rerun replaces earlier ones."""
    out: dict[CaseKey, dict[str, Any]] = {}
    for row in df.to_dict("records"):
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        out[key_of_row(row)] = row
    return out


def compare_rows(a_rows: dict[CaseKey, dict[str, Any]], b_rows: dict[CaseKey, dict[str, Any]],
                 min_change: float = DEFAULT_MIN_CHANGE) -> ABComparison:
    if not (min_change >= 0 and math.isfinite(min_change)):  # nan would pass a plain < 0 and call all cases same
        raise VimbenchError(f"--min-change {min_change} must be a finite number >= 0, e.g. 0.02 for 2 %")
    cases = []
    for key, row in a_rows.items():
        if key in b_rows:
            a, b = _side(row), _side(b_rows[key])
            cases.append(CaseComparison(key, a, b, verdict(a, b, min_change)))
    return ABComparison(cases, [k for k in a_rows if k not in b_rows], [k for k in b_rows if k not in a_rows],
                        min_change)


def compare_results(a: Sequence[str | Path], b: Sequence[str | Path],
                    min_change: float = DEFAULT_MIN_CHANGE) -> ABComparison:
    """Compare the case rows of results files or folders `a` and `b` (each one path or several)."""
    from vimbench.results import load_results

    sides = []
    for name, paths in (("A", a), ("B", b)):
        df = load_results(list(paths))
        if df.empty:
            raise VimbenchError(f"{name} ({', '.join(str(p) for p in paths)}) holds no case rows to compare")
        for col in KEY_FIELDS:
            if col not in df.columns:
                df[col] = None
        sides.append(_newest_by_key(df))
    out = compare_rows(sides[0], sides[1], min_change)
    if not out.cases:
        raise VimbenchError("A and B have no case in common (same model, res, batch, dtype, implementation, attn, "
                            "device); nothing to compare")
    return out


COLUMNS = ["case", "A p50 (ms)", "B p50 (ms)", "B/A", "noise (%)", "verdict", "A peak (MiB)", "B peak (MiB)",
           "memory B/A"]
COLUMNS_TEXT = ("p50: median latency of the row's timed calls; B/A: B p50 / A p50 (below 1: B is faster); noise: the "
                "larger (p80 - p20) / p50 band of the two rows; peak: the row's torch allocator peak "
                "(peak_alloc_mib, CUDA rows), else its process's peak RSS (cpu_peak_rss_mib, CPU rows); "
                "MiB = 2^20 bytes.")


def comparison_table(result: ABComparison) -> Table:
    rows = []
    for c in result.cases:
        noise = None if c.noise is None else 100 * c.noise
        label = c.key.label() + ("" if c.verdict != "status changed" else f" ({c.a.status} -> {c.b.status})")
        rows.append([label, c.a.p50_ms, c.b.p50_ms, c.ratio, noise, c.verdict, c.a.peak_mib, c.b.peak_mib,
                     c.memory_ratio])
    for key in result.only_a:
        rows.append([key.label(), None, None, None, None, "only in A", None, None, None])
    for key in result.only_b:
        rows.append([key.label(), None, None, None, None, "only in B", None, None, None])
    return Table("compare", "vimbench compare: B vs A", COLUMNS, rows, caption=f"{result.summary()}. {COLUMNS_TEXT}",
                 digits={"A p50 (ms)": 3, "B p50 (ms)": 3, "B/A": 3, "memory B/A": 3})
