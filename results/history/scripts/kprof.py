"""GPU kernels per forward: eager Vim-Ti vs compiled (default mode, frozen) at 224 px batch 1 and 64, bf16; and
the same forward captured in a CUDA graph vs reduce-overhead, timed by replay."""
import json, os, statistics, collections, torch
from torch.profiler import profile, ProfilerActivity
from vimbench.models.registry import create_model
from vimbench.bench import compiler
OUT = os.environ.get("OUT", "/tmp")
res = {}

def kernels(f, n=5):
    for _ in range(3): f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(n): f()
        torch.cuda.synchronize()
    agg = collections.defaultdict(lambda: [0, 0.0])
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            agg[e.name[:90]][0] += 1; agg[e.name[:90]][1] += e.device_time
    rows = sorted(([k, c / n, t / n] for k, (c, t) in agg.items()), key=lambda r: -r[2])
    return dict(kernels_per_fwd=sum(r[1] for r in rows), gpu_us_per_fwd=sum(r[2] for r in rows), top=rows[:25])

def timed(f, n=30):
    for _ in range(5): f()
    torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); f(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)

for name in ("vim_t", "deit_t"):
    for batch in (1, 64):
        kw = dict(backend="triton") if name.startswith("vim") else dict(attn="sdpa")
        model = create_model(name, img_size=224, **kw).cuda().eval()
        x = torch.randn(batch, 3, 224, 224, device="cuda")
        def run(m):
            def f():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return m(x)
            return f
        eager = run(model); eager()
        r = {"eager": kernels(eager), "eager_ms": timed(eager)}
        for mode in ("default",):
            compiler.reset()
            cm = run(compiler.compile_model(model, mode, freeze=True)); cm()
            if mode == "default":
                r["compiled_default"] = kernels(cm)
            r[f"{mode}_ms"] = timed(cm)
            compiler.reset()
        res[f"{name}_b{batch}"] = r
        print(name, batch, {k: (v if isinstance(v, float) else (v["kernels_per_fwd"], round(v["gpu_us_per_fwd"], 1))) for k, v in r.items()}, flush=True)
        del model; torch.cuda.empty_cache()
json.dump(res, open(f"{OUT}/kprof.json", "w"), indent=1)
for k, r in res.items():
    for which in ("eager", "compiled_default"):
        print(f"== {k} {which}: {r[which]['kernels_per_fwd']:.0f} kernels, {r[which]['gpu_us_per_fwd']:.0f} us")
        for row in r[which]["top"][:12]:
            print(f"   {row[1]:6.1f} x {row[2]:9.1f} us  {row[0]}")
