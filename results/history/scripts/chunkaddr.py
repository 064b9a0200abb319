"""The chunk-parallel forward's addressing (kernels/NOTES.md, "The chunk-parallel passes' addressing"): pass 3 on
`fwd._walk` (per-direction copies, constexpr token strides, two trips per iteration, uncapped), pass 1 on
`chunked._states_walk` (the same), and the training forward's checkpoints taken from the chunks' entry states
(T == K: pass 3 runs as at inference), against the launch path of the commit given as BASE (its fwd.py and
chunked.py loaded beside the new ones: `git show BASE:kernels/selective_scan/fwd.py | sed 's/^    from
kernels.selective_scan import chunked$/    import chunked_base as chunked/' > results/history/scripts/fwd_base.py`
and `git show BASE:kernels/selective_scan/chunked.py | sed 's/^from kernels.selective_scan.fwd import (/from
fwd_base import (/' > results/history/scripts/chunked_base.py`, not committed).
(1) kernel A/B at batch 8 (the chunked grids): event medians and CUDA-graph replays, alternated, outputs and
checkpoints compared with the old path's; variants: "new" (the defaults), "noentry" (ENTRY_CHECKPOINTS off: pass 3
stores checkpoints in its loop, the old form), "s1" (pass 1 one trip per iteration).
(2) whole captured Vim-Ti training steps through the sweep's runner, old new new old.
Writes $OUT/chunkaddr.json after every case."""
import importlib.util, json, os, pathlib, sys, torch
from timing import event_median_ms, graph_us
import kernels.selective_scan.fwd as fwd
import kernels.selective_scan.chunked as chunked
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
here = pathlib.Path(__file__).parent
sys.path.insert(0, str(here))
old = importlib.import_module("fwd_base")
NEW_LAUNCH = fwd._launch
DEFAULTS = dict(ENTRY_CHECKPOINTS=chunked.ENTRY_CHECKPOINTS, STATES_UNROLL_TRIPS=chunked.STATES_UNROLL_TRIPS)
VARIANTS = {"new": {}, "noentry": dict(ENTRY_CHECKPOINTS=False), "s1": dict(STATES_UNROLL_TRIPS=False)}


def use(tag):
    fwd._SCAN_MEMO.clear()
    if tag == "old":
        fwd._launch = old._launch
    else:
        fwd._launch = NEW_LAUNCH
        for k, v in dict(DEFAULTS, **VARIANTS[tag]).items():
            setattr(chunked, k, v)


def dump(**kw):
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), baseline_commit=os.environ.get("BASE"), **kw),
              open(f"{OUT}/chunkaddr.json", "w"), indent=1)


CASES = [  # name, E, batch, L, dtype, halves, save, tags
    ("ti-1248-b8-train-bf16", 384, 8, 6085, torch.bfloat16, True, True, ("old", "new", "noentry", "s1")),
    ("ti-1248-b8-infer-bf16", 384, 8, 6085, torch.bfloat16, True, False, ("old", "new", "s1")),
    ("ti-1248-b8-train-fp32", 384, 8, 6085, torch.float32, False, True, ("old", "new", "noentry")),
    ("s-1248-b8-train-bf16", 768, 8, 6085, torch.bfloat16, True, True, ("old", "new")),
    ("ti-1024-b8-train-bf16", 384, 8, 4097, torch.bfloat16, True, True, ("old", "new")),
]
kernel_rows, equal, step_rows = [], {}, []
for name, E, B, L, dtype, halves, save, tags in CASES:
    args = _scan_inputs(dirs=2, halves=halves)(OpShape(batch=B, channels=E, length=L), dtype, "cuda")
    args.pop("combine", None)  # given below
    if save:
        run = lambda: fwd.bimamba_scan_fwd_save(**args, combine=not halves, chunk=CHECKPOINT_CHUNK)
    else:
        buf = torch.empty_like(args["u"])
        run = lambda: fwd.bimamba_scan(**args, combine=False, out=buf)
    res = {}
    for tag in tags:
        use(tag)
        r = run()
        res[tag] = [t.clone() for t in (r if isinstance(r, tuple) else (r,))]
    for tag in tags[1:]:
        equal[f"{name}/{tag}"] = dict(
            bitwise=all(torch.equal(a, b) for a, b in zip(res["old"], res[tag])),
            max_rel=max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                        for a, b in zip(res["old"], res[tag])))
    print(name, {k: v for k, v in equal.items() if k.startswith(name)}, flush=True)
    del res
    for rep in range(2):
        for tag in (tags if rep == 0 else tags[::-1]):
            use(tag)
            kernel_rows.append(dict(case=name, impl=tag, event_ms=event_median_ms(run), graph_us=graph_us(run, reps=10)))
            print(kernel_rows[-1], flush=True)
    del args
    torch.cuda.empty_cache()
    dump(kernel_rows=kernel_rows, outputs_vs_old=equal, step_rows=step_rows)

from vimbench.bench import runner
from vimbench.results import CaseKey
for res_px, batch, dtype in ((1248, 8, "bf16"), (1024, 8, "bf16"), (1248, 8, "fp32")):
    key = CaseKey(model="vim_t", res=res_px, batch=batch, dtype=dtype, implementation="triton", attn=None,
                  device="cuda", vim_memory="default", mode="train", compile="cuda-graphs")
    for tag in ("old", "new", "new", "old"):
        use(tag)
        r = runner.run_case(key, warmup=3, iters=15)
        step_rows.append(dict(model="vim_t", res=res_px, batch=batch, dtype=dtype, mode="train", impl=tag,
                              status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                              peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump(kernel_rows=kernel_rows, outputs_vs_old=equal, step_rows=step_rows)
mean = {}
for r in kernel_rows:
    mean.setdefault((r["case"], r["impl"]), []).append((r["event_ms"], r["graph_us"]))
print("case impl event_ms graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:24s} {k[1]:8s} {sum(a for a, _ in v) / len(v):.3f} {sum(b for _, b in v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["dtype"], r["impl"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
