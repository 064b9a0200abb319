"""The one-pass scan with B and C rows staged through shared memory by Triton's pipeliner
(`kernels/selective_scan/staged.py`, `fwd.STAGED_SCAN` stages, `fwd.STAGED_CARRY`), against the shipped token walk
(`fwd._scan_kernel`), at the model's layouts (bimamba_scan inputs as `vimbench kernels` builds them).
(1) kernel A/B: CUDA-graph replays (10 calls per graph, median of 7), variants in order then reversed; outputs
against the shipped kernel's (max error relative to its largest output);
(2) whole eager Vim-Ti 1248 px batch-64 bf16 forwards through the sweep's runner, shipped / best / best / shipped.
Env STAGED_VARIANTS: comma list of STAGES:CARRY[:nj][:lD][:tT] (nj: B and C rows loaded apart even where they are
joined; lD: the L1 prefetch of u, delta and z D steps ahead; tT: T tokens per trip; default
3:2:l6,3:0:l8:t4,4:0:l16:t4).
STAGED_CASES: comma list of the kernel cases' names (default all). Writes $OUT/stagedscan.json."""
import json, os, torch
from timing import graph_us
import kernels.selective_scan.fwd as fwd
import kernels.selective_scan.staged as staged
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
VARIANTS = ["base"] + os.environ.get("STAGED_VARIANTS", "3:2:l6,3:0:l8:t4,4:0:l16:t4").split(",")


JOINED = staged.bc_joined


def use(tag):
    fwd._SCAN_MEMO.clear()
    staged.bc_joined = JOINED
    fwd.STAGED_L1_AHEAD, fwd.STAGED_TRIP = 0, 2
    if tag == "base":
        fwd.STAGED_SCAN = 0
    else:
        stages, carry, *rest = tag.split(":")
        fwd.STAGED_SCAN, fwd.STAGED_CARRY = int(stages), int(carry)
        for opt in rest:
            if opt == "nj":
                staged.bc_joined = lambda B, C: False
            elif opt.startswith("l"):
                fwd.STAGED_L1_AHEAD = int(opt[1:])
            elif opt.startswith("t"):
                fwd.STAGED_TRIP = int(opt[1:])


CASES = [  # name, E, batch, L, dtype, halves
    ("ti-1248-bf16", 384, 64, 6085, torch.bfloat16, True),
    ("s-1248-bf16", 768, 64, 6085, torch.bfloat16, True),
    ("ti-224-bf16", 384, 64, 197, torch.bfloat16, True),
]
CASES = [c for c in CASES if c[0] in os.environ.get("STAGED_CASES", ",".join(c[0] for c in CASES)).split(",")]
rows, errors = [], {}
for name, E, B, L, dtype, halves in CASES:
    args = _scan_inputs(dirs=2, halves=halves, dt_proj=False)(OpShape(batch=B, channels=E, length=L), dtype, "cuda")
    if halves:
        buf = torch.empty_like(args["u"])
        run = lambda: fwd.bimamba_scan(**dict(args, out=buf))
    else:
        run = lambda: fwd.bimamba_scan(**args)
    print(name, "B and C rows joined:", JOINED(args["B"], args["C"]), flush=True)
    ref = None
    for tag in VARIANTS:
        use(tag)
        out = run().clone()
        if ref is None:
            ref = out
        else:
            errors[f"{name}/{tag}"] = float((out.float() - ref.float()).abs().max() / ref.float().abs().max())
            print(name, tag, "err", errors[f"{name}/{tag}"], flush=True)
    del out, ref
    for rep in range(2):
        for tag in (VARIANTS if rep == 0 else VARIANTS[::-1]):
            use(tag)
            rows.append(dict(case=name, impl=tag, graph_us=graph_us(run, reps=10)))
            print(rows[-1], flush=True)
    del args
    torch.cuda.empty_cache()

mean = {}
for r in rows:
    mean.setdefault((r["case"], r["impl"]), []).append(r["graph_us"])
best_tag = min(VARIANTS[1:], key=lambda t: sum(sum(mean[(c[0], t)]) for c in CASES[:2]))
from vimbench.bench import runner
from vimbench.results import CaseKey
steps = []
key = CaseKey(model="vim_t", res=1248, batch=64, dtype="bf16", implementation="triton", attn=None, device="cuda",
              vim_memory="default", mode="infer", compile="none")
for tag in ("base", best_tag, best_tag, "base"):
    use(tag)
    r = runner.run_case(key, warmup=3, iters=15)
    steps.append(dict(impl=tag, status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib,
                      error=r.error))
    print(steps[-1], flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               kernel_rows=rows, errors_vs_base=errors, best=best_tag, step_rows=steps),
          open(f"{OUT}/stagedscan.json", "w"), indent=1)
print("case impl graph_us (mean of 2)")
for (case, impl), v in mean.items():
    print(f"{case:14s} {impl:5s} {sum(v) / len(v):9.1f}")
for r in steps:
    print("vim_t 1248/64 bf16 eager", r["impl"], r["img_s"] and round(r["img_s"], 1), "img/s")
