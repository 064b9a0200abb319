"""The timing pass: warm up, then time each call separately and keep every sample.

CUDA: one pair of CUDA events per call, with the device synchronized before each call, so every sample is one
forward's latency including its kernel launches (the released Vim scripts synchronize around each call too).
CUDA graphs: the forward is captured once after warm-up and each replay is timed the same way.
CPU: time.perf_counter around each call.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from vimbench.bench.grid import MIN_ITERS
from vimbench.errors import VimbenchError

CUDA_EVENTS = "cuda_events"
CUDA_GRAPH_EVENTS = "cuda_graph_replay+cuda_events"
PERF_COUNTER = "perf_counter"


@dataclass
class Timing:
    method: str
    warmup: int
    iters: int
    samples_ms: list[float] = field(default_factory=list)
    p20_ms: float = 0.0
    p50_ms: float = 0.0
    p80_ms: float = 0.0

    def fps(self, batch: int) -> float:
        """Images per second at the median latency."""
        return batch / (self.p50_ms / 1e3) if self.p50_ms > 0 else float("inf")


# (p80 - p20) / p50 above this: the case's calls moved while it was measured (other load, clocks, host-bound
# launches); its number is flagged as noisy in tables. Idle H200 runs of the committed results stay below 3%.
NOISY_SPREAD = 0.10


def relative_spread(p20: float | None, p50: float | None, p80: float | None) -> float | None:
    """(p80 - p20) / p50: how much the timed calls of one case spread (None when a value is missing)."""
    if p20 is None or p50 is None or p80 is None or not p50 or p20 != p20 or p80 != p80 or p50 != p50:
        return None
    return (float(p80) - float(p20)) / float(p50)


def percentile(samples: list[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _summarize(method: str, warmup: int, samples: list[float]) -> Timing:
    return Timing(method, warmup, len(samples), samples, percentile(samples, 20), percentile(samples, 50),
                  percentile(samples, 80))


def _time_cpu(fn: Callable[[], object], iters: int) -> list[float]:
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def time_cuda_calls(call: Callable[[], object], iters: int) -> list[float]:
    import torch

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, end in zip(starts, ends):
        torch.cuda.synchronize()
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in zip(starts, ends)]


def capture_graph(fn: Callable[[], object], warmup: int):
    """Capture fn into a CUDA graph. Warm-up runs on a side stream first, as torch's CUDA-graph notes ask
    (lazy init, cuDNN/Triton autotuning and allocator growth must happen before capture)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def time_graph_replays(fn: Callable[[], object], warmup: int, iters: int) -> Timing:
    """fn captured once into a CUDA graph after `warmup` untimed calls (capture_graph), two untimed replays (the
    first uploads the graph), then `iters` replays timed with CUDA events."""
    graph = capture_graph(fn, warmup)
    for _ in range(2):
        graph.replay()
    samples = time_cuda_calls(graph.replay, iters)
    del graph
    return _summarize(CUDA_GRAPH_EVENTS, warmup, samples)


def time_forward(fn: Callable[[], object], device: str, warmup: int, iters: int,
                 cuda_graphs: bool = False) -> Timing:
    """Time fn (one forward, inputs already prepared) `iters` times after `warmup` untimed calls.

    fn must be safe to call repeatedly and, with cuda_graphs, to capture (static inputs, no host sync)."""
    if warmup < 1:
        raise VimbenchError("at least one warm-up call is needed: the first call is never timed")
    if iters < MIN_ITERS:
        raise VimbenchError(f"at least {MIN_ITERS} timed calls are needed, got {iters}")
    if device == "cpu":
        for _ in range(warmup):
            fn()
        return _summarize(PERF_COUNTER, warmup, _time_cpu(fn, iters))
    if cuda_graphs:
        return time_graph_replays(fn, warmup, iters)
    for _ in range(warmup):
        fn()
    return _summarize(CUDA_EVENTS, warmup, time_cuda_calls(fn, iters))
