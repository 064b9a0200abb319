"""Why Vim-Ti under torch.compile (reduce-overhead: 1.22 ms at batch 1, H100) is slower than our own CUDA graph of
the eager forward (0.69 ms): per mode, the p50 latency (CUDA events, 30 calls) and the kernels of 10 profiled
forwards (torch.profiler; count and us per forward), for `none` (eager), `cuda-graphs` (the eager forward captured as the sweep
does), `default` (torch.compile, frozen weights, no graphs) and `reduce-overhead` (frozen, inductor's graphs), built
as the sweep builds them (runner.make_forward, compiler.compile_model(freeze=True)), bf16, 224 px. Session t.
usage (repo root, GPU): OUT=... python results/history/scripts/compiledprof.py [batch] [model]"""
import collections, json, os, statistics, sys
import torch
from torch.profiler import ProfilerActivity, profile
from vimbench.bench import compiler
from vimbench.bench.runner import make_forward
from vimbench.bench.timing import capture_graph, time_cuda_calls
from vimbench.models.registry import create_model
from vimbench.results import CaseKey
OUT = os.environ.get("OUT", "/tmp")
batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1
name = sys.argv[2] if len(sys.argv) > 2 else "vim_t"
rows = []
for mode in ("none", "cuda-graphs", "default", "reduce-overhead"):
    key = CaseKey(model=name, res=224, batch=batch, dtype="bf16", implementation="triton" if name.startswith("vim")
                  else "timm", attn=None if name.startswith("vim") else "sdpa", device="cuda", compile=mode)
    model = create_model(name, img_size=224, **({"backend": "triton"} if name.startswith("vim") else {})).cuda().eval()
    forward = make_forward(model, key)
    forward()
    if mode == "none":
        call = forward
    elif mode == "cuda-graphs":
        graph = capture_graph(forward, 3)
        call = graph.replay
    else:
        compiler.reset()
        call = make_forward(compiler.compile_model(model, mode, "inductor", freeze=True), key)
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    p50 = statistics.median(time_cuda_calls(call, 30))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            call()
        torch.cuda.synchronize()
    kernels = collections.defaultdict(lambda: [0, 0.0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels[ev.name[:90]]
            k[0] += 1
            k[1] += ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
    total = sum(v[1] for v in kernels.values()) / 10
    count = sum(v[0] for v in kernels.values()) / 10
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:25]
    rows.append(dict(model=name, batch=batch, mode=mode, p50_ms=p50, kernels_per_forward=count,
                     kernel_us_per_forward=total,
                     top=[dict(name=n, per_forward=c / 10, us_per_forward=t / 10) for n, (c, t) in top]))
    print(f"=== {name} b{batch} {mode}: p50 {p50:.3f} ms, {count:.0f} kernels and {total:.0f} us of kernel time "
          f"per forward", flush=True)
    for n, (c, t) in top:
        print(f"  {c / 10:6.1f} x {t / 10:8.1f} us  {n}", flush=True)
    del call, model, forward
    torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/compiledprof-{name}-b{batch}.json", "w"), indent=1)
