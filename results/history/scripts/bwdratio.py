"""The scan backward against the checkpointing forward that training runs before it, both as CUDA-graph replays
(timing.graph_us: kernel time without host launch cost), combined bf16, Vim-Ti at 1248 px batch 8 and 224 px batch
128, the shipped launch defaults. Issue 10's "scan backward <= 3x our forward". Writes $OUT/bwdratio.json."""
import json, os, torch
from timing import graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows = []
for B, L in ((8, 6085), (128, 197)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    fwd_us = graph_us(lambda: bimamba_scan_fwd_save(**args, combine=True, chunk=64), reps=10)
    bwd_us = graph_us(lambda: bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64), reps=10)
    rows.append(dict(batch=B, length=L, fwd_save_us=fwd_us, bwd_us=bwd_us, ratio=bwd_us / fwd_us))
    print(rows[-1], flush=True)
    del args, out, ck, g
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               rows=rows), open(f"{OUT}/bwdratio.json", "w"), indent=1)
