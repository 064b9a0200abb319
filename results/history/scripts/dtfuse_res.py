"""Vim-Ti forward as a CUDA graph (bf16), dt_proj fused into the scan or not, across resolutions and batches."""
import json, os, statistics, torch
from vimbench.models.registry import create_model
from vimbench.models.vim import set_dt_proj_fusion
OUT = os.environ.get("OUT", "/tmp")

def graph_ms(f, reps=3, n=15):
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
for res, batches in ((224, (1, 8, 32, 64, 128)), (384, (8, 64)), (512, (8, 64)), (768, (8, 64)), (1024, (8, 32))):
    model = create_model("vim_t", img_size=res, backend="triton").cuda().eval()
    for batch in batches:
        x = torch.randn(batch, 3, res, res, device="cuda")
        def f():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                return model(x)
        r = dict(res=res, batch=batch)
        for _ in range(2):  # alternate twice
            for fused in (False, True):
                set_dt_proj_fusion(model, fused)
                r.setdefault(f"ms_fused{int(fused)}", []).append(round(graph_ms(f), 4))
        r["ratio_fused"] = round(min(r["ms_fused1"]) / min(r["ms_fused0"]), 3)
        rows.append(r); print(r, flush=True)
        del x; torch.cuda.empty_cache()
    set_dt_proj_fusion(model, False); del model; torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/dtfuse_res.json", "w"), indent=1)
