"""The small-grid scan in blocks of tokens (`fwd._scan_blocks_kernel`, session s) against what runs now, on the GPU.
1. The scan alone (bf16 halves, the Vim mixer's layouts), kernel time of 20 launches captured in a CUDA graph,
   replays timed (median us per call): `auto` = the shipped choice under capture (chunks of 16-32 tokens below 2
   programs per SM), `walk` = the one-pass token walk (eager's path at small grids), `tbT` = the token-block kernel
   with T tokens per block (one pass). Error: rel. L2 against `walk`.
2. Whole Vim forwards at 224 px as CUDA graphs (bf16, inference mode), A B B A: A = before session s (token walk,
   captured chunking: TOKEN_BLOCK = 0), B = the token-block kernel as shipped after part 1 (fwd.TOKEN_BLOCK,
   chunked.TOKEN_BLOCKS_MAX_CAPTURED_LENGTH).
usage (repo root, GPU): OUT=... python results/history/scripts/tokenblocks.py [model]  (model: part 2 only)"""
import sys
import json, os, statistics, torch
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from vimbench.models.registry import create_model
from kernels.launch import call_replay
from kernels.selective_scan import fwd
OUT = os.environ.get("OUT", "/tmp")


def graph_us(fn, reps=20, n=30):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for _ in range(reps):
            out = fn()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    graph_us.out = out  # the captured call's output (its last replay's values)
    return statistics.median(ts) * 1e3 / reps


def setting(name):
    """(TOKEN_BLOCK, split) of a variant."""
    if name == "auto":
        return 0, None
    if name == "walk":
        return 0, 0
    return int(name[2:]), 0


rows = []
SHIPPED = fwd.TOKEN_BLOCK
with call_replay(False):
    for E, L, batches in (() if sys.argv[1:] == ["model"] else
                          ((384, 197, (1, 2, 4, 8)), (768, 197, (1, 4)), (1536, 197, (1,)), (384, 577, (1,)))):
        for B in batches:
            args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=E, length=L), torch.bfloat16, "cuda")
            fwd.TOKEN_BLOCK = 0
            ref = fwd.bimamba_scan(**args, combine=False, split=0).float()
            for name in ("auto", "walk", "tb8", "tb16", "tb32", "auto", "tb16"):
                tb, split = setting(name)
                fwd.TOKEN_BLOCK = tb
                try:
                    out = fwd.bimamba_scan(**args, combine=False, split=split).float()
                    err = ((out - ref).norm() / ref.norm()).item()
                    us = graph_us(lambda: fwd.bimamba_scan(**args, combine=False, split=split))
                    rows.append(dict(kind="scan", E=E, L=L, B=B, variant=name, us=round(us, 2), err=err))
                except Exception as e:  # a variant that fails to compile is a result too
                    rows.append(dict(kind="scan", E=E, L=L, B=B, variant=name, error=repr(e)[:300]))
                print(rows[-1], flush=True)
    fwd.TOKEN_BLOCK = SHIPPED

for name, batches in (("vim_t", (1, 2, 8)), ("vim_s", (1,)), ("vim_b", (1,))):
    model = create_model(name, img_size=224, backend="triton").cuda().eval()
    for B in batches:
        x = torch.randn(B, 3, 224, 224, device="cuda")

        def f():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                return model(x)
        outs = {}
        for arm in ("A", "B", "B", "A"):
            fwd.TOKEN_BLOCK = SHIPPED if arm == "B" else 0
            with call_replay(False):
                ms = graph_us(f, reps=5, n=40) / 1e3
                outs[arm] = graph_us.out.float().clone()  # a copy: a later graph's pool may reuse that memory
            rows.append(dict(kind="model_graph", model=name, B=B, arm=arm, ms=round(ms, 4)))
            print(rows[-1], flush=True)
        err = ((outs["B"] - outs["A"]).norm() / outs["A"].norm()).item()
        top1 = (outs["B"].argmax(-1) == outs["A"].argmax(-1)).float().mean().item()
        rows.append(dict(kind="model_graph_agree", model=name, B=B, rel_l2=err, top1_agree=top1))
        print(rows[-1], flush=True)
    fwd.TOKEN_BLOCK = SHIPPED
    del model
    torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/tokenblocks.json", "w"), indent=1)
print("=== scan us (graph replays)")
for r in rows:
    if r["kind"] == "scan":
        print(r["E"], r["L"], r["B"], r["variant"], r.get("us", r.get("error")), f"{r.get('err', 0):.1e}")
print("=== model graph ms")
for r in rows:
    if r["kind"].startswith("model"):
        print(r)
