"""Tiles of `kernels/dt_softplus` (session al; the log1p arm added in session am): the kernel alone at Vim-Ti and
Vim-B 1248/64 shapes (fp32 x_dbl dt columns, bf16 dt_proj, fp16 delta) for BLOCK_M x BLOCK_N x warps with the
degree-4 log1p (`fwd.SHORT_LOG1P`, the default since session am), and the 64 x 128 x 4 tile with the scan's degree-7
one, median of 20 CUDA-event timings, against the cast + delta GEMM the model ran before. "equal" compares each
output with the default's; "max_rel_vs_f64" is the largest distance from float64 on the same operands, relative
to max(value, 2^-14) (fp16 subnormals below). Writes $OUT/dtsptiles.json. usage (repo root, on the box):
python results/history/scripts/dtsptiles.py"""
import json, os, statistics
import torch
from kernels.dt_softplus import fwd
from kernels.runtime import LaunchConfig, cdiv
from vimbench.layout import XDblLayout

OUT = os.environ.get("OUT", "/tmp")
CONFIGS = [(64, 128, 4), (128, 128, 4), (128, 128, 8), (64, 256, 4), (64, 256, 8), (128, 256, 8), (32, 128, 4),
           (32, 256, 4), (256, 128, 8)]
real = fwd.dt_softplus_launch_config


def timed(fn, iters=20, warm=5):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    return statistics.median(ts)


rows = []
for name, d, r in (("vim_t", 192, 12), ("vim_b", 768, 48)):
    e, M = 2 * d, 64 * 6085
    lay = XDblLayout(r, 16)
    x_dbl = torch.randn(2, M, lay.width, device="cuda")
    w = (torch.randn(2, r, e, device="cuda") * r ** -0.5).to(torch.bfloat16)
    bias = torch.randn(2, e, device="cuda") - 3
    w16 = torch.cat([w, w.new_zeros(2, 16 * ((r + 15) // 16) - r, e)], dim=1)
    cols = slice(lay.dt.start, lay.dt.start + w16.shape[1])
    gemm = timed(lambda: torch.bmm(x_dbl[..., cols].to(torch.bfloat16), w16))
    ref = fwd.dt_softplus(x_dbl[..., lay.dt], w, bias, torch.float16)
    dt = x_dbl[..., lay.dt]
    exact = torch.nn.functional.softplus(torch.bmm(dt.to(torch.bfloat16).double(), w.double())
                                         + bias.double()[:, None, :])
    for bm, bn, warps, short in [c + (True,) for c in CONFIGS] + [(64, 128, 4, False)]:
        def cfg(rows_, channels, rank, interpreted, fp32=False, bm=bm, bn=bn, warps=warps):
            c = real(rows_, channels, rank, interpreted, fp32)
            return LaunchConfig(kernel=c.kernel, grid=(cdiv(channels, bn), cdiv(rows_, bm), 2),
                                constexprs=dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_R=c.constexprs["BLOCK_R"]),
                                num_warps=warps)
        fwd.dt_softplus_launch_config = cfg
        fwd.SHORT_LOG1P = short
        rel = None
        try:
            out = fwd.dt_softplus(x_dbl[..., lay.dt], w, bias, torch.float16)
            same = bool(torch.equal(out, ref))
            rel = ((out.double() - exact).abs() / exact.clamp_min(2.0 ** -14)).max().item()
            ms = timed(lambda: fwd.dt_softplus(x_dbl[..., lay.dt], w, bias, torch.float16))
        except Exception as exc:  # a tile that does not compile (shared memory, registers)
            ms, same = None, repr(exc)[:200]
        fwd.dt_softplus_launch_config = real
        fwd.SHORT_LOG1P = True
        rows.append(dict(model=name, block_m=bm, block_n=bn, warps=warps, short_log1p=short, ms=ms,
                         equal_to_default=same, max_rel_vs_f64=rel,
                         cast_and_gemm_ms=gemm, gb_per_s=None if ms is None else 2 * M * e * 2 / ms / 1e6))
        print(name, bm, bn, warps, "short" if short else "deg7", ms and round(ms, 4), same, rel, "gemm",
              round(gemm, 4), flush=True)
    del x_dbl, w, w16, ref, exact
json.dump(dict(rows=rows, gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT")),
          open(os.path.join(OUT, "dtsptiles.json"), "w"), indent=1)
print("=== summary")
for r in rows:
    print(f"{r['model']} {r['block_m']}x{r['block_n']}x{r['warps']} {'deg4' if r['short_log1p'] else 'deg7'}: "
          f"{r['ms'] and round(r['ms'], 3)} ms, rel {r['max_rel_vs_f64'] and round(r['max_rel_vs_f64'], 6)} "
          f"(cast+GEMM {r['cast_and_gemm_ms']:.3f})")
