"""Session m: the 16-bit training forward's halves summed by the scan itself (`kernels.bimamba_inner.op.ORDERED_SUM`,
`bimamba_scan_fwd_save(ordered_sum=True)`): the directions launch in order and the second adds the first's stored
half, instead of one launch writing both halves over u and a torch.add.
(1) The checkpointing forward (+ the add where there is one), Vim-Ti 1248 px batch 8 and 224 px batch 128, bf16,
CUDA-graph replays, alternated twice. (2) Whole captured Vim-Ti bf16 training steps, A B B A (A: off, B: on).
usage (repo root, on the box): (cd results/history/scripts && python ordsum.py) ; writes $OUT/ordsum.json
SMOKE=1 (CPU, TRITON_INTERPRET=1): tiny shapes, the comparison only."""
import json, os, torch
SMOKE = os.environ.get("SMOKE") == "1"
if not SMOKE:
    from timing import graph_us
import kernels.bimamba_inner.op as inner_op
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
rows, checks, step_rows = [], {}, []


def dump():
    json.dump(dict(device="cpu" if SMOKE else torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), kernel_rows=rows, checks=checks,
                   step_rows=step_rows), open(f"{OUT}/ordsum.json", "w"), indent=1)


DEV = "cpu" if SMOKE else "cuda"
for batch, length in (((1, 37),) if SMOKE else ((8, 6085), (128, 197))):
    case = f"{batch}x{length}"
    x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=16 if SMOKE else 384, length=length), torch.bfloat16, DEV)

    def halves_add():
        h, ck = bimamba_scan_fwd_save(**x, combine=False, chunk=CHECKPOINT_CHUNK)
        return torch.add(h[0].transpose(1, 2), h[1].transpose(1, 2)), ck

    def ordered():
        y, ck = bimamba_scan_fwd_save(**x, combine=False, chunk=CHECKPOINT_CHUNK, ordered_sum=True)
        return y.transpose(1, 2), ck

    forms = {"halves+add": halves_add, "ordered": ordered}
    (a, ca), (b, cb) = halves_add(), ordered()
    checks[case] = dict(max_rel=float((a.float() - b.float()).abs().max() / a.float().abs().max()),
                        ckpt_max_rel=float((ca - cb).abs().max() / ca.abs().max().clamp_min(1e-30)))
    print(case, checks[case], flush=True)
    del a, b, ca, cb
    for rep in range(0 if SMOKE else 2):
        for f in (tuple(forms) if rep == 0 else tuple(forms)[::-1]):
            rows.append(dict(case=case, form=f, graph_us=graph_us(forms[f], reps=10)))
            print(rows[-1], flush=True)
    del x
    dump()
if SMOKE:
    raise SystemExit(0)
from vimbench.bench import runner
from vimbench.results import CaseKey
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A:halves+add", "B:ordered", "B:ordered", "A:halves+add"):
        inner_op.ORDERED_SUM = tag.startswith("B")
        r = runner.run_case(key, warmup=3, iters=10)
        step_rows.append(dict(res=res, batch=batch, variant=tag, status=r.status, img_s=r.fps,
                              p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(step_rows[-1], flush=True)
        dump()
inner_op.ORDERED_SUM = True
mean = {}
for r in rows:
    mean.setdefault((r["case"], r["form"]), []).append(r["graph_us"])
print("case form graph_us (mean of 2)")
for k, v in mean.items():
    print(f"{k[0]:10s} {k[1]:12s} {sum(v) / len(v):.1f}")
for r in step_rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
