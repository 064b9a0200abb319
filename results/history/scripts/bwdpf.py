"""The scan backward walk's L1 prefetch (`bimamba_scan_bwd(l1_ahead=D)`, `_scan_bwd_kernel` L1_AHEAD; off by
default until this runs): kernel medians at the training shapes (combined, bf16: Vim-Ti 1248 px batch 8, 224 px
batch 128, 512 px batch 32), D in 0, 2, 4, 8, alternated twice, outputs compared with D = 0 (bitwise equal
expected: a prefetch changes no value). Not yet run (written 2026-12-03 after the session's device time was spent).
Writes $OUT/bwdpf.json."""
import json, os, torch
from timing import event_median_ms as bench
from kernels.selective_scan.bwd import bimamba_scan_bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
AHEADS = (0, 2, 4, 8)
rows, diffs = [], {}
for B, L in ((8, 6085), (128, 197), (32, 1025)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    ref = None
    for rep in range(2):
        for d in (AHEADS if rep == 0 else AHEADS[::-1]):
            run = lambda: bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64, l1_ahead=d)
            grads = run()
            if ref is None:
                ref = grads
            diffs[f"{B}x{L}/{d}"] = max(float((a.float() - b.float()).abs().max()) for a, b in zip(grads, ref)
                                        if a is not None)
            rows.append(dict(batch=B, length=L, l1_ahead=d, ms=bench(run)))
            print(rows[-1], flush=True)
    del args, out, ck, g, ref
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               rows=rows, max_abs_diff_vs_d0=diffs), open(f"{OUT}/bwdpf.json", "w"), indent=1)
print("max |diff| vs D=0:", max(diffs.values()))
