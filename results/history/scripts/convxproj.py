"""Session x: the conv fused with x_proj (`kernels/conv1d/xproj.py`, `vimbench.models.vim.FUSE_CONV_XPROJ`) against
the conv op + the x_proj bmm, on the box.
(1) The two paths alone, Vim-Ti bf16 as the mixer calls them (x a view of xz, x_dbl fp32), at 1248/64, 224/64,
224/8 and 224/1: CUDA-graph replays alternated A B B A (A: conv + bmm, B: fused), the fused one at a few tiles
(LARGE_TILE / SMALL_TILE), with the largest difference of u and x_dbl from the unfused outputs.
(2) Whole Vim-Ti bf16 inference, A B B A (A: FUSE_CONV_XPROJ off, B: on, the shipped tiles): 1248/64 eager,
224/64 and 224/1 under CUDA graphs; the logits' distance between the two paths.
usage (repo root, on the box): (cd results/history/scripts && python convxproj.py) ; writes $OUT/convxproj.json
CONVX_QUICK=1: (1) only. CONVX_SHORT=1 (a short call): the shipped tiles and one stage variant, whole forwards at
1248/64 and 224/1 only."""
import json, os, torch
from timing import graph_us
import kernels.conv1d.xproj as xproj
import vimbench.models.vim as vim
from kernels.conv1d.op import conv1d_silu_bidir, conv_xproj
from vimbench.kerneltools.kernel_ops import _conv_xproj_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
QUICK = os.environ.get("CONVX_QUICK") == "1"
SHORT = os.environ.get("CONVX_SHORT") == "1"
rows, model_rows = [], []
SHIPPED = (xproj.LARGE_TILE, xproj.SMALL_TILE)


def dump():
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), shipped_tiles=SHIPPED, kernel_rows=rows,
                   model_rows=model_rows), open(f"{OUT}/convxproj.json", "w"), indent=1)


def set_tiles(large, small):
    xproj.LARGE_TILE, xproj.SMALL_TILE = large, small
    xproj._MEMO.clear()  # recorded launches carry the old tiles


torch.backends.cuda.matmul.allow_tf32 = False
with torch.no_grad():
    for batch, length in ((64, 6085), (64, 197), (8, 197), (1, 197)):
        case = f"{batch}x{length}"
        a = _conv_xproj_inputs(OpShape(batch=batch, channels=384, length=length), torch.bfloat16, "cuda")
        x, w, b, p = a["x"], a["weight"], a["bias"], a["x_proj_t"]

        def unfused():
            u = conv1d_silu_bidir(x, w, b)
            return u, torch.bmm(u.transpose(2, 3).reshape(2, -1, u.shape[2]), p, out_dtype=torch.float32)

        u0, d0 = unfused()
        large = batch * length >= 64 * xproj.SMALL_GRID_BLOCKS
        tiles = ([(64, 32, 8, 3), (64, 32, 8, 1), (64, 16, 4, 3), (32, 32, 4, 3), (128, 32, 8, 2)] if large else
                 [(16, 64, 4, 3), (16, 64, 4, 1), (16, 32, 4, 3), (32, 32, 4, 3), (16, 128, 4, 2)])
        variants = [("conv+bmm", None)] + [(f"fused {t}", t) for t in (tiles[:2] if SHORT else tiles)]
        for rep in range(2):
            for name, t in (variants if rep == 0 else variants[::-1]):
                if t is not None:
                    set_tiles(t, SHIPPED[1]) if large else set_tiles(SHIPPED[0], t)
                fn = unfused if t is None else (lambda: conv_xproj(x, w, b, p, torch.float32))
                try:
                    u1, d1 = fn()
                    err = dict(u=float((u1.float() - u0.float()).abs().max()),
                               x_dbl=float((d1 - d0).abs().max() / d0.abs().max()))
                    us = graph_us(fn, reps=10)
                except Exception as exc:  # noqa: BLE001 (a tile that does not compile is a result)
                    err, us = dict(error=f"{type(exc).__name__}: {exc}"[:300]), None
                rows.append(dict(case=case, variant=name, graph_us=us, **err))
                print(rows[-1], flush=True)
        set_tiles(*SHIPPED)
        del a, x, w, b, p, u0, d0
        torch.cuda.empty_cache()
        dump()

if not QUICK:
    from vimbench.bench import runner
    from vimbench.results import CaseKey
    from vimbench.models.registry import create_model
    logits = {}
    cases = ((1248, 64, "none"), (224, 64, "cuda-graphs"), (224, 1, "cuda-graphs"))
    for res, batch, comp in (cases[::2] if SHORT else cases):
        key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                      device="cuda", mode="infer", compile=comp)
        for tag in ("A", "B", "B", "A"):
            vim.FUSE_CONV_XPROJ = tag == "B"
            r = runner.run_case(key, warmup=5, iters=30)
            model_rows.append(dict(res=res, batch=batch, compile=comp, variant=tag, fused=tag == "B",
                                   status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                                   peak_alloc_mib=r.peak_alloc_mib, error=r.error))
            print(model_rows[-1], flush=True)
            dump()
    torch.manual_seed(0)
    model = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
    images = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for on in (False, True):
            vim.FUSE_CONV_XPROJ = on
            logits[on] = model(images).float()
    ref32 = model(images).float()
    model_rows.append(dict(logits_rel_l2_fused_vs_unfused=float((logits[True] - logits[False]).norm()
                                                                / logits[False].norm()),
                           logits_rel_l2_unfused_vs_fp32=float((logits[False] - ref32).norm() / ref32.norm()),
                           top1_equal=bool((logits[True].argmax(1) == logits[False].argmax(1)).all())))
    print(model_rows[-1])
vim.FUSE_CONV_XPROJ = False
dump()
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["variant"]), []).append(r["graph_us"])
print("conv + x_proj alone, us per call (mean of 2 replays of 10 calls)")
for (case, variant), v in mean.items():
    print(f"{case:10s} {variant:24s} " + (f"{sum(v) / len(v):8.1f}" if None not in v else "failed"))
for r in model_rows:
    print(r)
