"""The scan backward walk's scratch from L1 (`bimamba_scan_bwd(scratch_ahead=D)`: a `prefetch.global.L1` per walk
step of the scratch tile read D steps on, lane l naming row l % 16) and L2 eviction hints (`evict_hints=True`:
scratch evict_last, per-token gradient stores evict_first), against the shipped walk (capped at 168 registers,
pairs, two launches). (1) kernel medians at the training shapes (combined bf16: Vim-Ti 1248 px batch 8, 224 px
batch 128), alternated twice, gradients compared bitwise with the default; (2) if SCRATCHPF_STEPS=1: whole captured
Vim-Ti training steps A B B A (default vs the fastest variant at 8 x 6,085). Writes $OUT/scratchpf.json."""
import json, os, torch
from timing import event_median_ms as bench
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
ALL = {"default": {}, "sa2": dict(scratch_ahead=2), "sa4": dict(scratch_ahead=4), "sa8": dict(scratch_ahead=8),
       "hints": dict(evict_hints=True), "sa4+l1_2": dict(scratch_ahead=4, l1_ahead=2),
       "sa4+hints": dict(scratch_ahead=4, evict_hints=True), "l1_2": dict(l1_ahead=2), "l1_4": dict(l1_ahead=4),
       "sa2+l1_2": dict(scratch_ahead=2, l1_ahead=2), "sa4+l1_4": dict(scratch_ahead=4, l1_ahead=4),
       "sa8+l1_4": dict(scratch_ahead=8, l1_ahead=4)}
# SCRATCHPF_VARIANTS: comma-separated names of ALL (the first session-h call ran the first seven)
NAMES = os.environ.get("SCRATCHPF_VARIANTS", "default,sa2,sa4,sa8,hints,sa4+l1_2,sa4+hints").split(",")
VARIANTS = tuple((n, ALL[n]) for n in NAMES)
kernel_rows, diffs = [], {}
for B, L in ((8, 6085), (128, 197)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    ref = bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64)
    for rep in range(2):
        for name, kw in (VARIANTS if rep == 0 else VARIANTS[::-1]):
            run = lambda: bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64, **kw)
            grads = run()
            diffs[f"{B}x{L}/{name}"] = max(float((a.float() - b.float()).abs().max()) for a, b in zip(grads, ref)
                                           if a is not None)
            del grads
            kernel_rows.append(dict(batch=B, length=L, variant=name, ms=bench(run)))
            print(kernel_rows[-1], flush=True)
    del args, out, ck, g, ref
    torch.cuda.empty_cache()

by = {}
for r in kernel_rows:
    by.setdefault((r["batch"], r["length"], r["variant"]), []).append(r["ms"])
mean = {k: sum(v) / len(v) for k, v in by.items()}
best = min((k[2] for k in mean if k[0] == 8), key=lambda n: mean[(8, 6085, n)])
step_rows = []
if os.environ.get("SCRATCHPF_STEPS") == "1" and best != "default":
    from vimbench.bench import runner
    from vimbench.results import CaseKey
    kw = dict(VARIANTS)[best]
    for res, batch in ((1248, 8), (224, 128)):
        key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                      device="cuda", mode="train", compile="cuda-graphs")
        for variant in ("default", best, best, "default"):
            on = variant != "default"
            bwd.DEFAULT_SCRATCH_AHEAD = kw.get("scratch_ahead", 0) if on else 0
            bwd.DEFAULT_EVICT_HINTS = kw.get("evict_hints", False) if on else False
            bwd.DEFAULT_L1_AHEAD = kw.get("l1_ahead") if on else None
            r = runner.run_case(key, warmup=3, iters=10)
            row = dict(res=res, batch=batch, variant=variant, status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                       peak_alloc_mib=r.peak_alloc_mib, error=r.error)
            step_rows.append(row)
            print(row, flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               kernel_rows=kernel_rows, max_abs_diff_vs_default=diffs, step_rows=step_rows),
          open(f"{OUT}/scratchpf.json", "w"), indent=1)
print("max |diff| vs default:", diffs)
for k, v in mean.items():
    print(f"{k[0]}x{k[1]} {k[2]:12s} {v:.3f} ms")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
