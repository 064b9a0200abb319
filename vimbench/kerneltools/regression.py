"""Timed regression check of vimbench's Triton kernels against a committed per-GPU baseline.

Noise model: each case is timed `repeats` times (k independent triton.testing.do_bench medians, each over
~100 ms of calls, L2 flushed between calls). A case's time is the median of the k medians; its spread is
(max - min) / median of the k medians. A case regresses when
    new / baseline - 1 > threshold,
    threshold = max(5 %, 3 * max(spread_baseline, spread_new), 0.03 ms / baseline_ms)
and improves when new / baseline - 1 < -threshold. The 5 % floor covers run-to-run drift the k repeats of
one process cannot see (clocks, temperature); 3x the observed spread covers noisy cases; the 0.03 ms floor covers
kernels of ~0.1 ms and less, whose times move between processes by more than their repeats show: on 2026-11-30
the unchanged bf16 scan at L = 197 gave 0.112, 0.141 and 0.112 ms in three baselines (git history of
results/baselines/h200.json), each with a repeat spread of a few percent.

Confirmation: one slow measurement is not a regression. On 2026-12-01 (no code change since the baseline) the
check flagged conv1d_silu_bidir/bf16/b64_e384_l197 at 0.060 ms against 0.021 ms while every large case agreed
within 0.6 %: a one-off stall of a 20 us kernel. So every case the first pass flags is timed again,
`CONFIRM_ROUNDS` more do_bench medians, interleaved round-robin with the other flagged cases (a slow spell of the
GPU then hits all of them alike instead of one case's repeats). The case is a confirmed "regression" only when the
lower quartile of the re-measurements still exceeds the threshold (with 5 rounds: 4 of 5 are slower than the
threshold allows); otherwise it is "unstable": reported, but the exit code stays 0. The re-measured median is what
the table shows. `confirm_regressions` takes the timer as an argument, so it is tested on CPU.

`compare_timings` and `confirm_regressions` are pure (tested on CPU with synthetic timings); `run_suite` and
`SuiteTimer` need a CUDA GPU.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from vimbench.errors import VimbenchError

BASELINE_SCHEMA = "vimbench.kernel_baseline/1"
MIN_THRESHOLD = 0.05
SPREAD_FACTOR = 3.0
MIN_ABS_MS = 0.03
DEFAULT_REPEATS = 5
CONFIRM_ROUNDS = 5          # re-measurements of each flagged case
CONFIRM_QUANTILE = 0.25     # the quantile of the re-measurements that must still exceed the threshold


@dataclass(frozen=True)
class CaseTiming:
    """One case's k repeated medians (ms) and what the comparison uses from them."""
    name: str
    repeats_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.repeats_ms)

    @property
    def spread(self) -> float:
        """Relative spread of the repeats: (max - min) / median (0 for a single repeat)."""
        return (max(self.repeats_ms) - min(self.repeats_ms)) / self.median_ms

    def to_json(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "spread": self.spread, "repeats_ms": list(self.repeats_ms)}


@dataclass(frozen=True)
class Comparison:
    case: str
    status: str                    # ok | regression | unstable | improvement | new | missing
    baseline_ms: float | None
    current_ms: float | None       # the re-measured median for a case that was re-measured
    threshold: float | None        # relative, e.g. 0.05
    first_ms: float | None = None  # the first pass's time of a re-measured case (the one that was flagged)
    remeasured_ms: tuple[float, ...] = ()

    @property
    def change(self) -> float | None:
        """current / baseline - 1 (positive = slower)."""
        if self.baseline_ms is None or self.current_ms is None:
            return None
        return self.current_ms / self.baseline_ms - 1


def noise_threshold(baseline_spread: float, current_spread: float, floor: float = MIN_THRESHOLD,
                    factor: float = SPREAD_FACTOR, baseline_ms: float | None = None,
                    abs_floor_ms: float = MIN_ABS_MS) -> float:
    """The relative change a case must exceed to count (module docstring)."""
    relative = max(floor, factor * max(baseline_spread, current_spread))
    return relative if baseline_ms is None else max(relative, abs_floor_ms / baseline_ms)


def compare_timings(baseline: dict[str, CaseTiming], current: dict[str, CaseTiming],
                    floor: float = MIN_THRESHOLD, factor: float = SPREAD_FACTOR) -> list[Comparison]:
    """Compare current timings with a baseline case by case (see the module docstring for the rule).
    Cases only in `current` are 'new', cases only in `baseline` are 'missing'; neither fails the check."""
    out = []
    for name, cur in current.items():
        base = baseline.get(name)
        if base is None:
            out.append(Comparison(name, "new", None, cur.median_ms, None))
            continue
        thr = noise_threshold(base.spread, cur.spread, floor, factor, base.median_ms)
        change = cur.median_ms / base.median_ms - 1
        status = "regression" if change > thr else "improvement" if change < -thr else "ok"
        out.append(Comparison(name, status, base.median_ms, cur.median_ms, thr))
    for name, base in baseline.items():
        if name not in current:
            out.append(Comparison(name, "missing", base.median_ms, None, None))
    return out


