"""Scan backward variants on the H200 (bf16, model's combined form): block_c 32 vs 16, groups; correctness vs default."""
import json, os, statistics, torch
from vimbench.kerneltools.kernel_ops import _scan_bwd_inputs
from vimbench.kerneltools.registry import OpShape
from kernels.selective_scan.bwd import bimamba_scan_bwd, scan_bwd_launch_config
import kernels.selective_scan.bwd as bwdmod
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
OUT = os.environ.get("OUT", "/tmp")

def bench(fn, n=30):
    for _ in range(3): fn()
    torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)

rows = []
for B, L in ((8, 6085), (128, 197), (32, 1025)):
    args = _scan_bwd_inputs(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    args["combine"] = True
    args["grad_out"] = args["grad_out"][0].clone() if args["grad_out"].dim() == 4 else args["grad_out"]
    # forward timing for the ratio (training forward, combined)
    fa = {k: v for k, v in args.items() if k not in ("grad_out", "checkpoints")}
    fwd_ms = bench(lambda: bimamba_scan_fwd_save(**fa))
    bwdmod.DEFAULT_REUSE_STATES = False
    ref = bimamba_scan_bwd(**args)
    variants = [("reuse", {}), ("noreuse", {}), ("reuse", {}), ("noreuse", {})]
    for name, kw in variants:
        bwdmod.DEFAULT_REUSE_STATES = name == "reuse"
        try:
            out = bimamba_scan_bwd(**args, **kw)
            err = max(((o.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()
                      for o, r in zip(out, ref) if o is not None)
            ms = bench(lambda: bimamba_scan_bwd(**args, **kw))
            c = scan_bwd_launch_config(B, 384, L, 64, False, kw.get("chunks_per_program"), None, None, 16, kw.get("block_c"))
            rows.append(dict(B=B, L=L, variant=name, ms=round(ms, 3), fwd_ms=round(fwd_ms, 3), rel_err=err,
                             groups=c.groups, block_c=c.walk.constexprs["BLOCK_C"]))
        except Exception as e:
            rows.append(dict(B=B, L=L, variant=name, error=repr(e)[:200]))
        print(rows[-1], flush=True)
    del args, ref; torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/scanbwd.json", "w"), indent=1)
print("B L variant ms fwd ratio groups err")
for r in rows:
    if "ms" in r: print(r["B"], r["L"], r["variant"], r["ms"], r["fwd_ms"], round(r["ms"]/r["fwd_ms"], 2), r["groups"], f"{r['rel_err']:.1e}")
