"""The scan backward's walk without its prefetch and with a register cap (12 one-warp programs per SM instead of 8;
static check: 168 registers, no spill, bf16 halves) on the H200. Part 1, kernel: CUDA-event medians at the
training shapes for the default launch, prefetch off, prefetch off + maxnreg 168 / 200, relative L2 error of each
gradient vs the default. Part 2, whole Vim-Ti training steps (bf16, captured as a CUDA graph, the sweep's runner)
with kernels.selective_scan.bwd.DEFAULT_PREFETCH / DEFAULT_WALK_MAXNREG patched, A B B A in one process.
Writes $OUT/bwdprefetch.json."""
import json, os, torch
from timing import event_median_ms as bench
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")


rows = []
VARIANTS = [("default", {}), ("noprefetch", dict(prefetch=False)), ("noprefetch_r168", dict(prefetch=False, maxnreg=168)),
            ("noprefetch_r200", dict(prefetch=False, maxnreg=200)), ("prefetch_r200", dict(maxnreg=200))]
for B, L in ((128, 197), (8, 6085), (32, 1025)):
    args = _scan_inputs(dirs=2)(OpShape(batch=B, channels=384, length=L), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=False, chunk=64)
    g = torch.randn_like(out).mul_(0.1)
    ref = bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=False, chunk=64)
    for name, kw in VARIANTS:
        o = bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=False, chunk=64, **kw)
        err = max(((x.float() - r.float()).norm() / r.float().norm().clamp_min(1e-30)).item()
                  for x, r in zip(o, ref) if x is not None)
        ms = bench(lambda: bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=False, chunk=64, **kw))
        rows.append(dict(part="kernel", batch=B, length=L, variant=name, ms=ms, rel_err=err))
        print(rows[-1], flush=True)

from vimbench.bench import runner
from vimbench.results import CaseKey
for res, batch in ((224, 128), (1248, 8)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for variant in ("default", "noprefetch_r168", "noprefetch_r168", "default"):
        # "default": the launch before 2026-12-03 (prefetch on, no cap); since then DEFAULT_PREFETCH = None is the
        # automatic choice, which picks noprefetch_r168 at these two shapes
        bwd.DEFAULT_PREFETCH, bwd.DEFAULT_WALK_MAXNREG = (True, None) if variant == "default" else (False, 168)
        r = runner.run_case(key, warmup=3, iters=10)
        rows.append(dict(part="step", res=res, batch=batch, variant=variant, status=r.status, img_s=r.fps,
                         p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(rows[-1], flush=True)
bwd.DEFAULT_PREFETCH, bwd.DEFAULT_WALK_MAXNREG = None, None
json.dump(rows, open(f"{OUT}/bwdprefetch.json", "w"), indent=1)
for r in rows:
    print(r)
