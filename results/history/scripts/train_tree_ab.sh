#!/usr/bin/env bash
# Session ac's queued A/B: Vim-Ti's eager training step at 1248 px, batch 8, bf16, in two trees, interleaved
# (old, new, old, new), to tell a regression of the training forward from the card (kernels/NOTES.md, "Session ac").
# Here (the old tree travels as an ignored folder, named in the run's carry):
#   mkdir -p .scratch/old52 && git archive 52b2234 kernels vimbench suites pyproject.toml | tar -x -C .scratch/old52
# On the box (repository root), carry [".scratch"]:
#   bash results/history/scripts/train_tree_ab.sh .scratch/old52 52b2234 <new commit>
set -u
old=$1; old_commit=$2; new_commit=$3
run() {  # tree commit pass
  ( cd "$1" && PYTHONPATH=$PWD VIMBENCH_GIT_COMMIT=$2 timeout 150 python -m vimbench sweep --mode train --models vim_t \
      --backend triton --points 1248x8 --dtype bf16 --warmup 5 --iters 20 --out "$OUT/$2-$3.jsonl" > "$OUT/$2-$3.log" 2>&1
    echo "$2 pass $3 rc=$?" )
}
for pass in 1 2; do run "$old" "$old_commit" $pass; run . "$new_commit" $pass; done
python - <<'PY'
import glob, json, os
for f in sorted(glob.glob(os.environ["OUT"] + "/*.jsonl")):
    for line in open(f):
        r = json.loads(line)
        if r.get("model"):
            print(os.path.basename(f), "img/s", round(r["fps"] or 0, 1), "fwd p50 ms", r.get("forward_ms_p50") and round(r["forward_ms_p50"], 2),
                  "bwd p50 ms", r.get("backward_ms_p50") and round(r["backward_ms_p50"], 2), "peak alloc MiB", r.get("peak_alloc_mib") and round(r["peak_alloc_mib"]))
PY
