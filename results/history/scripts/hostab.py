"""A/B of two source trees in whole eager Vim-Ti training steps (bf16, backend triton, compile none, the sweep's
own runner, so each row has the host's submission time too): per point A B B A, every run a fresh subprocess with
PYTHONPATH set to its tree. Session ae: the eager launchers of the training step replayed (scan forward with
checkpoints, scan backward, conv backward, norm backward). Usage: python hostab.py OLD_TREE NEW_TREE
[[mode:]res x batch,...] (default 224x128,1248x8; mode train (default) or infer); writes $OUT/hostab.json.
Session af: the chunk-parallel scan's calls replayed (inference and the training forward at 1248/8).
The launches column counts launches by path over the whole run (warm-up, timed steps, memory pass)."""
import json, os, subprocess, sys

OUT = os.environ.get("OUT", "/tmp")
old, new = sys.argv[1], sys.argv[2]
points = [(p.split(":")[0] if ":" in p else "train", *(int(v) for v in p.split(":")[-1].split("x")))
          for p in (sys.argv[3] if len(sys.argv) > 3 else "224x128,1248x8").split(",")]
CHILD = r'''
import json, sys
from kernels import launch
from vimbench.bench import runner
from vimbench.results import CaseKey
mode, res, batch = sys.argv[3], int(sys.argv[1]), int(sys.argv[2])
key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
              device="cuda", mode=mode, compile="none")
r = runner.run_case(key, warmup=5, iters=20)
print("ROW " + json.dumps(dict(status=r.status, img_s=r.fps, p50_ms=r.latency_ms_p50, p20_ms=r.latency_ms_p20,
                               p80_ms=r.latency_ms_p80, host_ms_p50=getattr(r, "host_ms_p50", None),
                               peak_alloc_mib=r.peak_alloc_mib, error=r.error, launches=dict(launch.stats))))
'''
rows = []
for mode, res, batch in points:
    for tag, tree in (("old", old), ("new", new), ("new", new), ("old", old)):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
        p = subprocess.run([sys.executable, "-c", CHILD, str(res), str(batch), mode], env=env, cwd=tree,
                           capture_output=True, text=True, timeout=300)
        line = [l for l in p.stdout.splitlines() if l.startswith("ROW ")]
        row = dict(mode=mode, res=res, batch=batch, tree=tag, **(json.loads(line[0][4:]) if line else
                                                      dict(status="failed", error=p.stderr[-2000:])))
        rows.append(row)
        print(row, flush=True)
json.dump(rows, open(f"{OUT}/hostab.json", "w"), indent=1)
print("mode res batch tree img/s p50_ms host_ms_p50 peak_MiB replayed/direct/triton")
for r in rows:
    f = lambda k, d=2: r.get(k) is not None and round(r[k], d)  # noqa: E731
    n = r.get("launches") or {}
    print(r["mode"], r["res"], r["batch"], r["tree"], f("img_s", 1), f("p50_ms"), f("host_ms_p50"),
          f("peak_alloc_mib", 0), f"{n.get('replayed')}/{n.get('direct')}/{n.get('triton')}")
