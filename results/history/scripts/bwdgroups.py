"""The scan backward's split of L into chunk groups with the automatic (capped, no-prefetch) walk: kernel medians at
Vim-Ti 1248 px, batch 8 (96 checkpoint chunks; the default picks 16 groups = 3,072 programs, two waves of 12 per SM
on 132 SMs) and 512 px, batch 32, for chunks_per_program giving 4-48 groups; the combined form, as the training step
runs it. Writes $OUT/bwdgroups.json."""
import json, os, torch
from timing import event_median_ms as bench
from kernels.selective_scan.bwd import bimamba_scan_bwd, scan_bwd_launch_config
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows = []
for B, L in ((8, 6085), (32, 1025)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    chunks = -(-L // 64)
    for cpp in sorted({max(1, -(-chunks // groups)) for groups in (1, 4, 6, 8, 11, 12, 16, 20, 24, 32, 48)}):
        cfg = scan_bwd_launch_config(B, 384, L, 64, False, chunks_per_program=cpp)
        ms = bench(lambda: bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64, chunks_per_program=cpp))
        rows.append(dict(batch=B, length=L, chunks_per_program=cpp, groups=cfg.groups,
                         walk_programs=cfg.walk.grid[0] * cfg.walk.grid[1] * cfg.walk.grid[2],
                         prefetch=cfg.walk.constexprs["PREFETCH"], maxnreg=cfg.walk.maxnreg, ms=ms))
        print(rows[-1], flush=True)
    del args, out, ck, g
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
          open(f"{OUT}/bwdgroups.json", "w"), indent=1)
