"""The chunk-parallel forward scan's L1 prefetch (passes 1 and 3, `chunked.DEFAULT_L1_AHEAD`; the one-pass
kernel's is on since session d): (1) kernel medians, alternated twice, outputs and checkpoints compared bitwise with
distance 0: the training forward `bimamba_scan_fwd_save(combine=True, chunk=64)` at Vim-Ti 1248 px batch 8, and the
inference halves at 1248 px batch 8 and 224 px batch 8 (chunked under capture only, so forced split 32 there);
(2) whole captured Vim-Ti training steps at 1248 px batch 8, A B B A (0 vs the fastest distance at the training
forward). Writes $OUT/chunkpf.json. Run with VIMBENCH_CALL_REPLAY=0 (the launch config is read per call)."""
import json, os, torch
from timing import event_median_ms as bench
from kernels.selective_scan import chunked
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.fwd import bimamba_scan
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
DISTANCES = (0, 2, 4, 8)
rows, diffs = [], {}
cases = (("train 8x6085", 8, 6085, lambda a: bimamba_scan_fwd_save(**a, combine=True, chunk=64)),
         ("infer halves 8x6085", 8, 6085, lambda a: bimamba_scan(**a, combine=False)),
         ("infer halves 8x197 split32", 8, 197, lambda a: bimamba_scan(**a, combine=False, split=32)))
for name, B, L, fn in cases:
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    chunked.DEFAULT_L1_AHEAD = 0
    ref = fn(args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    for rep in range(2):
        for d in (DISTANCES if rep == 0 else DISTANCES[::-1]):
            chunked.DEFAULT_L1_AHEAD = d
            out = fn(args)
            out = out if isinstance(out, tuple) else (out,)
            diffs[f"{name}/{d}"] = max(float((a.float() - b.float()).abs().max()) for a, b in zip(out, ref))
            rows.append(dict(case=name, l1_ahead=d, ms=bench(lambda: fn(args))))
            print(rows[-1], flush=True)
    del args, ref
    torch.cuda.empty_cache()
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["l1_ahead"]), []).append(r["ms"])
mean = {k: sum(v) / len(v) for k, v in mean.items()}
best = min(DISTANCES, key=lambda d: mean[("train 8x6085", d)])
step_rows = []
if best:
    from vimbench.bench import runner
    from vimbench.results import CaseKey
    key = CaseKey(model="vim_t", res=1248, batch=8, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for d in (0, best, best, 0):
        chunked.DEFAULT_L1_AHEAD = d
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(l1_ahead=d, status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                              peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               kernel_rows=rows, max_abs_diff_vs_0=diffs, step_rows=step_rows), open(f"{OUT}/chunkpf.json", "w"), indent=1)
print("max |diff| vs 0:", diffs)
for k, v in mean.items():
    print(f"{k[0]:28s} L1_AHEAD {k[1]}: {v:.4f} ms")
for r in step_rows:
    print("1248/8 step, L1_AHEAD", r["l1_ahead"], r["img_s"] and round(r["img_s"], 1), "img/s")
