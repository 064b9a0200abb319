"""A/B of two source trees in whole Vim-Ti training steps on the H200 (bf16, backend triton, the step captured as
a CUDA graph, the sweep's own runner): each (res, batch) runs A B B A, every run a fresh subprocess with
PYTHONPATH set to its tree. Usage: python trainab.py OLD_TREE NEW_TREE; writes $OUT/trainab.json."""
import json, os, subprocess, sys

OUT = os.environ.get("OUT", "/tmp")
old, new = sys.argv[1], sys.argv[2]
CHILD = r'''
import json, sys
from vimbench.bench import runner
from vimbench.results import CaseKey
res, batch = int(sys.argv[1]), int(sys.argv[2])
key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
              device="cuda", mode="train", compile="cuda-graphs")
r = runner.run_case(key, warmup=3, iters=10)
print("ROW " + json.dumps(dict(status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50, p20_ms=r.latency_ms_p20,
                               p80_ms=r.latency_ms_p80, peak_alloc_mib=r.peak_alloc_mib, error=r.error)))
'''
rows = []
for res, batch in ((224, 128), (1248, 8)):
    for tag, tree in (("old", old), ("new", new), ("new", new), ("old", old)):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
        p = subprocess.run([sys.executable, "-c", CHILD, str(res), str(batch)], env=env, cwd=tree,
                           capture_output=True, text=True, timeout=240)
        line = [l for l in p.stdout.splitlines() if l.startswith("ROW ")]
        row = dict(res=res, batch=batch, tree=tag, **(json.loads(line[0][4:]) if line else
                                                      dict(status="failed", error=p.stderr[-2000:])))
        rows.append(row)
        print(row, flush=True)
json.dump(rows, open(f"{OUT}/trainab.json", "w"), indent=1)
print("res batch tree img/s p50_ms peak_MiB")
for r in rows:
    print(r["res"], r["batch"], r["tree"], r.get("img_s") and round(r["img_s"], 1),
          r.get("p50_ms") and round(r["p50_ms"], 2), r.get("peak_alloc_mib") and round(r["peak_alloc_mib"]))
