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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from vimbench.errors import VimbenchError
from vimbench.kerneltools.jsonfile import load_checked_json
from vimbench.kerneltools.registry import OpShape, get_op, list_ops

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
    data = load_checked_json(path, BASELINE_SCHEMA, "cases", "kernel baseline",
                             f"create it on the GPU with `vimbench kernels check --baseline {path} --update`")
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


def update_baseline_cases(path: Path, timings: dict[str, CaseTiming], gpu: str, env: dict[str, Any],
                          command: str) -> None:
    """Replace some cases of an existing baseline (`--update --only`): the other cases and the header stay as they
    were, and the file's `partial_updates` list records which cases were re-timed, when, by which command, at which
    commit. The baseline must have been measured on `gpu`."""
    path = Path(path)
    header, _ = load_baseline(path)
    check_baseline_gpu(header, gpu, path)
    data = json.loads(path.read_text())
    data["cases"].update({name: t.to_json() for name, t in timings.items()})
    data.setdefault("partial_updates", []).append({
        "commit": env.get("git_commit"), "timestamp": env.get("timestamp"), "command": command,
        "cases": sorted(timings)})
    path.write_text(json.dumps(data, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------- the suite (GPU)

@dataclass(frozen=True)
class TimedCase:
    """One case of the suite: a registered op at a shape and dtype, named as the baseline files name it."""
    name: str
    op: str
    shape: OpShape
    dtype: str

    def build(self, device: str = "cuda") -> Callable[[], object]:
        """Allocate the inputs (the model's layouts) and return the no-argument call of the Triton op."""
        from vimbench.kerneltools.microbench import make_call
        from vimbench.precision import torch_dtype

        return make_call(self.op, "triton", self.shape, torch_dtype(self.dtype), device)


def default_suite() -> list[TimedCase]:
    """Every registered op's regression shapes (vimbench.kerneltools.kernel_ops: Vim-Ti at 1248 px, L = 6085,
    and 224 px, L = 197; the scan in both forms the model launches, bf16 gated halves and fp32 combined, and the
    combined bf16 one)."""
    return [TimedCase(op.regression_name(case), op.name, case.shape, case.dtype)
            for op in list_ops() for case in op.regression]


def select_cases(cases: list[TimedCase], only: str) -> list[TimedCase]:
    """The cases whose name contains one of the comma-separated substrings of `only` (all when it is empty)."""
    keys = [k.strip() for k in only.split(",") if k.strip()]
    if not keys:
        return cases
    chosen = [c for c in cases if any(k in c.name for k in keys)]
    if not chosen:
        raise VimbenchError(f"--only {only!r} matches no case of the suite")
    return chosen


def load_baseline_folder(folder: Path) -> list[tuple[Path, dict[str, Any], dict[str, CaseTiming]]]:
    """(path, header, cases) of every baseline file (*.json) in `folder`, by file name; VimbenchError if it holds
    none or one of them is not a readable baseline (naming it)."""
    folder = Path(folder)
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix == ".json")
    except OSError as exc:
        raise VimbenchError(f"cannot list the baseline folder {folder}: {exc.strerror or exc}") from exc
    if not paths:
        raise VimbenchError(f"the baseline folder {folder} holds no .json baseline; create one on the GPU with "
                            f"`vimbench kernels check --baseline {folder / 'GPU.json'} --update`")
    return [(path, *load_baseline(path)) for path in paths]


def pick_baseline(baselines: list[tuple[Path, dict[str, Any], dict[str, CaseTiming]]], gpu: str, folder: Path
                  ) -> tuple[Path, dict[str, Any], dict[str, CaseTiming]]:
    """The one baseline of `load_baseline_folder(folder)` measured on `gpu` (its recorded name, exactly)."""
    matching = [b for b in baselines if b[1].get("gpu") == gpu]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise VimbenchError(f"several baselines in {folder} were measured on {gpu}: "
                            f"{', '.join(p.name for p, _, _ in matching)}; keep one")
    have = ", ".join(f"{p.name} ({h.get('gpu') or 'no GPU recorded'})" for p, h, _ in baselines)
    raise VimbenchError(f"no baseline in {folder} was measured on {gpu} (it holds {have}); create one with "
                        f"`vimbench kernels check --baseline {folder / 'GPU.json'} --update`")


def check_baseline_gpu(header: dict[str, Any], gpu: str, path: Path) -> None:
    """A baseline compares only on the GPU it was measured on."""
    if header.get("gpu") and header["gpu"] != gpu:
        raise VimbenchError(f"baseline {path} was measured on {header['gpu']}, this GPU is {gpu}; "
                            f"use that GPU's baseline or create one with --update")


def case_work(case: TimedCase):
    """The roofline work (vimbench.analysis.roofline.KernelWork) of a suite case."""
    return get_op(case.op).work(case.shape, case.dtype)


def pct_of_floor(case: TimedCase, median_ms: float, gpu: str) -> float | None:
    """Measured time as a % of the case's roofline floor speed (100 = at the floor); None if the GPU has no
    ceilings entry."""
    from vimbench.analysis import roofline as rl

    try:
        ceilings = rl.ceilings_for(gpu)
    except VimbenchError:
        return None
    result = rl.roofline(case_work(case), median_ms / 1e3, ceilings)
    return result.pct(result.floor_s)


def time_case(call: Callable[[], object], repeats: int = DEFAULT_REPEATS, warmup_ms: float = 25,
              rep_ms: float = 100) -> tuple[float, ...]:
    """k independent do_bench medians (ms). do_bench's warmup/rep are milliseconds, and it flushes L2."""
    from triton.testing import do_bench

    call()  # compile / autotune outside the timed region
    return tuple(float(do_bench(call, warmup=warmup_ms, rep=rep_ms, return_mode="median")) for _ in range(repeats))


def run_suite(cases: list[TimedCase], repeats: int = DEFAULT_REPEATS,
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


def suite_timer(cases: list[TimedCase]) -> "SuiteTimer":
    """The GPU timer the CLI hands to confirm_regressions (tests replace this function)."""
    return SuiteTimer(cases)


class SuiteTimer:
    """The confirmation step's timer on the GPU: timer(case name) -> one do_bench median (ms). Each case's inputs
    are built on first use and kept until close()."""

    def __init__(self, cases: list[TimedCase], warmup_ms: float = 25, rep_ms: float = 100):
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
