"""Batch-1 224 px forward latency as a CUDA graph (replays timed, bf16) for Vim-Ti/S/B at HEAD's dispatch, with and
without the fused dt_proj; and batch 64 throughput for Vim-Ti (unchanged rules there)."""
import json, os, statistics, torch
from vimbench.models.registry import create_model
from vimbench.models.vim import set_dt_proj_fusion
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
for name in ("vim_t", "vim_s", "vim_b"):
    for batch in ((1, 64) if name == "vim_t" else (1,)):
        model = create_model(name, img_size=224, backend="triton").cuda().eval()
        x = torch.randn(batch, 3, 224, 224, device="cuda")
        def f():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                return model(x)
        for fused in (False, True):
            set_dt_proj_fusion(model, fused)
            ms = graph_ms(f)
            rows.append(dict(model=name, batch=batch, dt_fused=fused, graph_ms=round(ms, 4), img_s=round(batch / ms * 1e3, 1)))
            print(rows[-1], flush=True)
        del model; torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/b1.json", "w"), indent=1)
