"""The timing pass: warm up, then time each call separately and keep every sample.

CUDA: one pair of CUDA events per call, with the device synchronized before each call, so every sample is one
forward's latency including its kernel launches (the released Vim scripts synchronize around each call too).
CUDA graphs: the forward is captured once after warm-up and each replay is timed the same way.
CPU: time.perf_counter around each call.

Host submission time (CUDA): perf_counter from just before a call's start event to just after its end event,
before the synchronize that waits for the GPU: how long the host took to issue the call. Where it is about the
call's latency, the host was busy for the whole call: the GPU waited on it (a host-bound call: Python, dispatch and
launches set the time, and the number moves with the host's speed), or, with thousands of kernels per call, the
launch queue was full and the host waited on the GPU; a CUDA-graph replay of the same work tells the two apart.
Where it is far below the latency, the GPU work set the time. `host_bound`.
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
    host_ms_samples: list[float] | None = None  # CUDA: host submission time per call (module docstring)

    @property
    def host_ms_p50(self) -> float | None:
        return percentile(self.host_ms_samples, 50) if self.host_ms_samples else None

    def fps(self, batch: int) -> float:
        """Images per second at the median latency."""
        return batch / (self.p50_ms / 1e3) if self.p50_ms > 0 else float("inf")


# (p80 - p20) / p50 above this: the case's calls moved while it was measured (other load, clocks, host-bound
# launches); its number is flagged as noisy in tables. Idle H200 runs of the committed results stay below 3%.
NOISY_SPREAD = 0.10
# Host submission time at or above this fraction of the p50 latency: the call is host-bound (`host_bound`).
HOST_BOUND_FRACTION = 0.9


def host_bound(host_ms_p50: float | None, latency_ms_p50: float | None) -> bool:
    """Whether a CUDA case's calls were host-bound: the host's submission (p50) took at least HOST_BOUND_FRACTION
    of the p50 latency, so the GPU waited on the host. False where either is unknown (CPU rows, older files)."""
    if not host_ms_p50 or not latency_ms_p50 or host_ms_p50 != host_ms_p50 or latency_ms_p50 != latency_ms_p50:
        return False
    return float(host_ms_p50) >= HOST_BOUND_FRACTION * float(latency_ms_p50)


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


def _summarize(method: str, warmup: int, samples: list[float], host_ms_samples: list[float] | None = None
               ) -> Timing:
    return Timing(method, warmup, len(samples), samples, percentile(samples, 20), percentile(samples, 50),
                  percentile(samples, 80), host_ms_samples or None)


def _time_cpu(fn: Callable[[], object], iters: int) -> list[float]:
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def time_cuda_calls(call: Callable[[], object], iters: int, host_ms: list[float] | None = None) -> list[float]:
    """Each call between a pair of CUDA events, the device synchronized before it; returns the events' ms per
    call. host_ms: a list that receives each call's host submission time (module docstring)."""
    import torch

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, end in zip(starts, ends):
        torch.cuda.synchronize()
        issued = time.perf_counter()
        start.record()
        call()
        end.record()
        if host_ms is not None:
            host_ms.append((time.perf_counter() - issued) * 1e3)
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
    host_ms: list[float] = []
    samples = time_cuda_calls(graph.replay, iters, host_ms)
    del graph
    return _summarize(CUDA_GRAPH_EVENTS, warmup, samples, host_ms)


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
    host_ms: list[float] = []
    samples = time_cuda_calls(fn, iters, host_ms)
    return _summarize(CUDA_EVENTS, warmup, samples, host_ms)
