"""The scan backward walk from every other stored state (`bimamba_scan_bwd(pairs=True)`, `_scan_bwd_kernel` PAIRS:
half the scratch written and read; an odd step's entering state rebuilt by one recurrence step): kernel medians
at the training shapes (combined, bf16: Vim-Ti 1248 px batch 8, 224 px batch 128), capped walks (prefetch off)
at 168 / 184 registers, pairs off / on, alternated twice, gradients compared with the default launch (the rebuilt
states are the recomputation's own arithmetic: bitwise equal expected). Static (sm_90): pairs at 168 registers
spills 48 B (triton 3.6 and 3.8), at 176 24 B. Writes $OUT/bwdpairs.json."""
import json, os, torch
from timing import event_median_ms as bench
from kernels.selective_scan.bwd import bimamba_scan_bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
VARIANTS = ((False, 168), (True, 168), (False, 184), (True, 184))
rows, diffs = [], {}
for B, L in ((8, 6085), (128, 197)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    ref = bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64)
    for rep in range(2):
        for pairs, cap in (VARIANTS if rep == 0 else VARIANTS[::-1]):
            run = lambda: bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64, prefetch=False,
                                           maxnreg=cap, pairs=pairs)
            grads = run()
            diffs[f"{B}x{L}/pairs={pairs}/r{cap}"] = max(float((a.float() - b.float()).abs().max())
                                                         for a, b in zip(grads, ref) if a is not None)
            rows.append(dict(batch=B, length=L, pairs=pairs, maxnreg=cap, ms=bench(run)))
            print(rows[-1], flush=True)
    del args, out, ck, g, ref
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               rows=rows, max_abs_diff_vs_default=diffs), open(f"{OUT}/bwdpairs.json", "w"), indent=1)
print("max |diff| vs the default launch:", diffs)
by = {}
for r in rows:
    by.setdefault((r["batch"], r["length"], r["pairs"], r["maxnreg"]), []).append(r["ms"])
for k, v in sorted(by.items()):
    print(f"{k[0]}x{k[1]} pairs={k[2]!s:5} r{k[3]}: {sum(v) / len(v):.3f} ms")
