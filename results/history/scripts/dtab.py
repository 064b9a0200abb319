"""Inference's delta GEMM with x_dbl's pad (K = 16, vimbench.models.vim.PAD_DT_GEMM) vs the dt columns alone (K = 12,
a cutlass align2 kernel in lprof-h200-2026-12-03.json): eager Vim-Ti bf16 forwards at 1248 px batch 64 (memory mode
default, GPU-bound) and 224 px batch 64, A B B A twice, CUDA-event medians; outputs compared. Writes $OUT/dtab.json."""
import json, os, torch
from timing import event_median_ms as bench
import vimbench.models.vim as V
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
rows, diffs = [], {}
for res, batch in ((1248, 64), (224, 64))[:int(os.environ.get("DTAB_CASES", 2))]:
    model = create_model("vim_t", img_size=res, backend="triton").cuda().eval()
    V.set_dt_proj_fusion(model, False)  # the delta GEMM at every size (224 px batch 64 would fuse automatically)
    x = torch.randn(batch, 3, res, res, device="cuda")
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x)
    outs = {}
    for pad in (False, True):
        V.PAD_DT_GEMM = pad
        outs[pad] = f().float()
    diffs[f"{res}/{batch}"] = float((outs[True] - outs[False]).abs().max())
    for rep in range(2):
        for pad in (False, True, True, False):
            V.PAD_DT_GEMM = pad
            ms = bench(f, n=10 if res > 512 else 30)
            rows.append(dict(res=res, batch=batch, pad=pad, ms=ms, img_s=batch / ms * 1e3))
            print(rows[-1], flush=True)
    del model; torch.cuda.empty_cache()
V.PAD_DT_GEMM = True
json.dump(dict(device=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows,
               max_abs_diff=diffs), open(f"{OUT}/dtab.json", "w"), indent=1)
for res in sorted({r["res"] for r in rows}):
    for pad in (False, True):
        ms = sorted(r["ms"] for r in rows if r["res"] == res and r["pad"] == pad)
        print(f"{res} px b64 pad={pad}: median {ms[len(ms)//2]:.2f} ms  ({64 / ms[len(ms)//2] * 1e3:.0f} img/s)")
print("max |diff|:", diffs)
