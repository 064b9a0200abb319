"""The scan backward walk compiled once per direction with constexpr token strides (`bwd._bwd_walk`) against the walk of
the commit given as BASE (its bwd.py, loaded beside the new one as a separate module: make it with
`git show BASE:kernels/selective_scan/bwd.py > results/history/scripts/bwd_base.py`, not committed).
(1) kernel medians, both forms (combined, halves) in bf16 at the training shapes (Vim-Ti 1248 px batch 8, 224 px
batch 128; fp32 combined at 1248 px), old/new alternated twice, event medians and CUDA-graph replays; every gradient
compared bitwise with the old kernel's; (2) whole captured Vim-Ti training steps old new new old through the sweep's
runner (img/s, peak), the model's scan backward switched by patching kernels.selective_scan.bwd.bimamba_scan_bwd.
Writes $OUT/bwdaddr.json."""
import importlib.util, json, os, pathlib, sys, torch
from timing import event_median_ms, graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
spec = importlib.util.spec_from_file_location("bwd_base", pathlib.Path(__file__).with_name("bwd_base.py"))
old = sys.modules["bwd_base"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
NEW_FN = bwd.bimamba_scan_bwd
IMPLS = (("old", old.bimamba_scan_bwd), ("new", NEW_FN))
kernel_rows, equal = [], {}
for B, L, dtype, combine in ((8, 6085, torch.bfloat16, True), (8, 6085, torch.bfloat16, False),
                             (128, 197, torch.bfloat16, True), (8, 6085, torch.float32, True)):
    form = ("combined" if combine else "halves") + ("" if dtype == torch.bfloat16 else "-fp32")
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), dtype, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=combine, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(out).mul_(0.1)
    grads = {tag: fn(g, **args, checkpoints=ck, combine=combine, chunk=CHECKPOINT_CHUNK) for tag, fn in IMPLS}
    pairs = [(a, b) for a, b in zip(grads["old"], grads["new"]) if a is not None]
    equal[f"{B}x{L}/{form}"] = dict(
        bitwise=all(torch.equal(a, b) for a, b in pairs),
        max_rel=max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                    for a, b in pairs))
    del grads
    for rep in range(2):
        for tag, fn in (IMPLS if rep == 0 else IMPLS[::-1]):
            run = lambda: fn(g, **args, checkpoints=ck, combine=combine, chunk=CHECKPOINT_CHUNK)
            kernel_rows.append(dict(batch=B, length=L, form=form, impl=tag, event_ms=event_median_ms(run),
                                    graph_us=graph_us(run, reps=10)))
            print(kernel_rows[-1], flush=True)
    del args, out, ck, g
    torch.cuda.empty_cache()
print("gradients old vs new:", equal, flush=True)

from vimbench.bench import runner
from vimbench.results import CaseKey
step_rows = []
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("old", "new", "new", "old"):
        bwd.bimamba_scan_bwd = dict(IMPLS)[tag]
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, impl=tag, status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                              peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
bwd.bimamba_scan_bwd = NEW_FN
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               baseline_commit=os.environ.get("BASE"), kernel_rows=kernel_rows, grads_bitwise_equal=equal, step_rows=step_rows),
          open(f"{OUT}/bwdaddr.json", "w"), indent=1)
mean = {}
for r in kernel_rows:
    mean.setdefault((r["batch"], r["length"], r["form"], r["impl"]), []).append((r["event_ms"], r["graph_us"]))
print("shape form impl event_ms graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]}x{k[1]} {k[2]:9s} {k[3]} {sum(a for a, _ in v) / 2:.3f} {sum(b for _, b in v) / 2:.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["impl"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
