"""The training forward's checkpoint interval (`kernels.selective_scan.op.CHECKPOINT_CHUNK`, read by the Vim
mixer's training op as `kernels.bimamba_inner.op.CHECKPOINT_CHUNK`): fp32 states every K tokens, 2 x batch x
cdiv(L, K) x N x E per layer (at 1248 px batch 8, K = 64: 37.7 MB per layer, 0.9 GB for Vim-Ti's 24), against the
backward's per-program scratch (K / 2 state tiles in the pairs walk). Whole captured Vim-Ti training steps through
the sweep's runner (img/s, peak allocated), K = 64, 128, 256 in the order 64 128 256 256 128 64 per point.
CKPT_KS=32,64,128: other values (same mirrored order; session y, with the bf16 walk scratch: K = 64 makes the
resident programs' scratch ~50 MB, about the L2). Writes $OUT/ckptab.json."""
import json, os, torch
import kernels.bimamba_inner.op as inner
from vimbench.bench import runner
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
rows = []
KS = [int(k) for k in os.environ.get("CKPT_KS", "64,128,256").split(",")]
DEFAULT_K = inner.CHECKPOINT_CHUNK
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for k in KS + KS[::-1]:
        inner.CHECKPOINT_CHUNK = k
        r = runner.run_case(key, warmup=3, iters=10)
        rows.append(dict(res=res, batch=batch, checkpoint_chunk=k, status=r.status, img_s=r.fps,
                         p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(rows[-1], flush=True)
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows), open(f"{OUT}/ckptab.json", "w"),
                  indent=1)
inner.CHECKPOINT_CHUNK = DEFAULT_K
agg = {}
for r in rows:
    agg.setdefault((r["res"], r["batch"], r["checkpoint_chunk"]), []).append(r)
print("res batch K img/s(mean of 2) peak GiB")
for (res, b, k), rs in agg.items():
    ok = [x for x in rs if x["img_s"]]
    print(res, b, k, ok and round(sum(x["img_s"] for x in ok) / len(ok), 1),
          ok and round(max(x["peak_alloc_mib"] for x in ok) / 1024, 3), [x["status"] for x in rs])
