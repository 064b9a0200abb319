"""Small-grid scan load pipeline (AHEAD 1 vs 2) at 197 tokens: kernel time from graph-captured launches; then
batch-1 224 px forward latency as a CUDA graph (bf16) for Vim-Ti/S/B, AHEAD 1/2, dt_proj fused or not; Vim-Ti at
batch 8 and 64 too."""
import json, os, statistics, torch
from vimbench.models.registry import create_model
from vimbench.models.vim import set_dt_proj_fusion
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from kernels.selective_scan import fwd
OUT = os.environ.get("OUT", "/tmp")

def graph_ms(f, reps=5, n=40):
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): f()
    torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps): f()
    g.replay(); torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts) / reps

rows = []
for E, B in ((384, 1), (384, 2), (384, 4), (384, 8), (768, 1), (1536, 1)):
    args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=B, channels=E, length=197), torch.bfloat16, "cuda")
    fwd.SMALL_GRID_AHEAD = 1; ref = fwd.bimamba_scan(**args)
    for ahead in (1, 2):
        fwd.SMALL_GRID_AHEAD = ahead
        out = fwd.bimamba_scan(**args)
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        us = graph_ms(lambda: fwd.bimamba_scan(**args), reps=20, n=30) * 1e3
        rows.append(dict(kind="scan", E=E, B=B, ahead=ahead, us=round(us, 2), err=err)); print(rows[-1], flush=True)
for name, batches in (("vim_t", (1, 8, 64)), ("vim_s", (1,)), ("vim_b", (1,))):
    for batch in batches:
        model = create_model(name, img_size=224, backend="triton").cuda().eval()
        x = torch.randn(batch, 3, 224, 224, device="cuda")
        def f():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                return model(x)
        for ahead, fused in ((1, False), (2, False), (2, True)):
            fwd.SMALL_GRID_AHEAD = ahead
            set_dt_proj_fusion(model, fused)
            ms = graph_ms(f)
            rows.append(dict(kind="model_graph", model=name, batch=batch, ahead=ahead, dt_fused=fused,
                             ms=round(ms, 4), img_s=round(batch / ms * 1e3, 1)))
            print(rows[-1], flush=True)
        del model; torch.cuda.empty_cache()
fwd.SMALL_GRID_AHEAD = 2
for batch in (1, 64):  # the peer, same method: DeiT-Ti with fused attention (sdpa)
    model = create_model("deit_t", img_size=224, attn="sdpa").cuda().eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return model(x)
    ms = graph_ms(f)
    rows.append(dict(kind="model_graph", model="deit_t", batch=batch, ms=round(ms, 4), img_s=round(batch / ms * 1e3, 1)))
    print(rows[-1], flush=True)
    del model; torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/b1.json", "w"), indent=1)