def has_regression(comparisons: list[Comparison]) -> bool:
    return any(c.status == "regression" for c in comparisons)


def flagged(comparisons: list[Comparison]) -> list[Comparison]:
    return [c for c in comparisons if c.status == "regression" and not c.remeasured_ms]


def confirm_regressions(comparisons: list[Comparison], timer: Callable[[str], float],
                        rounds: int = CONFIRM_ROUNDS, progress: Callable[[str, int], None] | None = None
                        ) -> list[Comparison]:
    """Re-measure the cases flagged 'regression' and keep that status only where it holds (module docstring).

    timer(case name) -> one time in ms (on the GPU: one do_bench median, see SuiteTimer). The flagged cases are
    timed round-robin, `rounds` times each. Other comparisons are returned unchanged, in the same order."""
    if rounds < 1:
        raise VimbenchError(f"--confirm-rounds {rounds}: re-measure flagged cases at least once")
    suspects = flagged(comparisons)
    samples: dict[str, list[float]] = {c.case: [] for c in suspects}
    done = 0
    for _ in range(rounds):
        for c in suspects:  # interleaved: a slow spell of the GPU hits every suspect alike
            if progress:
                progress(c.case, done)
            samples[c.case].append(float(timer(c.case)))
            done += 1
    out = []
    for c in comparisons:
        if c.case not in samples:
            out.append(c)
            continue
        times = sorted(samples[c.case])
        low = times[int(len(times) * CONFIRM_QUANTILE)]
        confirmed = low / c.baseline_ms - 1 > c.threshold
        out.append(replace(c, status="regression" if confirmed else "unstable",
                           current_ms=statistics.median(times), first_ms=c.current_ms,
                           remeasured_ms=tuple(samples[c.case])))
    return out


# ---------------------------------------------------------------------------------------------- baseline files

