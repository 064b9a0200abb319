"""Session ae: why Vim-Ti's eager training step at 1248 px, batch 8 (bf16) takes ~100 ms where the same step as a
CUDA graph takes ~81: per kernel name, the GPU time of one eager step against one graph replay of the captured
step (torch.profiler, CUPTI), the kernel sums, and the step times (CUDA events, median of 5).
usage: python results/history/scripts/eagergap.py [res] [batch]; writes $OUT/eagergap-<res>-<batch>.json"""
import collections, json, os, statistics, sys
import torch
from torch.profiler import ProfilerActivity, profile
from vimbench.bench.train import make_train_step
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
res = int(sys.argv[1]) if len(sys.argv) > 1 else 1248
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8


def timed(fn, n=5):
    ts = []
    for _ in range(n):
        e = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        torch.cuda.synchronize(); e[0].record(); fn(); e[1].record(); torch.cuda.synchronize()
        ts.append(e[0].elapsed_time(e[1]))
    return statistics.median(ts)


def kernels_of(fn):
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn(); torch.cuda.synchronize()
    k = collections.defaultdict(lambda: [0, 0.0])
    spans = []
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            t = ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
            k[ev.name[:90]][0] += 1; k[ev.name[:90]][1] += t
            spans.append((ev.time_range.start, ev.time_range.end))
    spans.sort()
    wall = (spans[-1][1] - spans[0][0]) if spans else 0
    return k, sum(v[1] for v in k.values()), wall, len(spans)


torch.manual_seed(0)
out = {}
for mode in ("eager", "graph"):
    model = create_model("vim_t", img_size=res, backend="triton").cuda()
    step = make_train_step(model, batch, res, "bf16", "cuda", capturable=mode == "graph")
    if mode == "graph":
        s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
        fn = g.replay
    else:
        for _ in range(3):
            step()
        fn = step
    ms = timed(fn)
    k, ksum, wall, n = kernels_of(fn)
    out[mode] = dict(step_ms=ms, kernel_us=ksum, first_to_last_us=wall, kernels=n, by_name={a: b for a, b in k.items()})
    print(f"{mode}: step {ms:.2f} ms (events), kernels {n}, kernel sum {ksum/1e3:.2f} ms, first-to-last {wall/1e3:.2f} ms",
          flush=True)
    del step, model
    torch.cuda.empty_cache()
json.dump(out, open(f"{OUT}/eagergap-{res}-{batch}.json", "w"), indent=1)
e, g = out["eager"]["by_name"], out["graph"]["by_name"]
diff = sorted(((e.get(n, [0, 0])[1] - g.get(n, [0, 0])[1], n) for n in set(e) | set(g)), reverse=True)
print("kernel name | eager calls us | graph calls us | eager - graph us")
for d, n in diff[:14] + diff[-4:]:
    print(f"{n[:70]} | {e.get(n, [0, 0])[0]} {e.get(n, [0, 0])[1]:.0f} | {g.get(n, [0, 0])[0]} {g.get(n, [0, 0])[1]:.0f} | {d:.0f}")
