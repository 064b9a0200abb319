"""Session w: the scan backward's walk with its scratch in bf16 (`bwd.DEFAULT_SCRATCH_BF16`, scan_bwd_launch_config's
scratch_bf16) against the shipped fp32 scratch. The pairs walk stores every other recomputed state (64 B per state
tile row in fp32); ~1,584 resident programs x 64 tiles x 2 KB overflow the 50 MB L2 (session l's Nsight: L2 hit
60%, DRAM 49%), and session r read the walk as load-latency bound. bf16 halves the scratch's bytes and footprint for
one rounding of each stored state (dC, dA, ddelta and dz's recomputed y read them; du, dB, dD do not).
(1) the scan backward alone in the training op's forms (combined bf16, dz halves, bf16 dB/dC rows), Vim-Ti 1248 px
batch 8 and 224 px batch 128: each gradient's relative L2 distance from the fp32 reference (autograd through
bimamba_scan_ref on the same bf16 inputs) for both scratches, then CUDA-graph replays alternated A B B A.
(2) whole captured Vim-Ti bf16 training steps at 1248/8 and 224/128, A B B A (A: fp32 scratch, B: bf16).
usage (repo root, on the box): (cd results/history/scripts && python scratchbf16.py) ; writes $OUT/scratchbf16.json
SCRATCH_QUICK=1: (1) only, the reference distances at 128 x 197 only (for a short call)."""
import json, os, sys, torch
from timing import graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from kernels.selective_scan.reference import bimamba_scan_ref
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
QUICK = os.environ.get("SCRATCH_QUICK") == "1"
NAMES = ("u", "delta", "A", "BC", "C", "D", "z", "bias")
rows, errors, step_rows = [], {}, []


def dump():
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), kernel_rows=rows, errors=errors,
                   step_rows=step_rows), open(f"{OUT}/scratchbf16.json", "w"), indent=1)


def reference(x, g):
    """fp32 autograd through the sequential reference, in the op's output forms (dz summed, dB/dC as (2, b, N, L))."""
    x32 = {k: None if v is None else v.detach().float().requires_grad_() for k, v in x.items()}
    bimamba_scan_ref(**x32, combine=True).backward(g.float())
    return x32


for batch, length in ((8, 6085), (128, 197)):
    case = f"{batch}x{length}"
    x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=384, length=length), torch.bfloat16, "cuda")
    y, ck = bimamba_scan_fwd_save(**x, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(y).mul_(0.1)
    call = lambda s16, **kw: bwd.bimamba_scan_bwd(  # noqa: E731
        g, **x, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK, scratch_bf16=s16, **kw)
    ref = None if QUICK and batch == 8 else reference(x, g)
    errors[case] = {}
    for s16 in ((False, True) if ref is not None else ()):
        du, ddelta, dA, dB, dC, dD, dz, dbias = call(s16)
        got = dict(u=du, delta=ddelta, A=dA, B=dB, C=dC, D=dD, z=dz, delta_bias=dbias)
        errors[case]["bf16" if s16 else "fp32"] = {
            k: float((got[k].float() - ref[k].grad).norm() / ref[k].grad.norm()) for k in got}
        del got, du, ddelta, dA, dB, dC, dD, dz, dbias
    del ref
    torch.cuda.empty_cache()
    print(case, "relative L2 from the fp32 reference", errors[case], flush=True)
    train_form = dict(dz_halves=True, bc_rows_dtype=torch.bfloat16)
    for rep in range(2):
        for s16 in ((False, True) if rep == 0 else (True, False)):
            rows.append(dict(case=case, scratch="bf16" if s16 else "fp32",
                             graph_us=graph_us(lambda: call(s16, **train_form), reps=10)))
            print(rows[-1], flush=True)
    del x, y, ck, g
    torch.cuda.empty_cache()
    dump()

from vimbench.bench import runner
from vimbench.results import CaseKey
for res, batch in (() if QUICK else ((1248, 8), (224, 128))):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A", "B", "B", "A"):
        bwd.DEFAULT_SCRATCH_BF16 = tag == "B"
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=tag, scratch="bf16" if tag == "B" else "fp32",
                              status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                              peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump()
bwd.DEFAULT_SCRATCH_BF16 = False
dump()
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["scratch"]), []).append(r["graph_us"])
print("scan backward alone, us per call (mean of 2 replays)")
for k, v in mean.items():
    print(f"{k[0]:10s} {k[1]:5s} {sum(v) / len(v):.1f}")
for case, e in errors.items():
    for s, d in e.items():
        print(case, s, "rel L2:", " ".join(f"{k}={v:.1e}" for k, v in d.items()))
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["scratch"], r["img_s"] and round(r["img_s"], 1), "img/s",
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
