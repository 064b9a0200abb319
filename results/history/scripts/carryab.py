"""Pass A of the scan backward (`bwd._scan_bwd_group_carry_kernel`) two steps per trip with register prefetch
(`bwd.CARRY_PREFETCH`, "new") or one step per trip without ("noprefetch": the old loop, per direction with constexpr
token strides), against the bwd.py of the commit given as BASE loaded beside it (`git show
BASE:kernels/selective_scan/bwd.py > results/history/scripts/bwd_base.py`, not committed). (1) whole scan-backward
calls (pass A runs where L splits into several chunk groups: batch 8 at 1248 px) as CUDA-graph replays and event
medians, alternated twice, gradients compared with the old kernel's; (2) whole captured Vim-Ti training steps at
1248 px batch 8, old new new old. Writes $OUT/carryab.json."""
import importlib.util, json, os, pathlib, sys, torch
from timing import event_median_ms, graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
spec = importlib.util.spec_from_file_location("bwd_base", pathlib.Path(__file__).with_name("bwd_base.py"))
old = sys.modules["bwd_base"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
NEW_FN = bwd.bimamba_scan_bwd


def use(tag):
    bwd.CARRY_PREFETCH = tag != "noprefetch"
    bwd.bimamba_scan_bwd = old.bimamba_scan_bwd if tag == "old" else NEW_FN
    return bwd.bimamba_scan_bwd


def dump(**kw):
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), baseline_commit=os.environ.get("BASE"), **kw),
              open(f"{OUT}/carryab.json", "w"), indent=1)


TAGS = ("old", "new", "noprefetch")
kernel_rows, equal, step_rows = [], {}, []
for E, dtype in ((384, torch.bfloat16), (768, torch.bfloat16), (384, torch.float32)):
    name = f"E{E}/8x6085/{'bf16' if dtype == torch.bfloat16 else 'fp32'}/combined"
    args = _scan_inputs(dirs=2)(OpShape(batch=8, channels=E, length=6085), dtype, "cuda")
    out, ck = bimamba_scan_fwd_save(**args, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(out).mul_(0.1)
    grads = {}
    for tag in TAGS:
        grads[tag] = use(tag)(g, **args, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK)
    for tag in TAGS[1:]:
        pairs = [(a, b) for a, b in zip(grads["old"], grads[tag]) if a is not None]
        equal[f"{name}/{tag}"] = dict(
            bitwise=all(torch.equal(a, b) for a, b in pairs),
            max_rel=max(float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30))
                        for a, b in pairs))
    del grads, pairs
    print(name, {k: v for k, v in equal.items() if k.startswith(name)}, flush=True)
    for rep in range(2):
        for tag in (TAGS if rep == 0 else TAGS[::-1]):
            fn = use(tag)
            run = lambda: fn(g, **args, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK)
            kernel_rows.append(dict(case=name, impl=tag, event_ms=event_median_ms(run), graph_us=graph_us(run, reps=10)))
            print(kernel_rows[-1], flush=True)
    del args, out, ck, g
    torch.cuda.empty_cache()
    dump(kernel_rows=kernel_rows, grads_vs_old=equal, step_rows=step_rows)

from vimbench.bench import runner
from vimbench.results import CaseKey
key = CaseKey(model="vim_t", res=1248, batch=8, dtype="bf16", implementation="triton", attn=None, device="cuda",
              mode="train", compile="cuda-graphs")
for tag in ("old", "new", "new", "old"):
    use(tag)
    r = runner.run_case(key, warmup=3, iters=10)
    step_rows.append(dict(res=1248, batch=8, impl=tag, status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50,
                          peak_alloc_mib=r.peak_alloc_mib, error=r.error))
    print(step_rows[-1], flush=True)
    dump(kernel_rows=kernel_rows, grads_vs_old=equal, step_rows=step_rows)
use("new")
mean = {}
for r in kernel_rows:
    mean.setdefault((r["case"], r["impl"]), []).append((r["event_ms"], r["graph_us"]))
print("case impl event_ms graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:26s} {k[1]:10s} {sum(a for a, _ in v) / len(v):.3f} {sum(b for _, b in v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["impl"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
