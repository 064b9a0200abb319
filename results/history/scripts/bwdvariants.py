"""Scan backward variants on the H200, bf16 gated halves (the bf16 model's form), training shapes: block_c 32 vs 16,
checkpoint chunk 64 vs 32 vs 16, sub_chunk 8; relative error vs the default launch; bwd/fwd ratio. Writes
$OUT/bwdvariants.json. (Replaces scanbwd.py, whose reuse-states knob no longer exists.)"""
import json, os, torch
from timing import event_median_ms as bench
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from kernels.selective_scan.bwd import bimamba_scan_bwd, scan_bwd_launch_config
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
OUT = os.environ.get("OUT", "/tmp")


rows = []
for B, L in ((8, 6085), (128, 197), (32, 1025)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    ref = None
    for chunk in (64, 32, 16):
        out, ck = bimamba_scan_fwd_save(**args, combine=False, chunk=chunk)
        fwd_ms = bench(lambda: bimamba_scan_fwd_save(**args, combine=False, chunk=chunk))
        g = torch.randn_like(out).mul_(0.1)
        if ref is None:
            g0 = g
            ref = bimamba_scan_bwd(g0, **args, checkpoints=ck, combine=False, chunk=chunk)
        else:
            g = g0
        variants = [("default", {})] + ([("block16", {"block_c": 16}), ("sub8", {"sub_chunk": 8})] if chunk == 64 else [])
        for name, kw in variants:
            try:
                o = bimamba_scan_bwd(g, **args, checkpoints=ck, combine=False, chunk=chunk, **kw)
                err = max(((x.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()
                          for x, r in zip(o, ref) if x is not None)
                ms = bench(lambda: bimamba_scan_bwd(g, **args, checkpoints=ck, combine=False, chunk=chunk, **kw))
                c = scan_bwd_launch_config(B, 384, L, chunk, False, None, kw.get("sub_chunk"), None, 16, kw.get("block_c"))
                rows.append(dict(B=B, L=L, chunk=chunk, variant=name, ms=round(ms, 3), fwd_ms=round(fwd_ms, 3),
                                 rel_err=err, groups=c.groups, block_c=c.walk.constexprs["BLOCK_C"]))
            except Exception as e:
                rows.append(dict(B=B, L=L, chunk=chunk, variant=name, error=repr(e)[:300]))
            print(rows[-1], flush=True)
        del out, ck
    del args, ref
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
          open(f"{OUT}/bwdvariants.json", "w"), indent=1)
print("B L chunk variant bwd_ms fwd_ms ratio groups block_c err")
for r in rows:
    if "ms" in r:
        print(r["B"], r["L"], r["chunk"], r["variant"], r["ms"], r["fwd_ms"], round(r["ms"] / r["fwd_ms"], 2),
              r["groups"], r["block_c"], f"{r['rel_err']:.1e}")
