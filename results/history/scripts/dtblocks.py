"""dt_proj fused into the token-block scan (session t) against the delta GEMM before it, on the GPU.
1. The scan's part of a mixer at 224 px (bf16, halves over u, the Vim mixer's layouts), kernel time of 20 calls
   captured in a CUDA graph, replays timed (median us per call):
   `gemm` = what captured forwards ran before: cast of x_dbl's dt columns + pad, the delta GEMM, the token-block scan;
   `scan` = the token-block scan alone on a ready delta (the part `gemm` shares);
   `fused` = the token-block scan with dt_proj fused (no cast, no GEMM).
   Error: rel. L2 of fused against gemm's halves.
2. Whole Vim forwards at 224 px as CUDA graphs (bf16, inference mode), A B B A: A = the delta GEMM under capture
   (vim.FUSE_DT_IN_TOKEN_BLOCKS = False), B = fused (True, as shipped).
usage (repo root, GPU): OUT=... python results/history/scripts/dtblocks.py [kernel|model]"""
import json, os, statistics, sys
import torch
import torch.nn.functional as F
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from vimbench.layout import XDblLayout
from vimbench.models.registry import create_model
import vimbench.models.vim as vim
from kernels.launch import call_replay
from kernels.selective_scan import fwd
OUT = os.environ.get("OUT", "/tmp")
parts = sys.argv[1:] or ["kernel", "model"]


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
    graph_us.out = out
    return statistics.median(ts) * 1e3 / reps


rows = []
if "kernel" in parts:
    with call_replay(False):
        for E, batches in ((384, (1, 2, 8)), (768, (1,)), (1536, (1,))):
            for B in batches:
                shape = OpShape(batch=B, channels=E, length=197)
                x = _scan_inputs(dirs=2, halves=True, dt_proj=True)(shape, torch.bfloat16, "cuda")
                x.pop("combine")
                R = shape.dt_rank
                lay = XDblLayout(R, 16)
                dt_view = x["delta"].transpose(2, 3)  # (2, B, L, R) view of the fp32 x_dbl's dt columns
                W_ = lay.width
                x_dbl_full = dt_view.as_strided((2, B, 197, W_), (B * 197 * W_, 197 * W_, W_, 1),
                                                dt_view.storage_offset() - lay.dt.start)
                assert torch.equal(x_dbl_full[..., lay.dt], dt_view)
                w = x["dt_proj"].transpose(1, 2).contiguous()  # (2, R, E) bf16
                pad = lay.width - lay.dt.start - R
                w_pad = F.pad(w, (0, 0, 0, pad))
                u0 = x["u"].clone()
                rest = {k: x[k] for k in ("A", "B", "C", "D", "z", "delta_bias")}

                def gemm():
                    dt_cols = x_dbl_full[..., lay.dt.start:].to(torch.bfloat16).reshape(2, B * 197, -1)
                    delta = torch.bmm(dt_cols, w_pad).view(2, B, 197, E).transpose(2, 3)
                    return fwd.bimamba_scan(u0, delta, **rest, combine=False, out=u0, split=0)

                ready = torch.bmm(x_dbl_full[..., lay.dt.start:].to(torch.bfloat16).reshape(2, B * 197, -1),
                                  w_pad).view(2, B, 197, E).transpose(2, 3)

                def scan():
                    return fwd.bimamba_scan(u0, ready, **rest, combine=False, out=u0, split=0)

                def fused():
                    return fwd.bimamba_scan(u0, x["delta"], **rest, combine=False, out=u0, split=0,
                                            dt_proj=x["dt_proj"])
                u_keep = x["u"].clone()
                outs = {}
                for name, fn in (("gemm", gemm), ("fused", fused)):
                    u0.copy_(u_keep)
                    outs[name] = fn().float().clone()
                err = ((outs["fused"] - outs["gemm"]).norm() / outs["gemm"].norm()).item()
                for name, fn in (("gemm", gemm), ("scan", scan), ("fused", fused), ("gemm", gemm), ("fused", fused)):
                    us = graph_us(fn)
                    rows.append(dict(kind="kernel", E=E, B=B, variant=name, us=round(us, 2), err_vs_gemm=err))
                    print(rows[-1], flush=True)

if "model" in parts:
    for name, batches in (("vim_t", (1, 2, 8)), ("vim_s", (1,)), ("vim_b", (1,))):
        model = create_model(name, img_size=224, backend="triton").cuda().eval()
        for B in batches:
            x = torch.randn(B, 3, 224, 224, device="cuda")

            def f():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                    return model(x)
            outs = {}
            for arm in ("A", "B", "B", "A"):
                vim.FUSE_DT_IN_TOKEN_BLOCKS = arm == "B"
                with call_replay(False):
                    ms = graph_us(f, reps=5, n=40) / 1e3
                    outs[arm] = graph_us.out.float().clone()
                rows.append(dict(kind="model_graph", model=name, B=B, arm=arm, ms=round(ms, 4)))
                print(rows[-1], flush=True)
            err = ((outs["B"] - outs["A"]).norm() / outs["A"].norm()).item()
            top1 = (outs["B"].argmax(-1) == outs["A"].argmax(-1)).float().mean().item()
            rows.append(dict(kind="model_graph_agree", model=name, B=B, rel_l2=err, top1_agree=top1))
            print(rows[-1], flush=True)
        vim.FUSE_DT_IN_TOKEN_BLOCKS = True
        del model
        torch.cuda.empty_cache()
        json.dump(rows, open(f"{OUT}/dtblocks-{'-'.join(parts)}.json", "w"), indent=1)
json.dump(rows, open(f"{OUT}/dtblocks-{'-'.join(parts)}.json", "w"), indent=1)
print("=== kernel us (graph replays)")
for r in rows:
    if r["kind"] == "kernel":
        print(r["E"], r["B"], r["variant"], r["us"], f"{r['err_vs_gemm']:.1e}")
print("=== model graph ms")
for r in rows:
    if r["kind"].startswith("model"):
        print(r)
