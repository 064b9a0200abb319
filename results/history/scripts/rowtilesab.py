"""dt_softplus's row tiles per program in whole forwards (session ao; `kernels.dt_softplus.fwd.MAX_ROW_TILES`): eager
bf16 inference (autocast, as the sweep) of each model in ROWTILES_MODELS (vim_t,vim_b) at 1248 px, batch 64,
A = one row tile per program (MAX_ROW_TILES 1, as before session ao), B = the shipped rule (up to 16 while the
grid keeps MIN_PROGRAMS); A B B A in one process, p50 of 10 CUDA-event timings after 3 warm-up calls, peak
allocated over one forward; the logits of A and B compared (the same arithmetic: expected bitwise equal).
Writes $OUT/rowtilesab.json. usage (repo root, on the box): python results/history/scripts/rowtilesab.py"""
import json, os, statistics
import torch
from kernels.dt_softplus import fwd
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
MODELS = os.environ.get("ROWTILES_MODELS", "vim_t,vim_b").split(",")
RES, BATCH = 1248, 64
SHIPPED = fwd.MAX_ROW_TILES
ARMS = {"A": 1, "B": SHIPPED}
torch.backends.cuda.matmul.allow_tf32 = False
result = {"rows": [], "logits": [], "gpu": torch.cuda.get_device_name(),
          "commit": os.environ.get("VIMBENCH_GIT_COMMIT")}


def forward(model, images):
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        return model(images)


for name in MODELS:
    torch.manual_seed(0)
    model = create_model(name, img_size=RES, backend="triton").cuda().eval()
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")
    logits = {}
    for arm, tiles in ARMS.items():
        fwd.MAX_ROW_TILES = tiles
        logits[arm] = forward(model, images).float()
    result["logits"].append(dict(model=name, max_abs_diff=(logits["A"] - logits["B"]).abs().max().item(),
                                 bitwise_equal=bool(torch.equal(logits["A"], logits["B"]))))
    print(name, result["logits"][-1], flush=True)
    del logits
    for arm in "ABBA":
        fwd.MAX_ROW_TILES = ARMS[arm]
        for _ in range(3):
            forward(model, images)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        forward(model, images)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2 ** 30
        times = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); forward(model, images); e.record(); torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        p50 = statistics.median(times)
        result["rows"].append(dict(model=name, arm=arm, max_row_tiles=ARMS[arm], p50_ms=p50,
                                   img_per_s=BATCH * 1000 / p50, peak_allocated_gib=peak, times_ms=times))
        print(f"{name} {arm} (max row tiles {ARMS[arm]}): p50 {p50:.2f} ms, {BATCH * 1000 / p50:.1f} img/s, "
              f"peak {peak:.3f} GiB", flush=True)
    del model
    torch.cuda.empty_cache()
fwd.MAX_ROW_TILES = SHIPPED
json.dump(result, open(os.path.join(OUT, "rowtilesab.json"), "w"), indent=1)
print("=== summary (eager bf16 1248/64, p50 ms; A = 1 row tile, B = shipped)")
for name in MODELS:
    rows = [r for r in result["rows"] if r["model"] == name]
    a = [r["p50_ms"] for r in rows if r["arm"] == "A"]
    b = [r["p50_ms"] for r in rows if r["arm"] == "B"]
    change = 100 * (statistics.mean(b) / statistics.mean(a) - 1)
    print(f"{name}: A {statistics.mean(a):.2f} B {statistics.mean(b):.2f} ({change:+.1f}%)")
