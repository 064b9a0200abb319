"""One scan launch per process, for Nsight Compute (ncu): `python ncuscan.py VARIANT` runs the variant twice
(the first launch compiles; ncu profiles the second: --launch-skip 1 --launch-count 1). Variants, bf16, Vim-Ti
1248 px: fwd_delta_z (the default mode's scan: delta precomputed, gated halves, batch 64), fwd_dt_z (dt_proj
fused, gated: lean), fwd_dt_noz (fused, ungated: lean-gated), bwd (the training step's combined backward at
batch 8; its walk kernel is _scan_bwd_kernel; checkpoints every CHUNK tokens, env, default 64). Used by ncu.sh."""
import os, sys, torch
from kernels.selective_scan.fwd import bimamba_scan, bimamba_scan_fwd_save
from kernels.selective_scan.bwd import bimamba_scan_bwd
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

variant = sys.argv[1]
if variant == "bwd":
    args = _scan_inputs(dirs=2)(OpShape(batch=8, channels=384, length=6085), torch.bfloat16, "cuda")
    chunk = int(os.environ.get("CHUNK", "64"))
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=chunk)
    g = torch.randn_like(out).mul_(0.1)
    for _ in range(2):
        bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=chunk)
else:
    args = _scan_inputs(dirs=2, halves=True, dt_proj=variant.startswith("fwd_dt"))(
        OpShape(batch=64, channels=384, length=6085), torch.bfloat16, "cuda")
    if variant.endswith("noz"):
        args["z"] = None
    out = torch.empty_like(args["u"])
    for _ in range(2):
        bimamba_scan(**args, out=out)
torch.cuda.synchronize()
print("done", variant)
