"""dt_softplus's degree-4 log1p for 16-bit outputs (`kernels.dt_softplus.fwd.SHORT_LOG1P`, session am) in whole
forwards. Three arms per model, in one process, A B C C B A: A = the delta GEMM and the scan's own bias + softplus
(`vim.DT_SOFTPLUS_BEFORE_SCAN` False), B = dt_softplus with the scan's degree-7 log1p (session al's default), C =
dt_softplus with the degree-4 one (session am's default). bf16 autocast, default memory mode, 1248 px, batch 64,
eager, models in DTSP_MODELS (vim_t,vim_s,vim_b). Per arm: p50 of 10 forwards (CUDA events), peak allocated over one
forward after a reset, the largest |logits - first A's| and, for Vim-Ti, the largest |logits - the fp32 torch
backend's| over 4 of the images. Writes $OUT/dtsp4ab.json. usage (repo root, on the box):
python results/history/scripts/dtsp4ab.py"""
import json, os, statistics
import torch
import vimbench.models.vim as vim
from kernels.dt_softplus import fwd
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
MODELS = os.environ.get("DTSP_MODELS", "vim_t,vim_s,vim_b").split(",")
RES, BATCH = 1248, 64
ARMS = {"A": (False, True), "B": (True, False), "C": (True, True)}  # (DT_SOFTPLUS_BEFORE_SCAN, SHORT_LOG1P)
rows = []
for name in MODELS:
    torch.manual_seed(0)
    model = create_model(name, img_size=RES, backend="triton").cuda().eval()
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")

    def forward():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
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
    for arm in "ABCCBA":
        vim.DT_SOFTPLUS_BEFORE_SCAN, fwd.SHORT_LOG1P = ARMS[arm]
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
        rows.append(dict(model=name, arm=arm, dt_softplus=ARMS[arm][0], short_log1p=ARMS[arm][1], p50_ms=p50,
                         img_per_s=BATCH / p50 * 1e3, peak_allocated_gib=peak / 2**30, max_abs_diff_vs_first_A=diff,
                         max_abs_err_vs_fp32_torch=gold_err, times_ms=times))
        print(f"{name} {arm}: p50 {p50:.2f} ms, {BATCH / p50 * 1e3:.1f} img/s, peak {peak / 2**30:.3f} GiB, "
              f"|logits - A| {diff:.2e}, |logits - fp32 torch| {gold_err}", flush=True)
    del model, images
    torch.cuda.empty_cache()
vim.DT_SOFTPLUS_BEFORE_SCAN, fwd.SHORT_LOG1P = True, True
json.dump(dict(rows=rows, gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               res=RES, batch=BATCH, dtype="bf16 autocast"), open(os.path.join(OUT, "dtsp4ab.json"), "w"), indent=1)
print("=== summary (mean of each arm's two p50s)")
for name in MODELS:
    ms = {a: statistics.mean(r["p50_ms"] for r in rows if r["model"] == name and r["arm"] == a) for a in "ABC"}
    print(f"{name}: A gemm {ms['A']:.2f} ms, B deg7 {ms['B']:.2f} ({(ms['B'] / ms['A'] - 1) * 100:+.1f}%), "
          f"C deg4 {ms['C']:.2f} ({(ms['C'] / ms['A'] - 1) * 100:+.1f}%; vs B {(ms['C'] / ms['B'] - 1) * 100:+.1f}%)")
