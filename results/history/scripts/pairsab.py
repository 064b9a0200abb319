"""A/B of the scan backward walk from every other stored state (kernels/selective_scan/bwd.py DEFAULT_PAIRS: None =
on in the capped walk, False = off) in whole Vim-Ti training steps on the H200 (bf16, backend triton, the step
captured as a CUDA graph), A B B A in one process through the sweep's own runner, at 224 px batch 128 and 1248 px
batch 8. Writes $OUT/pairsab.json."""
import json, os
import kernels.selective_scan.bwd as bwd
from vimbench.bench import runner
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
rows = []
for res, batch in ((224, 128), (1248, 8)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for pairs in (None, False, False, None):
        bwd.DEFAULT_PAIRS = pairs
        r = runner.run_case(key, warmup=3, iters=10)
        row = dict(res=res, batch=batch, pairs="auto (on)" if pairs is None else "off", status=r.status,
                   img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error)
        rows.append(row)
        print(row, flush=True)
json.dump(dict(commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows), open(f"{OUT}/pairsab.json", "w"), indent=1)
print("res batch pairs img/s p50_ms peak_MiB")
for r in rows:
    print(r["res"], r["batch"], r["pairs"], r["img_s"] and round(r["img_s"], 1), r["p50_ms"] and round(r["p50_ms"], 2),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"]))
