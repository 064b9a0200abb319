"""Timers the GPU scripts here share (imported as `timing`: Python puts a script's own folder on sys.path).

graph_us(fn): us per call, fn captured `reps` times into one CUDA graph and replayed (median of `repeats`
replays): kernel time without host launch cost, as a graphed training step sees it.
event_median_ms(fn): ms per call, one CUDA-event pair around each of n eager calls after 3 warm-up calls.
record_graph(rows, group, name, fn, ref): graph_us(fn) as a row of `rows` (with fn()'s max error relative to ref's
largest magnitude), printed; returns fn()'s output.
host_ms(fn, n): ms of wall clock per call over n back-to-back calls, then a synchronize (host-bound eager time).
kernel_table(fn, n, top): GPU kernels per call from torch.profiler (count, us per call, by name), after 2 warm-up calls."""
import collections
import statistics
import time

import torch


def graph_us(fn, reps=20, repeats=7):
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # warm-up off the capture stream (allocations, lazy init)
        fn(); fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); graph.replay(); b.record(); torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000 / reps)
    return statistics.median(times)


def event_median_ms(fn, n=25):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def record_graph(rows, group, name, fn, ref=None):
    out = fn()
    err = None if ref is None else float((out.float() - ref.float()).abs().max() / ref.float().abs().max())
    us = graph_us(fn)
    rows.append(dict(group=group, name=name, us=us, rel_err=err))
    print(f"{group:28s} {name:44s} {us:8.2f} us  err {err}", flush=True)
    return out


def host_ms(fn, n=20):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


def kernel_table(fn, n=2, top=30):
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    agg = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            agg[e.name[:100]][0] += 1
            agg[e.name[:100]][1] += e.device_time
    rows = sorted(([k, c / n, t / n] for k, (c, t) in agg.items()), key=lambda r: -r[2])
    return dict(kernels_per_fwd=sum(r[1] for r in rows), gpu_us_per_fwd=sum(r[2] for r in rows), top=rows[:top])
