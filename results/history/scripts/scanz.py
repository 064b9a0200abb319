"""The inference scan with and without the z gate, one process (lean-gated's ungated scan took 76.8 ms per forward
vs lean's gated 70.3 in two profiles from two device calls: results/profiles/profile-vim_t-infer-bf16-1248-lean*-
h200-2026-12-03.jsonl). Vim-Ti 1248 px, batch 64 (and 224 px, batch 64), bf16 halves, dt_proj fused (lean) and
not (default), the halves into a separate buffer; kernel medians (CUDA events) A B B A. Writes $OUT/scanz.json."""
import json, os, torch
from timing import event_median_ms as bench
from kernels.selective_scan.fwd import bimamba_scan
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows = []
for length in (6085, 197):
    for fused in (True, False):
        args = _scan_inputs(dirs=2, halves=True, dt_proj=fused)(OpShape(batch=64, channels=384, length=length),
                                                                 torch.bfloat16, "cuda")
        out = torch.empty_like(args["u"])
        z = args.pop("z")
        for gated in (True, False, False, True):
            kw = dict(args, z=z if gated else None, out=out)
            ms = bench(lambda: bimamba_scan(**kw), n=30)
            rows.append(dict(length=length, dt_proj_fused=fused, gated=gated, ms=ms))
            print(rows[-1], flush=True)
        del args, out, z
        torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
          open(f"{OUT}/scanz.json", "w"), indent=1)
for r in rows:
    print(r["length"], "fused" if r["dt_proj_fused"] else "delta", "gated" if r["gated"] else "ungated",
          round(r["ms"], 3))
