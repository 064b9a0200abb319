"""Training on a delta made already softplus'd (session an; `kernels.bimamba_inner.op.SOFTPLUS_BEFORE_SCAN_DTYPES`):
eager bf16 training steps (autocast, AdamW, cross entropy on random labels, as the sweep's train mode) of each model
in TRAINSP_MODELS (vim_t,vim_s) at 1248 px, batch 8; A = the delta GEMM (off), B = dt_softplus before the scan (on);
A B B A in one process, p50 of 12 steps after 3 warm-up steps, peak allocated over one step; then the same A B B A
with the whole step captured into a CUDA graph (the sweep's compile cuda-graphs: `vimbench.bench.train`, a fresh
capturable step per arm, p50 of 10 replays), where the host's launch time is out of the picture. First, on one fixed
batch without an optimizer step, the loss and every parameter's gradient under A and B: the largest
|g_B - g_A| / max |g_A| over parameters (bf16 rounding differs: delta is fp16 and post-softplus in B).
Writes $OUT/trainsp.json. usage (repo root, on the box): python results/history/scripts/trainsp.py"""
import json, os, statistics
import torch
import torch.nn.functional as F
from kernels.bimamba_inner import op
from vimbench.bench import train
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
MODELS = os.environ.get("TRAINSP_MODELS", "vim_t,vim_s").split(",")
RES, BATCH = 1248, 8
ARMS = {"A": (), "B": (torch.bfloat16, torch.float16)}
result = {"rows": [], "grads": []}


def step(model, opt, images, labels):
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()


for name in MODELS:
    torch.manual_seed(0)
    model = create_model(name, img_size=RES, backend="triton").cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")
    labels = torch.randint(0, 1000, (BATCH,), device="cuda")
    grads, losses = {}, {}
    for arm, dtypes in ARMS.items():
        op.SOFTPLUS_BEFORE_SCAN_DTYPES = dtypes
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        losses[arm] = loss.item()
        grads[arm] = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    worst = max((((grads["B"][n] - g).abs().max() / g.abs().max().clamp_min(1e-30)).item(), n)
                 for n, g in grads["A"].items())
    result["grads"].append(dict(model=name, loss_A=losses["A"], loss_B=losses["B"], worst_rel_grad_diff=worst[0],
                                worst_param=worst[1], params_with_grad=len(grads["A"])))
    print(name, "loss A", losses["A"], "B", losses["B"], "worst grad diff", worst, flush=True)
    # (the last backward's graph must not outlive this part: its AccumulateGrad nodes, made on the default stream,
    # would make the captured steps below fail to capture; session ao's first run did)
    del grads, loss
    model.zero_grad(set_to_none=True)
    for arm in "ABBA":
        op.SOFTPLUS_BEFORE_SCAN_DTYPES = ARMS[arm]
        for _ in range(3):
            step(model, opt, images, labels)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, images, labels)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        times = []
        for _ in range(12):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); step(model, opt, images, labels); e.record(); torch.cuda.synchronize()
            times.append(s.elapsed_time(e))
        p50 = statistics.median(times)
        result["rows"].append(dict(model=name, arm=arm, softplus_before_scan=arm == "B", p50_ms=p50,
                                   img_per_s=BATCH / p50 * 1e3, peak_allocated_gib=peak / 2**30, times_ms=times))
        print(f"{name} {arm}: p50 {p50:.2f} ms ({BATCH / p50 * 1e3:.1f} img/s), peak {peak / 2**30:.3f} GiB",
              flush=True)
    for arm in "ABBA":
        op.SOFTPLUS_BEFORE_SCAN_DTYPES = ARMS[arm]
        captured = train.make_train_step(model, BATCH, RES, "bf16", "cuda", capturable=True)
        timing = train.time_train_steps(captured, "cuda", warmup=3, iters=10, cuda_graphs=True).step
        result["rows"].append(dict(model=name, arm=arm, softplus_before_scan=arm == "B", captured=True,
                                   p50_ms=timing.p50_ms, img_per_s=BATCH / timing.p50_ms * 1e3,
                                   times_ms=timing.samples_ms))
        print(f"{name} {arm} captured: p50 {timing.p50_ms:.2f} ms ({BATCH / timing.p50_ms * 1e3:.1f} img/s)",
              flush=True)
        del captured
        torch.cuda.empty_cache()
    op.SOFTPLUS_BEFORE_SCAN_DTYPES = ()
    del model, opt, images
    torch.cuda.empty_cache()
result.update(gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT"))
json.dump(result, open(os.path.join(OUT, "trainsp.json"), "w"), indent=1)
print("=== summary (eager bf16 training steps, 1248 px, batch 8, p50 ms, mean of the two passes)")
for name in MODELS:
    g = next(x for x in result["grads"] if x["model"] == name)
    for captured in (False, True):
        rows = [r for r in result["rows"] if r["model"] == name and r.get("captured", False) == captured]
        if not rows:
            continue
        a = statistics.mean(r["p50_ms"] for r in rows if r["arm"] == "A")
        b = statistics.mean(r["p50_ms"] for r in rows if r["arm"] == "B")
        print(f"{name} {'captured' if captured else 'eager'}: GEMM {a:.2f} ms, softplus before the scan {b:.2f} ms "
              f"({(b / a - 1) * 100:+.1f}%)")
    print(f"{name}: worst grad diff {g['worst_rel_grad_diff']:.2e} ({g['worst_param']})")
