"""The one-pass scan's L1 prefetch D scan steps ahead (`_scan_kernel` L1_AHEAD; fwd.DEFAULT_L1_AHEAD), H200, bf16
halves: kernel medians (CUDA events) at Vim-Ti 1248 px and 224 px, batch 64, for the default mode's scan (delta,
gated), lean's (dt_proj fused, gated) and lean-gated's (fused, ungated), D in 0 (off), 4, 8, 16, 32, alternated
twice; outputs compared with D = 0 (a prefetch changes no value). Then whole Vim-Ti forwards at 1248/64 (default
and lean-gated) with D = 0 and the best D, A B B A. Writes $OUT/scanpf.json."""
import json, os, statistics, torch
from timing import event_median_ms as bench
from kernels.selective_scan import fwd
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
AHEADS = (0, 4, 8, 16, 32)
rows, errs = [], {}
for length in (6085, 197):
    for name, dt_fused, gated in (("delta_z", False, True), ("dt_z", True, True), ("dt_noz", True, False)):
        args = _scan_inputs(dirs=2, halves=True, dt_proj=dt_fused)(OpShape(batch=64, channels=384, length=length),
                                                                   torch.bfloat16, "cuda")
        if not gated:
            args["z"] = None
        out = torch.empty_like(args["u"])
        ref = None
        for rep in range(2):
            for d in (AHEADS if rep == 0 else AHEADS[::-1]):
                fwd.DEFAULT_L1_AHEAD = d
                ms = bench(lambda: fwd.bimamba_scan(**args, out=out), n=30)
                if ref is None:
                    ref = out.clone()
                errs[f"{name}/{length}/{d}"] = float((out.float() - ref.float()).abs().max())
                rows.append(dict(length=length, variant=name, ahead=d, ms=ms))
                print(rows[-1], flush=True)
        del args, out, ref
        torch.cuda.empty_cache()
fwd.DEFAULT_L1_AHEAD = 0
summary = {}
for r in rows:
    summary.setdefault(f"{r['variant']}/{r['length']}", {}).setdefault(r["ahead"], []).append(r["ms"])
summary = {k: {d: statistics.mean(v) for d, v in m.items()} for k, m in summary.items()}
best = min(AHEADS[1:], key=lambda d: summary["dt_noz/6085"][d] + summary["delta_z/6085"][d])
models = []
img = torch.randn(64, 3, 1248, 1248, device="cuda")
for mode in ("default", "lean-gated"):
    model = create_model("vim_t", img_size=1248, backend="triton", vim_memory=mode).cuda().eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for d in (0, best, best, 0):
            fwd.DEFAULT_L1_AHEAD = d
            ms = bench(lambda: model(img), n=10)
            models.append(dict(mode=mode, ahead=d, ms=ms, img_s=64e3 / ms))
            print(models[-1], flush=True)
    del model
    torch.cuda.empty_cache()
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               rows=rows, max_abs_diff_vs_d0=errs, summary=summary, best=best, models=models),
          open(f"{OUT}/scanpf.json", "w"), indent=1)
for k, m in summary.items():
    print(k, " ".join(f"D{d}:{v:.3f}" for d, v in m.items()))
print("max |diff| vs D=0:", max(errs.values()))
