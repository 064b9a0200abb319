"""Session af: where Vim-Ti's eager inference forward at 1248 px, batch 8 (bf16 autocast) loses time against the
same forward captured into a CUDA graph (the sweep had it host-bound: 25.3 against 18.2 ms, session ae): the
forward's time (CUDA events, median of 7), the host's time to return from it, the kernels of one profiled forward
(count, GPU sum, first-to-last span), the top host ops by self CPU time, and the launches by path.
usage: python results/history/scripts/fwdgap.py [res] [batch]; writes $OUT/fwdgap-<res>-<batch>.json"""
import json, os, statistics, sys, time
import torch
from torch.profiler import ProfilerActivity, profile
from kernels import launch
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
res = int(sys.argv[1]) if len(sys.argv) > 1 else 1248
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
torch.manual_seed(0)
model = create_model("vim_t", img_size=res, backend="triton").cuda().eval()
images = torch.randn(batch, 3, res, res, device="cuda")


def forward():
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        return model(images)


def timed(fn, n=7):
    ts, hs = [], []
    for _ in range(n):
        e = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        torch.cuda.synchronize(); e[0].record(); t0 = time.perf_counter(); fn(); hs.append(time.perf_counter() - t0)
        e[1].record(); torch.cuda.synchronize()
        ts.append(e[0].elapsed_time(e[1]))
    return statistics.median(ts), 1e3 * statistics.median(hs)


for _ in range(3):
    forward()
stats0 = dict(launch.stats)
forward()
per_forward = {k: launch.stats[k] - stats0[k] for k in stats0}
eager_ms, eager_host_ms = timed(forward)
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    forward(); torch.cuda.synchronize()
spans, ksum = [], 0.0
for ev in prof.events():
    if ev.device_type == torch.autograd.DeviceType.CUDA:
        ksum += ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
        spans.append((ev.time_range.start, ev.time_range.end))
spans.sort()
top = sorted(prof.key_averages(), key=lambda a: a.self_cpu_time_total, reverse=True)[:18]
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3):
        forward()
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    forward()
graph_ms, _ = timed(g.replay)
out = dict(res=res, batch=batch, eager_ms=eager_ms, eager_host_ms=eager_host_ms, graph_ms=graph_ms,
           launches_per_forward=per_forward, kernels=len(spans), kernel_sum_us=ksum,
           first_to_last_us=(spans[-1][1] - spans[0][0]) if spans else 0,
           top_host_ops=[dict(name=a.key, calls=a.count, self_cpu_us=a.self_cpu_time_total) for a in top])
json.dump(out, open(f"{OUT}/fwdgap-{res}-{batch}.json", "w"), indent=1)
print(f"eager {eager_ms:.2f} ms (events, p50 of 7), host returns after {eager_host_ms:.2f} ms; graph {graph_ms:.2f} ms")
print(f"launches per forward {per_forward}; kernels {len(spans)}, GPU sum {ksum / 1e3:.2f} ms, first-to-last "
      f"{out['first_to_last_us'] / 1e3:.2f} ms")
print("top host ops (self CPU us, calls):")
for a in top:
    print(f"  {a.key[:60]} {a.self_cpu_time_total:.0f} {a.count}")
