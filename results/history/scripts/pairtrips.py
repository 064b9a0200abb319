"""The scan backward's pairs walk two steps per loop trip (`bwd._pair_trips`, `pair_trips` 1-3; in kernels/selective_scan/
bwd.py at commit f8db580, removed after this measurement: slower in every variant) against one step per trip (0,
the walk of the commit before). Levels (`_pair_trips` docstring): 1 the state between the two steps
built once, the even step reloading its entering state and B row and recomputing its decay; 2 the decay kept;
3 the entering state and the B row kept too. Each variant is LEVEL:MAXNREG[:CHANNEL_SPLITS] (the walk's
register cap; splits default to the automatic choice, which follows the cap). (1) whole scan-backward calls as
CUDA-graph replays and event medians, alternated twice, gradients compared with the first variant's; (2) whole
captured Vim-Ti training steps at 1248 px batch 8 and 224 px batch 128, first best best first (best: the fastest
variant at 8 x 6,085 by graph replay).
usage (repo root, on the box): (cd results/history/scripts && VARIANTS=0:168,1:168,1:200 python pairtrips.py)
STEP_VARIANT=V skips the kernel part and runs the steps first V V first (STEP_SHAPES: "1248x8,224x128" default).
Writes $OUT/pairtrips.json."""
import json, os, torch
from timing import event_median_ms, graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
VARIANTS = os.environ.get("VARIANTS", "0:168,1:168,1:184,1:200").split(",")


def knobs(variant):
    level, cap, *splits = (int(x) for x in variant.split(":"))
    return dict(pair_trips=level, maxnreg=cap, channel_splits=splits[0] if splits else None)


def set_defaults(variant):
    k = knobs(variant)
    bwd.DEFAULT_PAIR_TRIPS, bwd.CAPPED_WALK_MAXNREG, bwd.DEFAULT_CHANNEL_SPLITS = (
        k["pair_trips"], k["maxnreg"], k["channel_splits"])


def dump(**kw):
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), variants=VARIANTS, **kw),
              open(f"{OUT}/pairtrips.json", "w"), indent=1)


kernel_rows, equal, step_rows = [], {}, []
for E, batch, length in (() if os.environ.get("STEP_VARIANT") else ((384, 8, 6085), (768, 8, 6085), (384, 128, 197))):
    name = f"E{E}/{batch}x{length}/bf16/combined"
    args = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=E, length=length), torch.bfloat16, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(out).mul_(0.1)
    call = lambda lv: bwd.bimamba_scan_bwd(g, **args, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK,
                                           **knobs(lv))
    ref = call(VARIANTS[0])
    for lv in VARIANTS[1:]:
        got = call(lv)
        pairs = [(a, b) for a, b in zip(ref, got) if a is not None]
        equal[f"{name}/{lv}"] = dict(
            bitwise=all(torch.equal(a, b) for a, b in pairs),
            max_rel=max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                        for a, b in pairs))
        del got, pairs
    del ref
    print(name, {k: v for k, v in equal.items() if k.startswith(name)}, flush=True)
    for rep in range(2):
        for lv in (VARIANTS if rep == 0 else VARIANTS[::-1]):
            run = lambda: call(lv)
            kernel_rows.append(dict(case=name, variant=lv, event_ms=event_median_ms(run), graph_us=graph_us(run, reps=10)))
            print(kernel_rows[-1], flush=True)
    del args, out, ck, g
    torch.cuda.empty_cache()
    dump(kernel_rows=kernel_rows, grads_vs_first=equal, step_rows=step_rows)

mean = {}
for r in kernel_rows:
    mean.setdefault((r["case"], r["variant"]), []).append((r["event_ms"], r["graph_us"]))
mean = {k: (sum(a for a, _ in v) / len(v), sum(b for _, b in v) / len(v)) for k, v in mean.items()}
best = os.environ.get("STEP_VARIANT") or min(VARIANTS, key=lambda v: mean[("E384/8x6085/bf16/combined", v)][1])
print("best at 8 x 6,085:", best, flush=True)
from vimbench.bench import runner
from vimbench.results import CaseKey
for res, batch in (tuple(map(int, p.split("x"))) for p in os.environ.get("STEP_SHAPES", "1248x8,224x128").split(",")):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for lv in (VARIANTS[0], best, best, VARIANTS[0]):
        set_defaults(lv)
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=lv, status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                              peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump(kernel_rows=kernel_rows, grads_vs_first=equal, step_rows=step_rows)
set_defaults(VARIANTS[0])
print("case variant event_ms graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:26s} {k[1]:10s} {v[0]:.3f} {v[1]:.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
