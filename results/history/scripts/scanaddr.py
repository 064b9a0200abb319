"""The inference scan's addressing: `_scan_kernel` with the walk compiled once per direction and constexpr token
strides (a trip's second token, its outputs and the L1 prefetches at immediate offsets from one multiply-add per
pointer and trip), its main loop one trip per iteration ("new1") or two ("new2", fwd.UNROLL_TRIPS), both capped
at 168 registers, against the kernel of the commit given as BASE (its fwd.py loaded beside the new one as a separate
module: `git show BASE:kernels/selective_scan/fwd.py > results/history/scripts/fwd_base.py`, not committed).
(1) kernel A/B: event medians and CUDA-graph replays, old new new old, outputs compared bitwise, at the model's
layouts: Vim-Ti/S/B 1248 px batch 64 (bf16 halves, delta, gated: the default memory mode), Vim-Ti with dt_proj fused
(gated: lean; ungated: lean-gated), fp32 combined (the fp32 model), 224 px batch 64, and the training forward
with checkpoints at 224 px batch 128 (one pass); (2) whole eager Vim forwards through the sweep's runner with the
model's kernel switched (fwd._scan_kernel patched, call replays cleared), old new new old.
Writes $OUT/scanaddr.json."""
import importlib.util, json, os, pathlib, sys, torch
from timing import event_median_ms, graph_us
import kernels.selective_scan.fwd as fwd
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
spec = importlib.util.spec_from_file_location("fwd_base", pathlib.Path(__file__).with_name("fwd_base.py"))
old = sys.modules["fwd_base"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
NEW_KERNEL, NEW_CONFIG = fwd._scan_kernel, fwd.scan_launch_config


VARIANTS = {  # tag: (unroll, register cap) of the new kernel, inference and checkpointing forward alike
    "new1": (False, None), "new2": (True, None), "new1c": (False, 168), "new2c": (True, 168)}


def use(tag):
    """Switch the model's scan (fwd._launch) to a variant; the call replays recorded before are dropped."""
    fwd._SCAN_MEMO.clear()
    if tag == "old":
        fwd._scan_kernel = old._scan_kernel
        fwd.scan_launch_config = lambda b, c, n, i, r=0, s=0: old.scan_launch_config(b, c, n, i)
    else:
        fwd._scan_kernel, fwd.scan_launch_config = NEW_KERNEL, NEW_CONFIG
        fwd.UNROLL_TRIPS, fwd.ONE_PASS_MAXNREG = fwd.SAVE_UNROLL_TRIPS, fwd.SAVE_MAXNREG = VARIANTS[tag]


TAGS = ("old", "new1", "new2")  # inference cases; the training forward also the capped ones
TRAIN_TAGS = ("old", "new1", "new2", "new1c", "new2c")

CASES = [  # name, E, batch, L, dtype, halves, dt_proj, gated, save
    ("ti-1248-default", 384, 64, 6085, torch.bfloat16, True, False, True, False),
    ("ti-1248-lean", 384, 64, 6085, torch.bfloat16, True, True, True, False),
    ("ti-1248-lean-gated", 384, 64, 6085, torch.bfloat16, True, True, False, False),
    ("ti-1248-fp32", 384, 64, 6085, torch.float32, False, False, True, False),
    ("s-1248-default", 768, 64, 6085, torch.bfloat16, True, False, True, False),
    ("b-1248-default", 1536, 64, 6085, torch.bfloat16, True, False, True, False),
    ("ti-224-default", 384, 64, 197, torch.bfloat16, True, False, True, False),
    ("ti-224-train-fwd", 384, 128, 197, torch.bfloat16, False, False, True, True),
]
kernel_rows, equal = [], {}
for name, E, B, L, dtype, halves, dt_proj, gated, save in CASES:
    args = _scan_inputs(dirs=2, halves=halves, dt_proj=dt_proj)(OpShape(batch=B, channels=E, length=L), dtype, "cuda")
    if not gated:
        args["z"] = None
    tags = TRAIN_TAGS if save else TAGS
    outs = {}
    for tag in tags:
        mod = old if tag == "old" else fwd
        if save:
            run = (lambda mod=mod: mod.bimamba_scan_fwd_save(**args, chunk=128))
        elif halves:
            buf = torch.empty_like(args["u"])
            kw = dict(args, out=buf)
            run = (lambda mod=mod, kw=kw: mod.bimamba_scan(**kw))
        else:
            run = (lambda mod=mod: mod.bimamba_scan(**args))
        outs[tag] = run
    res = {}
    for tag, fn in outs.items():
        use(tag)
        r = fn()
        res[tag] = [t.clone() for t in (r if isinstance(r, tuple) else (r,))]
    for tag in tags[1:]:
        equal[f"{name}/{tag}"] = dict(
            bitwise=all(torch.equal(a, b) for a, b in zip(res["old"], res[tag])),
            max_rel=max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                        for a, b in zip(res["old"], res[tag])))
    del res
    for rep in range(2):
        for tag in (tags if rep == 0 else tags[::-1]):
            use(tag)
            kernel_rows.append(dict(case=name, impl=tag, event_ms=event_median_ms(outs[tag]),
                                    graph_us=graph_us(outs[tag], reps=10)))
            print(kernel_rows[-1], flush=True)
    del args, outs
    torch.cuda.empty_cache()
