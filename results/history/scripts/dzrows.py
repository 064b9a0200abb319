"""Session m: the scan backward's outputs in the forms the training op consumes. (a) dz as the two directions'
terms, stored per direction and summed by the in_proj GEMMs (`kernels.bimamba_inner.op.DZ_HALVES`) instead of fp32
atomics onto a zero-filled buffer plus a cast; (b) dB/dC summed from the per-channel-block partials straight into
bf16 x_dbl-gradient rows by one kernel (`BC_ROWS`, `bwd._bc_rows_kernel`) instead of two fp32 sums, transposes,
casts and a wider concatenation.
(1) The scan backward alone, Vim-Ti 1248 px batch 8 and 224 px batch 128, combined bf16, CUDA-graph replays,
alternated twice: plain vs dz_halves + bc_rows (the kernel part of the change; the GEMM side is only in (2)).
(2) Whole captured Vim-Ti bf16 training steps, A B C C B A: A = both off (the old op), B = DZ_HALVES only,
C = both (the default).
usage (repo root, on the box): (cd results/history/scripts && python dzrows.py) ; writes $OUT/dzrows.json
SMOKE=1 (CPU, TRITON_INTERPRET=1): tiny shapes, the comparisons only (checks the script itself)."""
import json, os, torch
SMOKE = os.environ.get("SMOKE") == "1"
if not SMOKE:
    from timing import graph_us
import kernels.bimamba_inner.op as inner_op
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
                   step_rows=step_rows), open(f"{OUT}/dzrows.json", "w"), indent=1)


DEV = "cpu" if SMOKE else "cuda"
for batch, length in (((1, 37),) if SMOKE else ((8, 6085), (128, 197))):
    case = f"{batch}x{length}"
    x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=16 if SMOKE else 384, length=length), torch.bfloat16, DEV)
    y, ck = bimamba_scan_fwd_save(**x, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(y).mul_(0.1)
    forms = {"plain": {}, "dz_halves+bc_rows": dict(dz_halves=True, bc_rows_dtype=torch.bfloat16)}
    call = lambda f: bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK,  # noqa: E731
                                          **forms[f])
    plain, new = call("plain"), call("dz_halves+bc_rows")
    n = x["A"].shape[-1]
    want_bc = torch.cat([plain[3].transpose(-1, -2), plain[4].transpose(-1, -2)], -1).reshape(2, -1, 2 * n)
    rel = lambda a, b: float((a.float() - b.float()).abs().max() / b.float().abs().max())  # noqa: E731
    checks[case] = dict(dz_rel=rel(new[6].sum(0), plain[6]), bc_rows_rel=rel(new[3], want_bc),
                        others_bitwise=all(torch.equal(a, b) for i, (a, b) in enumerate(zip(plain, new))
                                           if i not in (3, 4, 6) and a is not None))
    print(case, checks[case], flush=True)
    del plain, new, want_bc
    for rep in range(0 if SMOKE else 2):
        for f in (tuple(forms) if rep == 0 else tuple(forms)[::-1]):
            rows.append(dict(case=case, form=f, graph_us=graph_us(lambda: call(f), reps=10)))
            print(rows[-1], flush=True)
    del x, y, ck, g
    torch.cuda.empty_cache() if not SMOKE else None
    dump()
if SMOKE:
    raise SystemExit(0)
from vimbench.bench import runner
from vimbench.results import CaseKey
STEPS = {"A:old": (False, False), "B:dz_halves": (True, False), "C:dz_halves+bc_rows": (True, True)}
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A:old", "B:dz_halves", "C:dz_halves+bc_rows", "C:dz_halves+bc_rows", "B:dz_halves", "A:old"):
        inner_op.DZ_HALVES, inner_op.BC_ROWS = STEPS[tag]
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=tag, status=r.status, img_s=r.fps,
                              p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump()
inner_op.DZ_HALVES, inner_op.BC_ROWS = True, True
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["form"]), []).append(r["graph_us"])
print("case form graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:10s} {k[1]:20s} {sum(v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
