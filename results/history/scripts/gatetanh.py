"""Session v: the z gate's SiLU by one MUFU tanh (`fwd.GATE_TANH`, `fastmath.silu_tanh`: 18 MUFU instructions per
token instead of 19 in the bf16 token walks; static, triton 3.6, `scan/halves/bf16`: 531 -> 523 instructions per 4
tokens, MUFU 76 -> 72, 168 registers, no spill).
(1) The scan alone in the Vim-Ti mixer's inference form (bf16 halves, timed into a new buffer), Vim-Ti 1248 px
batch 64 and 224 px batch 64 (one pass) and 1248 px batch 8 (the chunk-parallel passes), CUDA-graph replays alternated
off / on / on / off (replays off: the switch is a module knob); the error of each against float64 at 1248 px batch 2.
(2) Vim-Ti bf16 logits at 224 px batch 64 (random weights, seed 0), on and off, against the fp32 model's: relative
L2 distance and top-1 agreement.
(3) Whole Vim-Ti bf16 forwards at 1248 px batch 64 through the sweep's runner, eager and CUDA graphs, A B B A.
usage (repo root, on the box): (cd results/history/scripts && python gatetanh.py) ; writes $OUT/gatetanh.json"""
import json, os, torch
from timing import graph_us
import kernels.selective_scan.fwd as fwd
from kernels.launch import call_replay
from kernels.selective_scan.reference import bimamba_scan_ref
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows, checks, model_rows = [], {}, []


def dump():
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), kernel_rows=rows, checks=checks,
                   model_rows=model_rows), open(f"{OUT}/gatetanh.json", "w"), indent=1)


def scan(x, on):
    fwd.GATE_TANH = on
    u = x["u"].clone()
    return fwd.bimamba_scan(**dict(x, u=u), combine=False, out=u)


with call_replay(False):
    x = _scan_inputs(dirs=2)(OpShape(batch=2, channels=384, length=6085), torch.bfloat16, "cuda")
    x64 = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in x.items()}
    ref = bimamba_scan_ref(**x64)
    for on in (False, True):
        got = scan(x, on).double().sum(0)
        checks[f"err_vs_f64_{'on' if on else 'off'}"] = float((got - ref).abs().max() / ref.abs().max())
    print(checks, flush=True)
    del x, x64, ref
    for batch, length in ((64, 6085), (64, 197), (8, 6085)):
        case = f"{batch}x{length}"
        x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=384, length=length), torch.bfloat16, "cuda")
        for on in (False, True, True, False):  # new halves per call: replays must not feed them back as u
            fwd.GATE_TANH = on
            rows.append(dict(case=case, gate_tanh=on, graph_us=graph_us(
                lambda: fwd.bimamba_scan(**x, combine=False), reps=10)))
            print(rows[-1], flush=True)
        del x
        torch.cuda.empty_cache()
        dump()
fwd.GATE_TANH = False

from vimbench.models.registry import create_model
torch.manual_seed(0)
m = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
img = torch.randn(64, 3, 224, 224, device="cuda")
with torch.inference_mode(), call_replay(False):
    ref = m(img).double()
    logits = {}
    for on in (False, True):
        fwd.GATE_TANH = on
        with torch.autocast("cuda", torch.bfloat16):
            logits[on] = m(img).double()
fwd.GATE_TANH = False
for on in (False, True):
    checks[f"logits_rel_l2_vs_fp32_{'on' if on else 'off'}"] = float((logits[on] - ref).norm() / ref.norm())
    checks[f"top1_agree_fp32_{'on' if on else 'off'}"] = float((logits[on].argmax(1) == ref.argmax(1)).float().mean())
checks["logits_rel_l2_on_vs_off"] = float((logits[True] - logits[False]).norm() / logits[False].norm())
print(checks, flush=True)
del m, img
torch.cuda.empty_cache()
dump()

from vimbench.bench import runner
from vimbench.results import CaseKey
for compile_mode in ("none", "cuda-graphs"):
    key = CaseKey(model="vim_t", res=1248, batch=64, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="infer", compile=compile_mode)
    for tag in ("A", "B", "B", "A"):
        fwd.GATE_TANH = tag == "B"
        with call_replay(False):
            r = runner.run_case(key, warmup=3, iters=10)
        model_rows.append(dict(compile=compile_mode, variant=tag, status=r.status, img_s=r.fps,
                               p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(model_rows[-1], flush=True)
        dump()
fwd.GATE_TANH = False
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["gate_tanh"]), []).append(r["graph_us"])
print("case gate_tanh graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:10s} {str(k[1]):5s} {sum(v) / len(v):.1f}")
for r in model_rows:
    print(r["compile"], r["variant"], r["img_s"] and round(r["img_s"], 1), "img/s")
print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in checks.items()})
