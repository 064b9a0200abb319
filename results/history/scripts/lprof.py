"""Why compiled lean is slower than eager lean (memory-modes sweep 2026-12-03d: eager 688, compiled 647 img/s, while
the default mode gains 660 -> 689): GPU kernels per forward of Vim-Ti at 1248 px, batch 64, bf16, eager vs compiled
(default mode, frozen), memory modes default / lean / lean-gated; event-timed medians. Writes $OUT/lprof.json."""
import json, os, torch
import timing
from vimbench.models.registry import create_model
from vimbench.models.vim import set_memory_mode
from vimbench.bench import compiler
OUT = os.environ.get("OUT", "/tmp")
RES, BATCH = int(os.environ.get("LPROF_RES", 1248)), int(os.environ.get("LPROF_BATCH", 64))
res = {}

kernels = timing.kernel_table


def timed(f):
    return timing.event_median_ms(f, n=10)


model = create_model("vim_t", img_size=RES, backend="triton").cuda().eval()
x = torch.randn(BATCH, 3, RES, RES, device="cuda")
def run(m):
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return m(x)
    return f
for mem in os.environ.get("LPROF_MODES", "default,lean,lean-gated").split(","):
    set_memory_mode(model, mem)
    eager = run(model); ref = eager()
    r = {"eager": kernels(eager), "eager_ms": timed(eager)}
    compiler.reset()
    cm = run(compiler.compile_model(model, "default", freeze=True)); out = cm()
    r["max_abs_diff"] = float((out.float() - ref.float()).abs().max())
    r["compiled"] = kernels(cm); r["compiled_ms"] = timed(cm)
    compiler.reset(); del cm
    res[mem] = r
    print(mem, {k: (v if isinstance(v, float) else (v["kernels_per_fwd"], round(v["gpu_us_per_fwd"], 1))) for k, v in r.items()}, flush=True)
    torch.cuda.empty_cache()
json.dump(dict(commit=os.environ.get("VIMBENCH_GIT_COMMIT"), res=RES, batch=BATCH, modes=res), open(f"{OUT}/lprof{os.environ.get('LPROF_TAG', '')}.json", "w"), indent=1)
for mem, r in res.items():
    for which in ("eager", "compiled"):
        print(f"== {mem} {which}: {r[which]['kernels_per_fwd']:.0f} kernels, {r[which]['gpu_us_per_fwd']/1000:.1f} ms, event {r[which + '_ms']:.1f} ms")
        for row in r[which]["top"][:14]:
            print(f"   {row[1]:6.1f} x {row[2]:9.1f} us  {row[0]}")
