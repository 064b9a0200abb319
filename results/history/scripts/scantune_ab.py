"""Follow-up of scantune.py in the same call (session am): for each model in $OUT/scantune.json whose fastest
variant beat the default by more than 2% (kernel medians), whole eager forwards (bf16 autocast, default memory mode,
1248 px, batch 64) with the default (A) and that variant (B), A B B A in one process, p50 of 10 forwards each and
the largest |logits - first A|; SCANTUNE_FORCE=<variant> runs that variant for every model instead. Writes
$OUT/scantune_ab.json. usage: python results/history/scripts/scantune_ab.py"""
import json, os, statistics
import torch
from kernels.launch import call_replay
from kernels.selective_scan import fwd
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
tune = json.load(open(os.path.join(OUT, "scantune.json")))
RES, BATCH = 1248, 64
DEFAULTS = {k: getattr(fwd, k) for v in tune["variants"].values() for k in v}
rows = []
for row in tune["rows"]:
    med = row["scan_ms_median"]
    ok = [v for v in med if v != "default" and row["equal_or_rel_err"].get(v) is not None]
    best = min(ok, key=med.get) if ok else None
    if os.environ.get("SCANTUNE_FORCE"):  # this variant in forwards, whatever the kernel medians say
        best = os.environ["SCANTUNE_FORCE"]
    elif best is None or med[best] > 0.98 * med["default"]:
        print(f"{row['model']}: no variant beats the default by 2% (best {best}: {med.get(best)} vs "
              f"{med['default']:.3f} ms)", flush=True)
        continue
    torch.manual_seed(0)
    model = create_model(row["model"], img_size=RES, backend="triton").cuda().eval()
    images = torch.randn(BATCH, 3, RES, RES, device="cuda")
    first = None
    with call_replay(False):
        for arm in "ABBA":
            for k, v in DEFAULTS.items():
                setattr(fwd, k, v)
            if arm == "B":
                for k, v in tune["variants"][best].items():
                    setattr(fwd, k, v)
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(3):
                    out = model(images)
                torch.cuda.synchronize()
                first = out.float() if first is None else first
                diff = (out.float() - first).abs().max().item()
                del out
                times = []
                for _ in range(10):
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record(); o = model(images); e.record(); torch.cuda.synchronize()
                    times.append(s.elapsed_time(e)); del o
            p50 = statistics.median(times)
            rows.append(dict(model=row["model"], arm=arm, variant="default" if arm == "A" else best, p50_ms=p50,
                             img_per_s=BATCH / p50 * 1e3, max_abs_diff_vs_first_A=diff, times_ms=times))
            print(f"{row['model']} {arm} ({rows[-1]['variant']}): p50 {p50:.2f} ms, {BATCH / p50 * 1e3:.1f} img/s, "
                  f"|logits - A| {diff:.2e}", flush=True)
    for k, v in DEFAULTS.items():
        setattr(fwd, k, v)
    del model, images
    torch.cuda.empty_cache()
json.dump(dict(rows=rows, gpu=torch.cuda.get_device_name(), commit=os.environ.get("VIMBENCH_GIT_COMMIT")),
          open(os.path.join(OUT, "scantune_ab.json"), "w"), indent=1)
print("=== summary")
for m in dict.fromkeys(r["model"] for r in rows):
    a = statistics.mean(r["p50_ms"] for r in rows if r["model"] == m and r["arm"] == "A")
    b = statistics.mean(r["p50_ms"] for r in rows if r["model"] == m and r["arm"] == "B")
    print(f"{m}: default {a:.2f} ms, {next(r['variant'] for r in rows if r['model'] == m and r['arm'] == 'B')} "
          f"{b:.2f} ms ({(b / a - 1) * 100:+.1f}%)")
