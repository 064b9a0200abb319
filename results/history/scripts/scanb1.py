"""Batch-1 (and 64) inference scan at 224 px on the H200: one-pass block_c 4/8/16/32 vs chunked splits; whole
Vim-Ti b1 forward latency as a CUDA graph per variant."""
import json, os, statistics, torch
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from kernels.selective_scan import fwd
from vimbench.models.registry import create_model
OUT = os.environ.get("OUT", "/tmp")
orig = fwd._blocks_for

def bench(fn, n=50):
    for _ in range(5): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)

variants = [("default", None, None), ("bc4", 4, 0), ("bc8", 8, 0), ("bc16", 16, 0), ("bc32", 32, 0),
            ("split16", None, 16), ("split32", None, 32), ("split64", None, 64)]
rows = []
for B in (1, 2, 8, 64):
    args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=B, channels=384, length=197), torch.bfloat16, "cuda")
    ref = fwd.bimamba_scan(**args)
    for name, bc, split in variants:
        fwd._blocks_for = (lambda p, bc=bc: bc) if bc else orig
        try:
            out = fwd.bimamba_scan(**args, split=split)
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            ms = bench(lambda: fwd.bimamba_scan(**args, split=split))
            rows.append(dict(kind="scan", B=B, variant=name, us=round(ms * 1e3, 1), rel_err=err))
        except Exception as e:
            rows.append(dict(kind="scan", B=B, variant=name, error=repr(e)[:300]))
        print(rows[-1], flush=True)
    fwd._blocks_for = orig

# whole model b1 as a CUDA graph, per variant (the scan's split is automatic: patch the launch rule only)
model = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
x = torch.randn(1, 3, 224, 224, device="cuda")
for name, bc, split in variants[:5]:
    fwd._blocks_for = (lambda p, bc=bc: bc) if bc else orig
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return model(x)
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): f()
    torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = f()
    ms = bench(g.replay, 100)
    rows.append(dict(kind="model_b1_graph", variant=name, ms=round(ms, 4)))
    print(rows[-1], flush=True)
fwd._blocks_for = orig
json.dump(rows, open(f"{OUT}/scanb1.json", "w"), indent=1)
for r in rows: print(r)
