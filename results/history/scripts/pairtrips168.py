"""Session v: whole captured Vim-Ti bf16 training steps, A B B A, with the scan backward's walk one step per loop trip
(A: shipped) or two (B: `bwd.DEFAULT_PAIR_TRIPS`), both at 168 registers. regcap.py (H100, call 1 of session v,
results/history/regcap-h100-2026-12-05v.json) timed the kernel alone: 1,804.9 -> 1,795.0 us at 8 x 6,085 and 799.3 ->
785.6 us at 128 x 197, gradients bitwise equal; its own step A/B needed a > 1% kernel gain at 8 x 6,085.
usage (repo root, on the box): python results/history/scripts/pairtrips168.py ; writes $OUT/pairtrips168.json"""
import json, os, torch
import kernels.selective_scan.bwd as bwd
from vimbench.bench import runner
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
rows = []
for res, batch in ((1248, 8), (224, 128)):
    key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
                  device="cuda", mode="train", compile="cuda-graphs")
    for tag in ("A", "B", "B", "A"):
        bwd.DEFAULT_PAIR_TRIPS = tag == "B"
        r = runner.run_case(key, warmup=3, iters=10)
        rows.append(dict(res=res, batch=batch, variant=tag, pair_trips=bwd.DEFAULT_PAIR_TRIPS, status=r.status,
                         img_s=r.fps, p50_ms=r.latency_ms_p50, peak_alloc_mib=r.peak_alloc_mib, error=r.error))
        print(rows[-1], flush=True)
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows),
                  open(f"{OUT}/pairtrips168.json", "w"), indent=1)
bwd.DEFAULT_PAIR_TRIPS = False
for r in rows:
    print(r["res"], r["batch"], r["variant"], r["img_s"] and round(r["img_s"], 1),
          r["peak_alloc_mib"] and round(r["peak_alloc_mib"] / 1024, 3), "GiB")
