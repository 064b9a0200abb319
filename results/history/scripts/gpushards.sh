#!/usr/bin/env bash
# The whole GPU test suite (-m gpu) in N concurrent pytest processes on one card (Triton's compiles are CPU-bound:
# the box has 16 cores), node ids dealt round-robin so each file's tests spread over the shards. Logs and summaries
# under $OUT/gputests-shard<i>.txt; the last lines printed are each shard's pytest summary and the total.
#   usage: bash results/history/scripts/gpushards.sh [N=4] [pytest -k expression]
set -u
n=${1:-4}; k=${2:-}
mkdir -p "$OUT"
ids="$OUT/gpu-ids.txt"
python -m pytest --collect-only -q -m gpu -p no:cacheprovider ${k:+-k "$k"} > "$OUT/gpu-collect.txt" 2>&1
grep "::" "$OUT/gpu-collect.txt" > "$ids"
count=$(wc -l < "$ids")
if [ "$count" -eq 0 ]; then  # (an empty id list would run the whole suite in every shard)
  echo "no GPU tests collected; the collection's own output:"; tail -15 "$OUT/gpu-collect.txt"
  exit 1
fi
echo "$count GPU tests in $n shards"
for i in $(seq 0 $((n - 1))); do
  awk -v n="$n" -v i="$i" 'NR % n == i' "$ids" > "$OUT/gpu-ids-$i.txt"
  [ -s "$OUT/gpu-ids-$i.txt" ] || { echo "no tests (an empty shard)" > "$OUT/gputests-shard$i.txt"; continue; }
  python -m pytest -q -rfE -m gpu -p no:cacheprovider $(cat "$OUT/gpu-ids-$i.txt") > "$OUT/gputests-shard$i.txt" 2>&1 &
done
wait
for i in $(seq 0 $((n - 1))); do echo "shard $i: $(tail -1 "$OUT/gputests-shard$i.txt")"; done
grep -h "^FAILED\|^ERROR" "$OUT"/gputests-shard*.txt | head -20
python - "$OUT" "$n" <<'PY'
import re, sys, pathlib
tot = {}
for i in range(int(sys.argv[2])):
    last = pathlib.Path(sys.argv[1], f"gputests-shard{i}.txt").read_text().strip().splitlines()[-1]
    for num, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed)", last):
        tot[what] = tot.get(what, 0) + int(num)
print("total:", ", ".join(f"{v} {k}" for k, v in tot.items()))
PY
