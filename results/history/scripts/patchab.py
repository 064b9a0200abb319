"""The patch embedding as one GEMM over gathered patches (vimbench.models.vim.PatchEmbed.as_gemm, the default)
vs the nn.Conv2d it replaces (cuDNN, cudnn.benchmark off as the protocol says) on the H200. Part 1, the module
alone: CUDA-event medians under inference_mode (+ autocast for bf16), outputs compared. Part 2, whole Vim-Ti
forwards through the sweep's runner (vimbench.bench.runner.run_case), A B B A in one process, as_gemm set on the
built model. Writes $OUT/patchab.json."""
import json, os, torch
from timing import event_median_ms as bench
from vimbench.bench import runner
from vimbench.models import create_model
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
torch.backends.cudnn.benchmark = False
rows = []
for res, batch, dtype in ((1248, 64, torch.bfloat16), (1248, 64, torch.float32), (224, 64, torch.bfloat16),
                          (224, 1, torch.bfloat16)):
    pe = create_model("vim_t", img_size=res, backend="torch").patch_embed.cuda().eval()
    images = torch.randn(batch, 3, res, res, device="cuda")
    outs = {}
    for as_gemm in (False, True):
        pe.as_gemm = as_gemm
        act = dtype if dtype != torch.float32 else None

        def call():
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=act is not None):
                return pe(images, act)
        outs[as_gemm] = call().float()
        rows.append(dict(part="module", res=res, batch=batch, dtype=str(dtype), as_gemm=as_gemm, ms=bench(call)))
        print(rows[-1], flush=True)
    rows[-1]["max_abs_diff_vs_conv"] = (outs[True] - outs[False]).abs().max().item()
    rows[-1]["ref_abs_max"] = outs[False].abs().max().item()
    del pe, images, outs
    torch.cuda.empty_cache()

build = runner.build_model
for res, batch, dtype, memory in ((1248, 64, "bf16", "default"), (1248, 64, "bf16", "lean-gated"),
                                  (1248, 64, "fp32", "default"), (224, 64, "bf16", "default")):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype=dtype, implementation="triton", attn=None,
                  device="cuda", vim_memory=memory)
    for as_gemm in (False, True, True, False):
        def patched(k, _flag=as_gemm):
            model = build(k)
            model.patch_embed.as_gemm = _flag
            return model
        runner.build_model = patched
        r = runner.run_case(key, warmup=3, iters=10)
        rows.append(dict(part="model", res=res, batch=batch, dtype=dtype, vim_memory=memory, as_gemm=as_gemm,
                         status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib,
                         error=r.error))
        print(rows[-1], flush=True)
runner.build_model = build
json.dump(rows, open(f"{OUT}/patchab.json", "w"), indent=1)
