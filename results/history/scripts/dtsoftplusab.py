"""delta made already softplus'd (ops.dt_softplus, `vim.DT_SOFTPLUS_BEFORE_SCAN`) against the delta GEMM with the
bias and softplus in the scan, session al. Part 1, kernels at the 1248 px batch-64 shapes (median of 20 CUDA-event
timings): the model's delta GEMM (bmm of the bf16 dt columns padded to 16, bf16 out, plus the cast of the fp32 dt
columns) against dt_softplus (fp32 dt columns, fp16 out). Part 2, whole eager forwards (bf16 autocast, and fp32 for
Vim-Ti; default memory mode, 1248 px, batch 64) of each model in DTSP_MODELS (vim_t,vim_s,vim_b), A B B A in one
process: A = DT_SOFTPLUS_BEFORE_SCAN False, B = True. Per arm: p50 of 10 forwards, peak allocated over one forward
after a reset, largest |logits - first A|, and the largest |logits - the fp32 torch backend| over 4 of the images
(Vim-Ti only: the accuracy reference). Writes $OUT/dtsoftplusab.json.
usage (repo root, on the box): python results/history/scripts/dtsoftplusab.py"""
import json, os, statistics
import torch
import vimbench.models.vim as vim
from kernels.dt_softplus.op import dt_softplus
from vimbench.layout import XDblLayout
from vimbench.models.registry import create_model
from vimbench import geometry

OUT = os.environ.get("OUT", "/tmp")
MODELS = os.environ.get("DTSP_MODELS", "vim_t,vim_s,vim_b").split(",")
RES, BATCH = 1248, 64
DIMS = {"vim_t": 192, "vim_s": 384, "vim_b": 768}
result = {"kernels": [], "forward": []}


def timed(fn, iters=20, warm=5):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e))
    return statistics.median(times)


M = BATCH * ((RES // 16) ** 2 + 1)
for name in MODELS:
    d = DIMS[name]
    e, r = 2 * d, geometry.dt_rank(d)
    lay = XDblLayout(r, 16)
    x_dbl = torch.randn(2, M, lay.width, device="cuda")
    w = (torch.randn(2, r, e, device="cuda") * r ** -0.5).to(torch.bfloat16)
    w16 = torch.cat([w, w.new_zeros(2, 16 * ((r + 15) // 16) - r, e)], dim=1)
    bias = torch.randn(2, e, device="cuda") - 3
    cols = slice(lay.dt.start, lay.dt.start + w16.shape[1])
    gemm = timed(lambda: torch.bmm(x_dbl[..., cols].to(torch.bfloat16), w16))
    fused = timed(lambda: dt_softplus(x_dbl[..., lay.dt], w, bias, torch.float16))
    result["kernels"].append(dict(model=name, M=M, E=e, R=r, cast_and_gemm_ms=gemm, dt_softplus_ms=fused,
                                  dt_softplus_gb_per_s=2 * M * e * 2 / fused / 1e6))
    print(f"{name}: cast + delta GEMM {gemm:.3f} ms, dt_softplus {fused:.3f} ms "
          f"({2 * M * e * 2 / fused / 1e6:.0f} GB/s written)", flush=True)
    del x_dbl, w, w16
torch.cuda.empty_cache()

cases = [(n, torch.bfloat16) for n in MODELS] + ([("vim_t", torch.float32)] if "vim_t" in MODELS else [])
for name, dtype in cases:
    torch.manual_seed(0)
    model = create_model(name, img_size=RES, backend="triton").cuda().eval()
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype != torch.float32):
            return model(images)

    gold = None
    if name == "vim_t":
        ref = create_model(name, img_size=RES, backend="torch").cuda().eval()
        ref.load_state_dict(model.state_dict())
        with torch.inference_mode():
            gold = ref(images[:4]).double()
        del ref
        torch.cuda.empty_cache()
    first = None
    for arm in "ABBA":
        vim.DT_SOFTPLUS_BEFORE_SCAN = arm == "B"
        for _ in range(3):
            out = forward()
        torch.cuda.synchronize(); del out
        torch.cuda.reset_peak_memory_stats()
        out = forward(); torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        first = out.float() if first is None else first
        diff = (out.float() - first).abs().max().item()
        gold_err = None if gold is None else (out[:4].double() - gold).abs().max().item()
        del out
        times = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); o = forward(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e)); del o
        p50 = statistics.median(times)
        result["forward"].append(dict(model=name, dtype=str(dtype), arm=arm, dt_softplus=arm == "B", p50_ms=p50,
                                      img_per_s=BATCH / p50 * 1e3, peak_allocated_gib=peak / 2**30,
                                      max_abs_diff_vs_first_A=diff, max_abs_err_vs_fp32_torch=gold_err,
                                      times_ms=times))
        print(f"{name} {dtype} {arm}: p50 {p50:.2f} ms, {BATCH / p50 * 1e3:.1f} img/s, peak {peak / 2**30:.3f} GiB, "
              f"|logits - A| {diff:.2e}, |logits - fp32 torch| {gold_err}", flush=True)
    del model, images
    torch.cuda.empty_cache()
vim.DT_SOFTPLUS_BEFORE_SCAN = True
result["gpu"] = torch.cuda.get_device_name()
result["commit"] = os.environ.get("VIMBENCH_GIT_COMMIT")
json.dump(result, open(os.path.join(OUT, "dtsoftplusab.json"), "w"), indent=1)
print("=== summary")
for k in result["kernels"]:
    print(f"{k['model']}: cast+GEMM {k['cast_and_gemm_ms']:.3f} ms vs dt_softplus {k['dt_softplus_ms']:.3f} ms")
for name, dtype in cases:
    rows = [r for r in result["forward"] if r["model"] == name and r["dtype"] == str(dtype)]
    a = statistics.mean(r["p50_ms"] for r in rows if r["arm"] == "A")
    b = statistics.mean(r["p50_ms"] for r in rows if r["arm"] == "B")
    errs = {r["arm"]: r["max_abs_err_vs_fp32_torch"] for r in rows}
    print(f"{name} {dtype}: forward A {a:.2f} ms, B {b:.2f} ms ({(b / a - 1) * 100:+.1f}%); err vs fp32 torch {errs}")
