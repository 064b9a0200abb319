"""Run GPU-marked tests in parallel shards on the box (compiles dominate: ~15-20 s per new kernel layout, so
shards on separate CPU cores finish several times sooner than one pytest). usage (repo root, on the box):
    python results/history/scripts/gpushards.py SHARDS TIMEOUT_S PATH... ; writes $OUT/gputests-shard-<i>.txt
and prints each shard's summary line. Tests are split into contiguous blocks of the collected order (tests of one
parametrized function share kernel layouts and so the compile cache)."""
import os, subprocess, sys, time

shards, limit, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
out = os.environ.get("OUT", ".")
ids = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "--collect-only", *paths],
                     capture_output=True, text=True).stdout.splitlines()
ids = [i for i in ids if "::" in i]
print(f"{len(ids)} GPU tests in {shards} shards", flush=True)
size = -(-len(ids) // shards)
procs = []
t0 = time.time()
for k in range(shards):
    block = ids[k * size:(k + 1) * size]
    if not block:
        continue
    f = open(f"{out}/gputests-shard-{k}.txt", "w")
    procs.append((k, f, subprocess.Popen(["timeout", str(limit), sys.executable, "-m", "pytest", "-q", "-m", "gpu",
                                          "-p", "no:cacheprovider", *block], stdout=f, stderr=subprocess.STDOUT)))
for k, f, p in procs:
    p.wait()
    f.close()
    tail = open(f"{out}/gputests-shard-{k}.txt").read().strip().splitlines()
    print(f"shard {k} rc={p.returncode} {time.time() - t0:.0f}s: {tail[-1] if tail else '(no output)'}", flush=True)
