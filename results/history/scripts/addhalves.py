"""The scan's two halves added before out_proj (K = E) against out_proj adding them (K = 2E), session al.
Part 1, GEMMs alone at the 1248 px batch-64 shapes of Vim-Ti/S/B (M = 64 x 6,085 token rows, bf16): out_proj on the
(M, 2E) halves with the weight doubled along K; the first half += the second (in place, row stride 2E) then
out_proj with K = E; that GEMM alone. Median of 20 CUDA-event timings after 5 warm-up calls.
Part 2, whole eager forwards (bf16 autocast, default memory mode, 1248 px, batch 64) of each model in
ADDHALVES_MODELS (default vim_t,vim_s,vim_b), A B B A in one process: A = ADD_HALVES_FROM_WIDTH None (the GEMM adds
them), B = 0 (every width adds first). Per arm: p50 of 10 forwards, peak allocated over one forward after a reset,
largest |logits - first A|. Writes $OUT/addhalves.json. usage (repo root, on the box):
python results/history/scripts/addhalves.py
Ran once, at commit d294d49 (session al; results/history/addhalves-h100-2026-12-07al/). The knob it switches,
`vimbench.models.vim.ADD_HALVES_FROM_WIDTH`, was removed after that measurement (slower in every case), so at later
commits the script needs that commit checked out."""
import json, os, statistics
import torch
import torch.nn.functional as F
import vimbench.models.vim as vim
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
MODELS = os.environ.get("ADDHALVES_MODELS", "vim_t,vim_s,vim_b").split(",")
RES, BATCH = 1248, 64
WIDTHS = {"vim_t": (192, 384), "vim_s": (384, 768), "vim_b": (768, 1536)}
result = {"gemm": [], "forward": []}


def timed(fn, iters=20, warm=5):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e))
    return statistics.median(times)


M = BATCH * (RES // 16) ** 2 + BATCH
for name in MODELS:
    d, e = WIDTHS[name]
    y = torch.randn(M, 2 * e, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(d, e, device="cuda", dtype=torch.bfloat16) / e ** 0.5
    w2 = torch.cat([w, w], dim=1)
    k2e = timed(lambda: F.linear(y, w2))
    add = timed(lambda: y[:, :e].add_(y[:, e:]))
    ke = timed(lambda: F.linear(y[:, :e], w))
    row = dict(model=name, M=M, D=d, E=e, gemm_k2e_ms=k2e, add_ms=add, gemm_ke_strided_ms=ke, add_then_ke_ms=add + ke,
               tflops_k2e=2 * M * 2 * e * d / k2e / 1e9, tflops_ke=2 * M * e * d / ke / 1e9)
    result["gemm"].append(row)
    print(f"{name}: out_proj K=2E {k2e:.3f} ms ({row['tflops_k2e']:.0f} TFLOP/s); add {add:.3f} + K=E {ke:.3f} "
          f"({row['tflops_ke']:.0f} TFLOP/s) = {add + ke:.3f} ms", flush=True)
    del y, w, w2
torch.cuda.empty_cache()

for name in MODELS:
    torch.manual_seed(0)
    model = create_model(name, img_size=RES, backend="triton").cuda().eval()
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(images)

    ref = None
    for arm in "ABBA":
        vim.ADD_HALVES_FROM_WIDTH = None if arm == "A" else 0
        for _ in range(3):
            out = forward()
        torch.cuda.synchronize(); del out
        torch.cuda.reset_peak_memory_stats()
        out = forward(); torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        ref = out.float() if ref is None else ref
        diff = (out.float() - ref).abs().max().item()
        scale = ref.abs().max().item()
        del out
        times = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); o = forward(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e)); del o
        p50 = statistics.median(times)
        result["forward"].append(dict(model=name, arm=arm, add_halves_from_width=vim.ADD_HALVES_FROM_WIDTH,
                                      p50_ms=p50, img_per_s=BATCH / p50 * 1e3, peak_allocated_gib=peak / 2**30,
                                      max_abs_diff_vs_first_A=diff, max_abs_logit=scale, times_ms=times))
        print(f"{name} {arm}: p50 {p50:.2f} ms, {BATCH / p50 * 1e3:.1f} img/s, peak {peak / 2**30:.3f} GiB, "
              f"max |logits - A| {diff:.3e} (max |logit| {scale:.2f})", flush=True)
    del model, images
    torch.cuda.empty_cache()
    vim.ADD_HALVES_FROM_WIDTH = None
result["gpu"] = torch.cuda.get_device_name()
result["commit"] = os.environ.get("VIMBENCH_GIT_COMMIT")
json.dump(result, open(os.path.join(OUT, "addhalves.json"), "w"), indent=1)
print("=== summary")
for r in result["gemm"]:
    print(f"{r['model']}: K=2E {r['gemm_k2e_ms']:.3f} ms vs add+K=E {r['add_then_ke_ms']:.3f} ms")
for name in MODELS:
    rows = [r for r in result["forward"] if r["model"] == name]
    a = statistics.mean(r["p50_ms"] for r in rows if r["arm"] == "A")
    b = statistics.mean(r["p50_ms"] for r in rows if r["arm"] == "B")
    print(f"{name}: forward A {a:.2f} ms, B {b:.2f} ms ({(b / a - 1) * 100:+.1f}%)")
