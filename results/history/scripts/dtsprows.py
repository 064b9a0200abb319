"""Row tiles per program of `kernels/dt_softplus` (session an; `fwd.ROW_TILES`): the kernel alone at Vim-Ti and
Vim-B 1248/64 shapes (fp32 x_dbl dt columns, bf16 dt_proj, fp16 delta) with the shipped 64 x 128 x 4 tile and
ROW_TILES 1, 2, 4, 8, 16 (and 32 x 128 x 4 with 1, 4), median of 20 CUDA-event timings, against the cast + delta
GEMM; "equal": the output bitwise the shipped one's. GB/s counts the fp16 delta written. Writes $OUT/dtsprows.json.
usage (repo root, on the box): python results/history/scripts/dtsprows.py"""
import json, os, statistics
import torch
from kernels.dt_softplus import fwd
from vimbench.layout import XDblLayout

OUT = os.environ.get("OUT", "/tmp")
VARIANTS = [((64, 128, 4), 1), ((64, 128, 4), 2), ((64, 128, 4), 4), ((64, 128, 4), 8), ((64, 128, 4), 16),
            ((32, 128, 4), 1), ((32, 128, 4), 4)]


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
    dt = x_dbl[..., lay.dt]
    ref = fwd.dt_softplus(dt, w, bias, torch.float16)
    for tile, row_tiles in VARIANTS:
        fwd.TILE, fwd.ROW_TILES = tile, row_tiles
        try:
            out = fwd.dt_softplus(dt, w, bias, torch.float16)
            same = bool(torch.equal(out, ref))
            ms = timed(lambda: fwd.dt_softplus(dt, w, bias, torch.float16))
        except Exception as exc:  # a variant that does not compile here
            ms, same = None, repr(exc)[:200]
        row = dict(model=name, tile=tile, row_tiles=row_tiles, ms=ms, equal=same, gemm_ms=gemm,
                   gb_per_s=None if ms is None else 2 * M * e * 2 / ms / 1e6)
        rows.append(row)
        print(row, flush=True)
    fwd.TILE, fwd.ROW_TILES = (64, 128, 4), 1
    del x_dbl, ref
    torch.cuda.empty_cache()
json.dump(dict(gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows),
          open(os.path.join(OUT, "dtsprows.json"), "w"), indent=1)
print("=== summary (ms, median of 20; GEMM = cast + delta GEMM)")
for r in rows:
    print(f"{r['model']} {r['tile']} x{r['row_tiles']}: {r['ms'] and round(r['ms'], 3)} ms "
          f"({r['gb_per_s'] and round(r['gb_per_s'])} GB/s) equal={r['equal']} (GEMM {r['gemm_ms']:.3f})")
