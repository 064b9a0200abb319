"""What the inference scan would gain if delta came in already softplus'd (session al): the scan kernel with its own
bias + softplus (A, today) against the same call on delta' = softplus(delta + bias) precomputed (delta_softplus
False, no bias) stored in bf16 (B) or fp16 (C). The scan's arguments are captured from layer 0 of a real eager
forward (bf16 autocast, default memory mode, 1248 px, batch 64) of each model in SPOFF_MODELS (vim_t,vim_b); every
call writes a new halves buffer. Kernel ms: rounds A B C, 4 rounds, median of 10 CUDA-event timings each. Also the
delta GEMM as the model runs it (bmm of the padded dt columns) and the same followed by torch's bias + softplus,
for the budget of a fused dt_proj + softplus kernel. Outputs of B and C against A: largest |difference| over the
largest |A|. Writes $OUT/softplusoff.json. usage (repo root, on the box): python results/history/scripts/softplusoff.py"""
import json, os, statistics
import torch
import torch.nn.functional as F
from kernels.selective_scan import fwd
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
MODELS = os.environ.get("SPOFF_MODELS", "vim_t,vim_b").split(",")
RES, BATCH = 1248, 64
result = {"rows": []}


def med(fn, n=10):
    fn()
    ts = []
    for _ in range(n):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    return statistics.median(ts)


for name in MODELS:
    torch.manual_seed(0)
    model = create_model(name, img_size=RES, backend="triton").cuda().eval()
    mixer = model.layers[0].mixer
    captured = {}
    real = mixer.ops.bimamba_scan

    def grab(u, delta, A, B, C, D, z, bias, combine=True, out=None, **kw):
        if not captured:
            captured.update(u=u.clone(), delta=delta, A=A, B=B, C=C, D=D, z=z, bias=bias, combine=combine, kw=kw)
        return real(u, delta, A, B, C, D, z, bias, combine=combine, out=out, **kw)

    import dataclasses
    mixer.ops = dataclasses.replace(mixer.ops, bimamba_scan=grab)
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        model(images)
    del images, model
    c = captured
    assert not c["kw"] and c["combine"] is False, (c["kw"], c["combine"])
    u, delta, A, B, C, D, z, bias = (c[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "bias"))
    with torch.inference_mode():
        pre = delta.float() + bias[:, None, :, None]
        variants = {"A": (delta, bias, True)}
        for tag, dt in (("B", torch.bfloat16), ("C", torch.float16)):
            d2 = torch.empty_like(delta, dtype=dt)
            d2.copy_(F.softplus(pre))
            variants[tag] = (d2, None, False)
        del pre
        outs = {tag: fwd.bimamba_scan(u, d, A, B, C, D, z, b, sp, combine=False) for tag, (d, b, sp) in variants.items()}
        ref = outs["A"].float()
        errs = {tag: ((o.float() - ref).abs().max() / ref.abs().max()).item() for tag, o in outs.items()}
        del outs, ref
        times = {tag: [] for tag in variants}
        for _ in range(4):
            for tag, (d, b, sp) in variants.items():
                times[tag].append(med(lambda: fwd.bimamba_scan(u, d, A, B, C, D, z, b, sp, combine=False)))
        E, M = u.shape[2], u.shape[1] * u.shape[3]
        R = mixer.dt_rank
        dt_cols = torch.randn(2, M, 16, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(2, 16, E, device="cuda", dtype=torch.bfloat16)
        b32 = bias.float()[:, None, :]
        gemm = med(lambda: torch.bmm(dt_cols, w))
        gemm_sp = med(lambda: F.softplus(torch.bmm(dt_cols, w).float() + b32).to(torch.bfloat16))
    row = dict(model=name, E=E, L=u.shape[3], batch=u.shape[1], dt_rank=R, delta_dtype=str(delta.dtype),
               delta_strides=list(delta.stride()), scan_ms={t: v for t, v in times.items()},
               scan_ms_median={t: statistics.median(v) for t, v in times.items()}, rel_err_vs_A=errs,
               delta_gemm_ms=gemm, delta_gemm_bias_softplus_torch_ms=gemm_sp)
    result["rows"].append(row)
    print(name, json.dumps({k: row[k] for k in ("scan_ms_median", "rel_err_vs_A", "delta_gemm_ms",
                                                   "delta_gemm_bias_softplus_torch_ms")}), flush=True)
    del c, captured, u, delta, variants
    torch.cuda.empty_cache()
result["gpu"] = torch.cuda.get_device_name()
result["commit"] = os.environ.get("VIMBENCH_GIT_COMMIT")
json.dump(result, open(os.path.join(OUT, "softplusoff.json"), "w"), indent=1)
print("=== summary")
for r in result["rows"]:
    m = r["scan_ms_median"]
    print(f"{r['model']}: scan A {m['A']:.3f} ms, B (bf16 delta') {m['B']:.3f} ({(m['B'] / m['A'] - 1) * 100:+.1f}%), "
          f"C (fp16) {m['C']:.3f} ({(m['C'] / m['A'] - 1) * 100:+.1f}%); err B {r['rel_err_vs_A']['B']:.1e} "
          f"C {r['rel_err_vs_A']['C']:.1e}; delta GEMM {r['delta_gemm_ms']:.3f}, +bias+softplus (torch) "
          f"{r['delta_gemm_bias_softplus_torch_ms']:.3f}")