print("outputs vs old:", equal, flush=True)

from vimbench.bench import runner
from vimbench.results import CaseKey
def best(case_names, tags):
    total = {t: sum(r["graph_us"] for r in kernel_rows if r["case"] in case_names and r["impl"] == t) for t in tags}
    return min(total, key=total.get)


BEST_INFER = best(("ti-1248-default", "ti-1248-lean-gated", "ti-1248-fp32", "s-1248-default"), TAGS[1:])
BEST_TRAIN = best(("ti-224-train-fwd",), TRAIN_TAGS[1:])
print("picked:", BEST_INFER, BEST_TRAIN, flush=True)
step_rows = []
for model, res, batch, dtype, memory, mode, comp in (
        ("vim_t", 1248, 64, "bf16", "default", "infer", "none"), ("vim_t", 1248, 64, "bf16", "lean-gated", "infer", "none"),
        ("vim_s", 1248, 64, "bf16", "default", "infer", "none"), ("vim_t", 1248, 64, "fp32", "default", "infer", "none"),
        ("vim_t", 224, 128, "bf16", "default", "train", "cuda-graphs")):
    key = CaseKey(model=model, res=res, batch=batch, dtype=dtype, implementation="triton", attn=None, device="cuda",
                  vim_memory=memory, mode=mode, compile=comp)
    pick = BEST_TRAIN if mode == "train" else BEST_INFER
    for tag in ("old", pick, pick, "old"):
        use(tag)
        r = runner.run_case(key, warmup=3, iters=15)
        step_rows.append(dict(model=model, res=res, batch=batch, dtype=dtype, memory=memory, mode=mode, impl=tag,
                              status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib,
                              error=r.error))
        print(step_rows[-1], flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               baseline_commit=os.environ.get("BASE"), kernel_rows=kernel_rows, outputs_vs_old=equal, picked=[BEST_INFER, BEST_TRAIN],
               step_rows=step_rows), open(f"{OUT}/scanaddr.json", "w"), indent=1)
mean = {}
for r in kernel_rows:
    mean.setdefault((r["case"], r["impl"]), []).append((r["event_ms"], r["graph_us"]))
print("case impl event_ms graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:20s} {k[1]:4s} {sum(a for a, _ in v) / 2:.3f} {sum(b for _, b in v) / 2:.1f}")
for r in step_rows:
    print(r["model"], r["res"], r["batch"], r["dtype"], r["memory"], r["mode"], r["impl"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
