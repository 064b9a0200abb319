"""Session y: the scan backward's launch choices re-measured with the bf16 walk scratch (on since session x) and
checkpoints every 128 tokens (since session i); they were tuned with an fp32 scratch and 64-token chunks:
groups along L (chunks_per_program; the default gives 16 groups = 3,072 walk programs at Vim-Ti 1248/8), the
two-level recompute (sub_chunk: the scratch small enough for L2), and two walk launches (channel_splits). The training
op's form (combined bf16, dz halves, bf16 dB/dC rows), Vim-Ti 8 x 6,085 and 128 x 197: each variant's gradients
against the default's (max abs difference relative to the default's largest value), then CUDA-graph replays in the
order variants, then reversed (us per call, both kept).
usage (repo root, on the box): (cd results/history/scripts && python walktune.py) ; writes $OUT/walktune.json"""
import json, os, torch
from timing import graph_us
import kernels.selective_scan.bwd as bwd
from kernels.selective_scan.fwd import bimamba_scan_fwd_save
from kernels.selective_scan.op import CHECKPOINT_CHUNK
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
VARIANTS = {
    (8, 6085): {"default": {}, "groups 24": dict(chunks_per_program=2), "groups 12": dict(chunks_per_program=4),
                "groups 8": dict(chunks_per_program=6), "sub 32": dict(sub_chunk=32),
                "sub 64": dict(sub_chunk=64), "splits 2": dict(channel_splits=2)},
    (128, 197): {"default": {}, "groups 2": dict(chunks_per_program=1), "sub 32": dict(sub_chunk=32),
                 "sub 64": dict(sub_chunk=64), "splits 2": dict(channel_splits=2)},
}
rows, errors = [], {}


def dump():
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   commit=os.environ.get("VIMBENCH_GIT_COMMIT"), chunk=CHECKPOINT_CHUNK, rows=rows, errors=errors),
              open(f"{OUT}/walktune.json", "w"), indent=1)


for (batch, length), variants in VARIANTS.items():
    case = f"{batch}x{length}"
    x = _scan_inputs(dirs=2)(OpShape(batch=batch, channels=384, length=length), torch.bfloat16, "cuda")
    y, ck = bimamba_scan_fwd_save(**x, combine=True, chunk=CHECKPOINT_CHUNK)
    g = torch.randn_like(y).mul_(0.1)
    form = dict(dz_halves=True, bc_rows_dtype=torch.bfloat16)
    call = lambda kw: bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, chunk=CHECKPOINT_CHUNK,  # noqa: E731
                                           **form, **kw)
    ref = [t.float().clone() for t in call({}) if t is not None]
    errors[case] = {}
    for name, kw in variants.items():
        try:
            got = [t.float() for t in call(kw) if t is not None]
            errors[case][name] = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
        except Exception as e:  # a variant that does not apply here is a result, not the end of the call
            errors[case][name] = f"error: {type(e).__name__}: {e}"
        print(case, name, errors[case][name], flush=True)
    ok = [n for n in variants if not isinstance(errors[case][n], str)]
    for order in (ok, ok[::-1]):
        for name in order:
            rows.append(dict(case=case, variant=name, graph_us=graph_us(lambda: call(variants[name]), reps=10)))
            print(rows[-1], flush=True)
            dump()
    del x, y, ck, g, ref
    torch.cuda.empty_cache()
dump()
print("scan backward (training form), us per call: first pass / reversed pass; max rel diff from the default")
for case, errs in errors.items():
    for name, err in errs.items():
        t = [r["graph_us"] for r in rows if r["case"] == case and r["variant"] == name]
        print(f"{case:9s} {name:9s} {' / '.join(f'{v:.1f}' for v in t):20s} {err if isinstance(err, str) else f'{err:.1e}'}")
