"""A/B of the training forward's checkpoint chunk on the H200: Vim-Ti training steps (bf16, backend triton, the step
captured as a CUDA graph and eager) with SHORT_SEQUENCE_TOKENS = 0 (chunk 64 everywhere) vs 2048 (chunk 32 at
224 and 512 px), alternating A B B A in one process through the sweep's own runner. Writes $OUT/chunkab.json."""
import json, os
import kernels.selective_scan.op as scan_op
from vimbench.bench import runner
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
rows = []
for res, batch in ((224, 128), (512, 32)):
    for compile_mode in ("cuda-graphs", "none"):
        key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                      device="cuda", mode="train", compile=compile_mode)
        for short in (0, 2048, 2048, 0):
            scan_op.SHORT_SEQUENCE_TOKENS = short
            r = runner.run_case(key, warmup=3, iters=10)
            row = dict(res=res, batch=batch, compile=compile_mode, chunk=scan_op.checkpoint_chunk(r.tokens or 0),
                       status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib,
                       host_us_per_op=r.host_us_per_op, error=r.error)
            rows.append(row)
            print(row, flush=True)
json.dump(rows, open(f"{OUT}/chunkab.json", "w"), indent=1)
print("res batch compile chunk img/s p50_ms peak_MiB")
for r in rows:
    print(r["res"], r["batch"], r["compile"], r["chunk"], r["img_s"] and round(r["img_s"], 1),
          r["p50_ms"] and round(r["p50_ms"], 2), r["peak_alloc_mib"] and round(r["peak_alloc_mib"]))
