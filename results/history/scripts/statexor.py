"""Session q: the scan backward's walk from the XOR state order (`bwd.DEFAULT_SCATTER_XOR`, `_scan_bwd_kernel`
SCATTER_SUMS = 2: lane l holds state r ^ _state_xor(l) in register row r, so the dB/dC reduce-scatter's first two
levels keep their first half in every lane instead of selecting by lane), alone and with the scratch's state tiles
as per-lane groups of 4 states (`bwd.DEFAULT_VEC_SCRATCH`, VEC_SCRATCH: 4 16-byte accesses per tile instead of 16).
Static only when written (the capped pairs walk, combined bf16 with dz halves, one step per trip, carried state;
SASS executed per two steps, walk + recomputation): triton 3.6 natural 1,159 + 268, XOR 1,032 + 282, XOR + vec
1,009 + 254 (-11.5%); triton 3.8 1,178 + 278, 1,069 + 280, 1,045 + 252; no spill in the loops (kernels/NOTES.md,
"Session q").
(1) The scan backward alone in the training op's forms (combined bf16, dz halves, bf16 dB/dC rows), Vim-Ti 1248 px
batch 8 and 224 px batch 128 (checkpoints every CHECKPOINT_CHUNK), CUDA-graph replays alternated twice: natural,
XOR order, XOR order + vector scratch; every gradient compared with the natural walk's (the largest difference,
relative to the gradient's largest value).
(2) Whole captured Vim-Ti bf16 training steps A B B A (A: natural, B: XOR order + vector scratch).
usage (repo root, on the box): (cd results/history/scripts && python statexor.py) ; writes $OUT/statexor.json
SMOKE=1 (CPU, TRITON_INTERPRET=1): tiny shapes, the comparisons only (checks the script itself)."""
import json, os, torch
SMOKE = os.environ.get("SMOKE") == "1"
if not SMOKE:
    from timing import graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows, checks, step_rows = [], {}, []


def dump():
    json.dump(dict(device="cpu" if SMOKE else torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), kernel_rows=rows, checks=checks,
                   step_rows=step_rows), open(f"{OUT}/statexor.json", "w"), indent=1)


DEV = "cpu" if SMOKE else "cuda"
ORDERS = {"natural": dict(scatter_xor=False, vec_scratch=False), "xor": dict(scatter_xor=True, vec_scratch=False),
          "xor_vec": dict(scatter_xor=True, vec_scratch=True)}
for batch, length in (((1, 19),) if SMOKE else ((8, 6085), (128, 197))):
    case = f"{batch}x{length}"
    x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=40 if SMOKE else 384, length=length), torch.bfloat16, DEV)
    y, ck = bimamba_scan_fwd_save(**x, combine=True, chunk=4 if SMOKE else CHECKPOINT_CHUNK)
    g = torch.randn_like(y).mul_(0.1)
    smoke = dict(prefetch=False, pairs=True, sub_chunk=0, block_c=32, scatter_sums=True) if SMOKE else {}
    call = lambda o: bwd.bimamba_scan_bwd(  # noqa: E731
        g, **x, checkpoints=ck, combine=True, chunk=4 if SMOKE else CHECKPOINT_CHUNK, dz_halves=True,
        bc_rows_dtype=torch.bfloat16, **ORDERS[o], **smoke)
    cfg = bwd.scan_bwd_launch_config(batch, x["u"].shape[2], length, CHECKPOINT_CHUNK, SMOKE, scatter_xor=True,
                                     vec_scratch=True, **({k: v for k, v in smoke.items()} if SMOKE else {}))
    base = call("natural")
    checks[case] = dict(walk=dict(cfg.walk.constexprs, maxnreg=cfg.walk.maxnreg))
    for o in ("xor", "xor_vec"):
        got = call(o)
        checks[case][o] = {name: float((a.float() - b.float()).abs().max() / a.float().abs().max())
                           for name, a, b in zip(("u", "delta", "A", "BC", "C", "D", "z", "bias"), base, got)
                           if a is not None}
        del got
    print(case, checks[case], flush=True)
    del base
    for rep in range(0 if SMOKE else 2):
        for o in (tuple(ORDERS) if rep == 0 else tuple(ORDERS)[::-1]):
            rows.append(dict(case=case, order=o, graph_us=graph_us(lambda: call(o), reps=10)))
            print(rows[-1], flush=True)
    del x, y, ck, g
    torch.cuda.empty_cache() if not SMOKE else None
    dump()
if SMOKE:
    raise SystemExit(0)
from vimbench.bench import runner
from vimbench.results import CaseKey
shipped = bwd.DEFAULT_SCATTER_XOR, bwd.DEFAULT_VEC_SCRATCH
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A:natural", "B:xor_vec", "B:xor_vec", "A:natural"):
        bwd.DEFAULT_SCATTER_XOR = bwd.DEFAULT_VEC_SCRATCH = tag == "B:xor_vec"
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=tag, status=r.status, img_s=r.fps,
                              p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump()
bwd.DEFAULT_SCATTER_XOR, bwd.DEFAULT_VEC_SCRATCH = shipped
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["order"]), []).append(r["graph_us"])
print("case order graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:10s} {k[1]:8s} {sum(v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