def load_baseline(path: Path) -> tuple[dict[str, Any], dict[str, CaseTiming]]:
    """(header, {case: CaseTiming}) of a baseline file; VimbenchError if it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise VimbenchError(f"baseline {path} does not exist; create it on the GPU with "
                            f"`vimbench kernels check --baseline {path} --update`")
    if path.is_dir():
        raise VimbenchError(f"baseline {path} is a folder; give its JSON file, e.g. {path / 'h200.json'}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise VimbenchError(f"baseline {path} is binary, not a JSON file") from None
    except OSError as exc:
        raise VimbenchError(f"cannot read baseline {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise VimbenchError(f"baseline {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA or not isinstance(data.get("cases"), dict):
        raise VimbenchError(f"{path} is not a vimbench kernel baseline (schema {BASELINE_SCHEMA})")
    cases = {}
    for name, case in data["cases"].items():
        repeats = case.get("repeats_ms") if isinstance(case, dict) else None
        if not repeats or not all(isinstance(x, (int, float)) and x > 0 for x in repeats):
            raise VimbenchError(f"baseline {path}: case {name!r} has no positive repeats_ms list")
        cases[name] = CaseTiming(name, tuple(float(x) for x in repeats))
    header = {k: v for k, v in data.items() if k != "cases"}
    return header, cases


def write_baseline(path: Path, timings: dict[str, CaseTiming], gpu: str | None, env: dict[str, Any],
                   settings: dict[str, Any]) -> None:
    data = {
        "schema": BASELINE_SCHEMA,
        "gpu": gpu,
        "env": env,
        "settings": settings,
        "noise_rule": f"threshold = max({MIN_THRESHOLD:.0%}, {SPREAD_FACTOR:g} * max(spread_baseline, spread_new), "
                      f"{MIN_ABS_MS:g} ms / baseline_ms); spread = (max - min) / median of the repeats",
        "cases": {name: t.to_json() for name, t in timings.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- the suite (GPU)

@dataclass(frozen=True)
class KernelCase:
    """A named kernel call; `build()` allocates its inputs on the GPU and returns the no-argument call."""
    name: str
    build: Callable[[], Callable[[], object]]
    params: dict[str, Any] = field(default_factory=dict)


_OP_NAMES = {"bimamba_scan": "scan_bidir", "bimamba_scan_halves": "scan_halves", "conv1d_silu_bidir": "conv1d",
             "add_rmsnorm": "add_rmsnorm"}


def _case(op: str, batch: int, channels: int, length: int, dtype_name: str) -> KernelCase:
    """One suite case: the Triton op on inputs built by the kernel microbenchmark (the model's layout)."""
    def build():
        from vimbench.kerneltools.microbench import _torch_dtype, make_call

        return make_call(_OP_NAMES[op], "triton", channels, length, batch, _torch_dtype(dtype_name))

    if op == "add_rmsnorm":
        dim = channels // 2
        return KernelCase(f"add_rmsnorm/{dtype_name}/r{batch * length}_d{dim}", build,
                          dict(op=op, rows=batch * length, dim=dim, dtype=dtype_name))
    return KernelCase(f"{op}/{dtype_name}/b{batch}_e{channels}_l{length}", build,
                      dict(op=op, batch=batch, channels=channels, length=length, dtype=dtype_name))


def default_suite() -> list[KernelCase]:
    """Vim-Ti shapes at 1248 px (L = 6085, E = 384, D = 192) and 224 px (L = 197), batch 64 and 8; the scan in
    both forms the model launches (bf16: gated halves; fp32: combined) and the combined bf16 one."""
    cases = [_case("bimamba_scan_halves", 64, 384, 6085, "bf16"), _case("bimamba_scan_halves", 64, 384, 197, "bf16")]
    for dtype in ("bf16", "fp32"):
        cases += [_case("bimamba_scan", 64, 384, 6085, dtype), _case("bimamba_scan", 8, 384, 6085, dtype),
                  _case("bimamba_scan", 64, 384, 197, dtype), _case("conv1d_silu_bidir", 64, 384, 6085, dtype),
                  _case("conv1d_silu_bidir", 64, 384, 197, dtype), _case("add_rmsnorm", 64, 384, 6085, dtype)]
    return cases


def case_work(params: dict[str, Any]):
    """The roofline work (vimbench.analysis.roofline.KernelWork) of a suite case, from its params."""
    from vimbench.analysis import roofline as rl

    op = params.get("op")
    if op in ("bimamba_scan", "bimamba_scan_halves"):
        return rl.bimamba_scan_work(params["batch"], params["channels"], params["length"], dtype=params["dtype"],
                                    halves=op == "bimamba_scan_halves")
    if op == "conv1d_silu_bidir":
        return rl.conv1d_bidir_work(params["batch"], params["channels"], params["length"], dtype=params["dtype"])
    if op == "add_rmsnorm":
        return rl.add_rmsnorm_work(params["rows"], params["dim"], dtype=params["dtype"])
    return None


def pct_of_floor(params: dict[str, Any], median_ms: float, gpu: str) -> float | None:
    """Measured time as a % of the case's roofline floor speed (100 = at the floor); None if unknown."""
    from vimbench.analysis import roofline as rl

    work = case_work(params)
    if work is None:
        return None
    try:
        ceilings = rl.ceilings_for(gpu)
    except VimbenchError:
        return None
    result = rl.roofline(work, median_ms / 1e3, ceilings)
    return result.pct(result.floor_s)


def time_case(call: Callable[[], object], repeats: int = DEFAULT_REPEATS, warmup_ms: float = 25,
              rep_ms: float = 100) -> tuple[float, ...]:
    """k independent do_bench medians (ms). do_bench's warmup/rep are milliseconds, and it flushes L2."""
    from triton.testing import do_bench

    call()  # compile / autotune outside the timed region
    return tuple(float(do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median")) for _ in range(repeats))


def run_suite(cases: list[KernelCase], repeats: int = DEFAULT_REPEATS,
              progress: Callable[[str, int], None] | None = None) -> dict[str, CaseTiming]:
    """Time every case on the current CUDA device. Inputs of one case are freed before the next."""
    import torch

    if not torch.cuda.is_available():
        raise VimbenchError("the timed kernel check needs a CUDA GPU and none is present; "
                            "on a CPU machine run `vimbench kernels static` instead")
    out = {}
    for i, case in enumerate(cases):
        if progress:
            progress(case.name, i)
        call = case.build()
        out[case.name] = CaseTiming(case.name, time_case(call, repeats))
        del call
        torch.cuda.empty_cache()
    if progress:
        progress("done", len(cases))
    return out


def suite_timer(cases: list[KernelCase]) -> "SuiteTimer":
    """The GPU timer the CLI hands to confirm_regressions (tests replace this function)."""
    return SuiteTimer(cases)


class SuiteTimer:
    """The confirmation step's timer on the GPU: timer(case name) -> one do_bench median (ms). Each case's inputs
    are built on first use and kept until close()."""

    def __init__(self, cases: list[KernelCase], warmup_ms: float = 25, rep_ms: float = 100):
        self._cases = {c.name: c for c in cases}
        self._calls: dict[str, Callable[[], object]] = {}
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms

    def __call__(self, name: str) -> float:
        from triton.testing import do_bench

        if name not in self._calls:
            self._calls[name] = self._cases[name].build()
            self._calls[name]()  # compile / autotune outside the timed region
        return float(do_bench(self._calls[name], warmup=self.warmup_ms, rep=self.rep_ms, return_mode="median"))

    def close(self) -> None:
        import torch

        self._calls.clear()
        torch.cuda.empty_cache()
