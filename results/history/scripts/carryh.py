"""Session o: the scan backward's walk with the leaving state carried from the step after it instead of recomputed,
one step per loop trip (`bwd.DEFAULT_CARRY_H`, `_scan_bwd_kernel` CARRY_H) or two (`bwd.DEFAULT_PAIR_TRIPS`,
PAIR_TRIPS; the training op's default when written, off since the measurement). Static only when written (triton
3.6, the capped pairs walk, combined bf16 with dz halves: SASS executed per two steps 1,188 recomputed -> 1,159
carried -> 1,002 two per trip, no spill in the loop; kernels/NOTES.md "Session o").
(1) The scan backward alone in the training op's forms (combined bf16, dz halves, bf16 dB/dC rows), Vim-Ti 1248 px
batch 8 and 224 px batch 128 (checkpoints every CHECKPOINT_CHUNK), CUDA-graph replays alternated twice: recomputed,
carried, two per trip; every gradient compared with the recomputing walk's (bitwise, or the largest difference).
(2) Whole captured Vim-Ti bf16 training steps A B B A (A: both off, B: the defaults).
usage (repo root, on the box): (cd results/history/scripts && python carryh.py) ; writes $OUT/carryh.json
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
                   step_rows=step_rows), open(f"{OUT}/carryh.json", "w"), indent=1)


DEV = "cpu" if SMOKE else "cuda"
for batch, length in (((1, 37),) if SMOKE else ((8, 6085), (128, 197))):
    case = f"{batch}x{length}"
    x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=16 if SMOKE else 384, length=length), torch.bfloat16, DEV)
    y, ck = bimamba_scan_fwd_save(**x, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(y).mul_(0.1)
    cfg = bwd.scan_bwd_launch_config(batch, x["u"].shape[2], length, CHECKPOINT_CHUNK, SMOKE)
    walks = {"recomputed": dict(carry_h=False, pair_trips=False), "carried": dict(carry_h=True, pair_trips=False),
             "two_per_trip": dict(carry_h=False, pair_trips=True)}
    call = lambda w: bwd.bimamba_scan_bwd(  # noqa: E731
        g, **x, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK, dz_halves=True, bc_rows_dtype=torch.bfloat16,
        **walks[w], **(dict(prefetch=False, pairs=True, sub_chunk=0) if SMOKE else {}))
    base = call("recomputed")
    checks[case] = dict(walk=dict(cfg.walk.constexprs, maxnreg=cfg.walk.maxnreg))
    for w in ("carried", "two_per_trip"):
        got = call(w)
        checks[case][w] = dict(bitwise=all(a is None or torch.equal(a, b) for a, b in zip(base, got)),
                               max_abs_diff=max(float((a.float() - b.float()).abs().max()) for a, b in zip(base, got)
                                                if a is not None))
        del got
    print(case, checks[case], flush=True)
    del base
    for rep in range(0 if SMOKE else 2):
        for w in (tuple(walks) if rep == 0 else tuple(walks)[::-1]):
            rows.append(dict(case=case, walk=w, graph_us=graph_us(lambda: call(w), reps=10)))
            print(rows[-1], flush=True)
    del x, y, ck, g
    torch.cuda.empty_cache() if not SMOKE else None
    dump()
if SMOKE:
    raise SystemExit(0)
from vimbench.bench import runner
from vimbench.results import CaseKey
STEPS = {"A:off": (False, False), "B:default": (bwd.DEFAULT_CARRY_H, bwd.DEFAULT_PAIR_TRIPS)}
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A:off", "B:default", "B:default", "A:off"):
        bwd.DEFAULT_CARRY_H, bwd.DEFAULT_PAIR_TRIPS = STEPS[tag]
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=tag, status=r.status, img_s=r.fps,
                              p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump()
bwd.DEFAULT_CARRY_H, bwd.DEFAULT_PAIR_TRIPS = STEPS["B:default"]
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["walk"]), []).append(r["graph_us"])
print("case walk graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:10s} {k[1]:14s} {sum(v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
