"""Chunk-parallel scan forward at short sequences and small batches, timed as it runs under CUDA graphs (20 launches
captured, replays timed: kernel time plus in-graph launch gaps, no host cost). do_bench had ruled it out at 197 tokens
(0.18 vs 0.07 ms), but do_bench of a 3-launch op at these sizes measures mostly the host. Then the whole Vim-Ti/S/B
forward at 224 px, batch 1/2/8, as a CUDA graph with the chunked split forced; then the scan backward at block_c 16
vs 32 (the untested knob). Prints a short table; writes $OUT/chunkb1.json."""
import json, os, statistics, torch
from vimbench.kerneltools.kernel_ops import _scan_inputs, _scan_bwd_inputs
from vimbench.kerneltools.registry import OpShape
from kernels.selective_scan import fwd, chunked
from kernels.selective_scan.bwd import bimamba_scan_bwd
from vimbench.models.registry import create_model
OUT = os.environ.get("OUT", "/tmp")
orig_cfg = chunked.chunked_scan_launch_config

def graph_us(fn, reps=20, n=30):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for _ in range(reps): fn()
    g.replay(); torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts) * 1e3 / reps

def force(T):
    def cfg(batch, channels, length, n_dir, n_state, interpreted, sm, split=None, save_every=0):
        return orig_cfg(batch, channels, length, n_dir, n_state, interpreted, sm,
                        T if (split is None and T is not None) else split, save_every)
    chunked.chunked_scan_launch_config = cfg if T is not None else orig_cfg

def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()

rows = []
def dump():
    json.dump(dict(env=dict(torch=torch.__version__, gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT")),
                   rows=rows), open(f"{OUT}/chunkb1.json", "w"), indent=1)

def part_scan():
    for E, L, batches, splits in ((384, 197, (1, 4, 8, 16), (16, 32, 64)), (768, 197, (1,), (16, 32)),
                                  (384, 577, (1,), (32, 64))):
        for B in batches:
            args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=B, channels=E, length=L), torch.bfloat16, "cuda")
            ref = fwd.bimamba_scan(**args, split=0)
            for T in (0,) + splits:
                try:
                    out = fwd.bimamba_scan(**args, split=T)
                    us = graph_us(lambda: fwd.bimamba_scan(**args, split=T))
                    rows.append(dict(kind="scan", E=E, L=L, B=B, split=T, us=round(us, 2), err=rel(out, ref)))
                except Exception as e:
                    rows.append(dict(kind="scan", E=E, L=L, B=B, split=T, error=repr(e)[:300]))
                print(rows[-1], flush=True)
            del args; torch.cuda.empty_cache()


def part_model():
    for name, batches in (("vim_t", (1, 2, 8)), ("vim_s", (1,)), ("vim_b", (1,))):
        model = create_model(name, img_size=224, backend="triton").cuda().eval()
        for B in batches:
            x = torch.randn(B, 3, 224, 224, device="cuda")
            def f():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                    return model(x)
            force(None); ref = f().float()
            for T in (None, 16, 32, None, 16, 64):
                force(T)
                try:
                    err = rel(f(), ref)
                    ms = graph_us(f, reps=5, n=40) / 1e3
                    rows.append(dict(kind="model_graph", model=name, B=B, split=T, ms=round(ms, 4), err=err))
                except Exception as e:
                    rows.append(dict(kind="model_graph", model=name, B=B, split=T, error=repr(e)[:300]))
                print(rows[-1], flush=True)
            force(None)
        del model; torch.cuda.empty_cache()


def bench(fn, n=20):
    for _ in range(3): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)

def part_bwd():
    for B, L in ((128, 197), (8, 6085), (32, 1025)):
        args = _scan_bwd_inputs(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
        ref = bimamba_scan_bwd(**args)
        for bc in (None, 16, None, 16):
            try:
                out = bimamba_scan_bwd(**args, block_c=bc)
                err = max(rel(o, r) for o, r in zip(out, ref) if o is not None)
                rows.append(dict(kind="scan_bwd", B=B, L=L, block_c=bc, ms=round(bench(lambda: bimamba_scan_bwd(**args, block_c=bc)), 4), err=err))
            except Exception as e:
                rows.append(dict(kind="scan_bwd", B=B, L=L, block_c=bc, error=repr(e)[:300]))
            print(rows[-1], flush=True)
        del args, ref; torch.cuda.empty_cache()


for part in (part_model, part_scan):
    part()
    dump()
print("=== table")
for r in rows:
    print(" ".join(f"{k}={v}" for k, v in r.items() if k != "error"), ("ERROR " + r["error"][:120]) if "error" in r else "")
