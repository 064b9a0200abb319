"""The scan backward's walk over the channel blocks in one launch per wave of resident programs
(`bimamba_scan_bwd(channel_splits=)`, bwd.DEFAULT_CHANNEL_SPLITS: None = auto, 2 launches at the training shapes on
the H200) against one launch: (1) kernel medians at the training shapes (combined, bf16: Vim-Ti 1248 px batch 8,
224 px batch 128), alternated twice, the call's own peak (max_memory_allocated above what was allocated before),
gradients compared with the one-launch walk; 8 groups in one launch (one wave, no split) at 8 x 6,085 for
comparison; (2) whole captured Vim-Ti training steps A B B A through the sweep's runner (img/s, peak).
Writes $OUT/splitab.json."""
import json, os, torch
from timing import event_median_ms as bench
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
VARIANTS = (("auto", {}), ("one launch", dict(channel_splits=1)))
kernel_rows, diffs = [], {}
for B, L in ((8, 6085), (128, 197)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    ref = bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64, channel_splits=1)
    variants = VARIANTS + ((("8 groups, one launch", dict(channel_splits=1, chunks_per_program=12)),) if L > 1000 else ())
    for rep in range(2):
        for name, kw in (variants if rep == 0 else variants[::-1]):
            run = lambda: bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=64, **kw)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            grads = run()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
            diffs[f"{B}x{L}/{name}"] = max(float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30))
                                           for a, b in zip(grads, ref) if a is not None)
            del grads
            kernel_rows.append(dict(batch=B, length=L, variant=name, ms=bench(run), call_peak_mib=peak))
            print(kernel_rows[-1], flush=True)
    del args, out, ck, g, ref
    torch.cuda.empty_cache()

from vimbench.bench import runner
from vimbench.results import CaseKey
step_rows = []
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for splits in (None, 1, 1, None):
        bwd.DEFAULT_CHANNEL_SPLITS = splits
        r = runner.run_case(key, warmup=3, iters=10)
        row = dict(res=res, batch=batch, channel_splits="auto" if splits is None else splits, status=r.status,
                   img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error)
        step_rows.append(row)
        print(row, flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               kernel_rows=kernel_rows, max_rel_diff_vs_one_launch=diffs, step_rows=step_rows),
          open(f"{OUT}/splitab.json", "w"), indent=1)
print("max rel |diff| vs one launch:", diffs)
by = {}
for r in kernel_rows:
    by.setdefault((r["batch"], r["length"], r["variant"]), []).append((r["ms"], r["call_peak_mib"]))
for k, v in by.items():
    print(f"{k[0]}x{k[1]} {k[2]:22s} {sum(x for x, _ in v) / len(v):.3f} ms  call peak {max(p for _, p in v):.0f} MiB")
for r in step_rows:
    print(r["res"], r["batch"], r["channel_splits"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
