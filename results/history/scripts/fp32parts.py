"""Where Vim-Ti's fp32 forward (1248 px, batch 64; TF32 off) can still lose GEMM time (session an; issue 12's fp32
target). Session am's profile put 55.6 ms on 48 calls of one cuBLAS FFMA kernel (128 x 64 tiles) shared by out_proj
and x_proj, 1.16 ms per call on average: x_proj's FLOP floor is ~0.4 ms, so the split matters.
Part 1, layer 0's shapes with random operands laid out as the mixer lays them out (u from the conv: (2, B, E, L)
stored (B, L, 2, E); x_proj_t (2, E, 48) column-major), median of 20 CUDA-event timings each: in_proj, x_proj as
the mixer's torch.bmm, x_proj_rows (our tl.dot kernel, ieee fp32) at several tiles (max |diff| vs the bmm), out_proj.
Part 2, whole eager fp32 forwards: A = shipped, B = dt_proj fused into the scan (mixer.fuse_dt_proj = True: no delta
GEMM, no delta tensor); A B B A, p50 of 8, peak allocated, |logits - fp32 torch backend| over 4 images.
Writes $OUT/fp32parts.json. usage (repo root, on the box): python results/history/scripts/fp32parts.py"""
import json, os, statistics
import torch
import torch.nn.functional as F
from kernels.conv1d import xproj
from vimbench.models.registry import create_model

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
OUT = os.environ.get("OUT", "/tmp")
RES, BATCH, D, W = 1248, 64, 192, 48
E, L = 2 * D, (RES // 16) ** 2 + 1
M = BATCH * L
TILES = [(16, 64, 4, 3), (32, 32, 4, 3), (64, 32, 4, 3), (64, 16, 4, 3), (128, 16, 4, 3), (64, 32, 8, 3),
         (128, 32, 8, 3), (32, 64, 4, 2)]
result = {"kernels": {}, "x_proj_rows": [], "forward": []}


def timed(fn, iters=20, warm=3):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    return statistics.median(ts)


torch.manual_seed(0)
h = torch.randn(BATCH, L, D, device="cuda")
w_in = torch.randn(2 * E, D, device="cuda") * D ** -0.5
result["kernels"]["in_proj"] = timed(lambda: F.linear(h, w_in))
del h
u = torch.randn(BATCH, L, 2, E, device="cuda").permute(2, 0, 3, 1)  # (2, B, E, L) view of (B, L, 2, E)
x_proj_t = (torch.randn(2, W, E, device="cuda") * E ** -0.5).transpose(-2, -1)  # (2, E, W) column-major
tokens = u.transpose(2, 3).reshape(2, M, E)
ref = torch.bmm(tokens, x_proj_t)
result["kernels"]["x_proj_bmm"] = timed(lambda: torch.bmm(tokens, x_proj_t))
for tile in TILES:
    xproj.X_PROJ_ROWS_TILE = tile
    try:
        o = xproj.x_proj_rows(u, x_proj_t, torch.float32)
        err = (o - ref).abs().max().item()
        ms = timed(lambda: xproj.x_proj_rows(u, x_proj_t, torch.float32))
    except Exception as exc:  # a tile that does not compile here
        ms, err = None, repr(exc)[:200]
    result["x_proj_rows"].append(dict(tile=tile, ms=ms, max_abs_diff_vs_bmm=err))
    print("x_proj_rows", tile, ms, err, flush=True)
del u, tokens, ref
y = torch.randn(M, E, device="cuda")
w_out = torch.randn(D, E, device="cuda") * E ** -0.5
result["kernels"]["out_proj"] = timed(lambda: F.linear(y, w_out))
del y
print("kernels ms", json.dumps({k: round(v, 4) for k, v in result["kernels"].items()}), flush=True)
torch.cuda.empty_cache()

model = create_model("vim_t", img_size=RES, backend="triton").cuda().eval()
images = torch.randn(BATCH, 3, RES, RES, device="cuda")
ref_model = create_model("vim_t", img_size=RES, backend="torch").cuda().eval()
ref_model.load_state_dict(model.state_dict())
with torch.inference_mode():
    gold = ref_model(images[:4]).double()
del ref_model
torch.cuda.empty_cache()
for arm in "ABBA":
    for layer in model.layers:
        layer.mixer.fuse_dt_proj = True if arm == "B" else None
    with torch.inference_mode():
        for _ in range(2):
            out = model(images)
        torch.cuda.synchronize(); del out
        torch.cuda.reset_peak_memory_stats()
        out = model(images); torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        err = (out[:4].double() - gold).abs().max().item()
        del out
        times = []
        for _ in range(8):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); o = model(images); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e)); del o
    p50 = statistics.median(times)
    result["forward"].append(dict(arm=arm, fuse_dt_proj=arm == "B", p50_ms=p50, img_per_s=BATCH / p50 * 1e3,
                                  peak_allocated_gib=peak / 2**30, max_abs_err_vs_fp32_torch=err, times_ms=times))
    print(f"fp32 {arm}: p50 {p50:.2f} ms, {BATCH / p50 * 1e3:.1f} img/s, peak {peak / 2**30:.3f} GiB, "
          f"|logits - fp32 torch| {err:.2e}", flush=True)
result.update(gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT"))
json.dump(result, open(os.path.join(OUT, "fp32parts.json"), "w"), indent=1)
print("=== summary")
print("kernel ms:", " ".join(f"{k} {v:.3f}" for k, v in result["kernels"].items()))
print("x_proj_rows ms:", " ".join(f"{k['tile']} {k['ms'] and round(k['ms'], 3)}" for k in result["x_proj_rows"]))
a = statistics.mean(r["p50_ms"] for r in result["forward"] if r["arm"] == "A")
b = statistics.mean(r["p50_ms"] for r in result["forward"] if r["arm"] == "B")
print(f"fp32 Vim-Ti 1248/64 forward: shipped {a:.2f} ms, dt_proj fused {b:.2f} ms ({(b / a - 1) * 100:+.1f}%)")
