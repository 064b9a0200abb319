"""Session l's unmeasured changes to the training scans, for the next device call (written in session l, run
later): (a) B and C read from an fp32 copy of x_dbl's columns (`kernels.bimamba_inner.op.SCAN_BC_FP32`, on since
commit 421f148) against the bf16 views; (b) the backward walk without channel masks (`bwd.UNMASKED_WALK`, off).
(1) Kernels, CUDA-graph replays and event medians, alternated twice, Vim-Ti 1248 px batch 8 and 224 px batch
128, bf16: the checkpointing forward and the scan backward with B/C as bf16 views of x_dbl (what training passed
before) and as fp32, the backward also unmasked; outputs and gradients compared with the bf16-view run's
(same values in: equal up to FMA contraction). (2) Whole captured Vim-Ti bf16 training steps, A B C C B A:
A = bf16 B/C (SCAN_BC_FP32 off), B = the default, C = the default + UNMASKED_WALK.
usage (repo root, on the box): (cd results/history/scripts && python bcmask.py) ; writes $OUT/bcmask.json
SMOKE=1 (CPU, TRITON_INTERPRET=1): tiny shapes, the comparisons only (checks the script itself)."""
import json, os, torch
SMOKE = os.environ.get("SMOKE") == "1"
if not SMOKE:
    from timing import event_median_ms, graph_us
import kernels.bimamba_inner.op as inner_op
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows, equal, step_rows = [], {}, []


def dump():
    json.dump(dict(device="cpu" if SMOKE else torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), kernel_rows=rows, outputs_vs_bf16=equal,
                   step_rows=step_rows), open(f"{OUT}/bcmask.json", "w"), indent=1)


DEV = "cpu" if SMOKE else "cuda"
for batch, length in (((1, 37),) if SMOKE else ((8, 6085), (128, 197))):
    case = f"{batch}x{length}"
    base = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=16 if SMOKE else 384, length=length),
                                torch.bfloat16, DEV)
    n = base["A"].shape[-1]
    x16 = torch.zeros(2, batch, length, 48, dtype=torch.bfloat16, device=DEV)  # training's bf16 x_dbl rows
    x16[..., :n] = base["B"].transpose(2, 3)
    x16[..., n:2 * n] = base["C"].transpose(2, 3)
    f32 = x16[..., :2 * n].float()  # exactly the bf16 values, as SCAN_BC_FP32 copies them
    forms = {"bf16": (x16[..., :n].transpose(2, 3), x16[..., n:2 * n].transpose(2, 3)),
             "fp32": (f32[..., :n].transpose(2, 3), f32[..., n:].transpose(2, 3))}
    args = {k: v for k, v in base.items() if k not in ("B", "C")}
    fwd_out = {}
    for form, (B, C) in forms.items():
        fwd_out[form] = bimamba_scan_fwd_save(**args, B=B, C=C, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(fwd_out["bf16"][0]).mul_(0.1)
    ck = fwd_out["bf16"][1]
    variants = {"bf16": dict(form="bf16", unmasked=False), "fp32": dict(form="fp32", unmasked=False),
                "fp32+unmasked": dict(form="fp32", unmasked=True)}

    def bwd_call(v):
        bwd.UNMASKED_WALK = variants[v]["unmasked"]
        B, C = forms[variants[v]["form"]]
        return bwd.bimamba_scan_bwd(g, **args, B=B, C=C, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK)

    ref = bwd_call("bf16")
    for v in ("fp32", "fp32+unmasked"):
        got = bwd_call(v)
        pairs = [(a, b) for a, b in zip(ref, got) if a is not None]
        equal[f"{case}/bwd/{v}"] = dict(bitwise=all(torch.equal(a, b) for a, b in pairs), max_rel=max(
            float((a.float() - b.float()).abs().max() / a.float().abs().max().clamp_min(1e-30)) for a, b in pairs))
    a, b = fwd_out["bf16"], fwd_out["fp32"]
    equal[f"{case}/fwd/fp32"] = dict(out_bitwise=torch.equal(a[0], b[0]), ckpt_bitwise=torch.equal(a[1], b[1]))
    del ref, got, pairs, fwd_out
    print(case, {k: v for k, v in equal.items() if k.startswith(case)}, flush=True)
    for rep in range(0 if SMOKE else 2):
        for form in (("bf16", "fp32") if rep == 0 else ("fp32", "bf16")):
            B, C = forms[form]
            run = lambda: bimamba_scan_fwd_save(**args, B=B, C=C, combine=True, chunk=CHECKPOINT_CHUNK)
            rows.append(dict(case=case, kernel="fwd_save", variant=form, event_ms=event_median_ms(run),
                             graph_us=graph_us(run, reps=10)))
            print(rows[-1], flush=True)
        for v in (tuple(variants) if rep == 0 else tuple(variants)[::-1]):
            bwd.UNMASKED_WALK = variants[v]["unmasked"]
            run = lambda: bwd_call(v)
            rows.append(dict(case=case, kernel="bwd", variant=v, event_ms=event_median_ms(run),
                             graph_us=graph_us(run, reps=10)))
            print(rows[-1], flush=True)
    bwd.UNMASKED_WALK = False
    del args, base, forms, g, ck
    torch.cuda.empty_cache()
    dump()
if SMOKE:
    raise SystemExit(0)
from vimbench.bench import runner
from vimbench.results import CaseKey
STEPS = {"A:bf16-bc": (False, False), "B:default": (True, False), "C:default+unmasked-walk": (True, True)}
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A:bf16-bc", "B:default", "C:default+unmasked-walk", "C:default+unmasked-walk", "B:default",
                "A:bf16-bc"):
        inner_op.SCAN_BC_FP32, bwd.UNMASKED_WALK = STEPS[tag]
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=tag, status=r.status, img_s=r.fps,
                              p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump()
inner_op.SCAN_BC_FP32, bwd.UNMASKED_WALK = True, False
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["kernel"], r["variant"]), []).append(r["graph_us"])
print("case kernel variant graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:10s} {k[1]:9s} {k[2]:16s} {sum(v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
