#!/usr/bin/env bash
# The whole GPU test suite (-m gpu) in N concurrent pytest processes on one card (Triton's compiles are CPU-bound:
# the box has 16 cores), node ids dealt round-robin so each file's tests spread over the shards.
#   usage: bash results/history/scripts/gpushards.sh [N=4] [pytest -k expression]
#   GPUSHARDS_PART=p/P: only every P-th collected test, from the p-th (0-based), so that P calls cover the suite
#     (session ah: 6 shards did not finish all 372 tests within 540 s on an H100);
#   GPUSHARDS_TIMEOUT=s (500): each shard stops after s seconds; its log then still counts the tests it finished.
# Back under $OUT (the device tool returns at most 8 files): gputests-summary.txt (each shard's result and the
# total, failures listed) and gputests-shards.tar.gz (the collection, id lists and shard logs).
set -u
n=${1:-4}; k=${2:-}; part=${GPUSHARDS_PART:-0/1}; limit=${GPUSHARDS_TIMEOUT:-500}
mkdir -p "$OUT"
work=$(mktemp -d)
python -m pytest --collect-only -q -m gpu -p no:cacheprovider ${k:+-k "$k"} > "$work/gpu-collect.txt" 2>&1
grep "::" "$work/gpu-collect.txt" | awk -v p="${part%/*}" -v P="${part#*/}" '(NR - 1) % P == p' > "$work/gpu-ids.txt"
count=$(wc -l < "$work/gpu-ids.txt")
if [ "$count" -eq 0 ]; then  # (an empty id list would run the whole suite in every shard)
  echo "no GPU tests collected (part $part); the collection's own output:"; tail -15 "$work/gpu-collect.txt"
  exit 1
fi
echo "$count GPU tests (part $part) in $n shards, $limit s each at most" | tee "$OUT/gputests-summary.txt"
for i in $(seq 0 $((n - 1))); do
  awk -v n="$n" -v i="$i" 'NR % n == i' "$work/gpu-ids.txt" > "$work/gpu-ids-$i.txt"
  [ -s "$work/gpu-ids-$i.txt" ] || { echo "no tests (an empty shard)" > "$work/gputests-shard$i.txt"; continue; }
  timeout "$limit" python -m pytest -q -rfE -m gpu -p no:cacheprovider $(cat "$work/gpu-ids-$i.txt") \
    > "$work/gputests-shard$i.txt" 2>&1 &
done
wait
python "$(dirname "$0")/gpushards_tally.py" "$work" "$n" | tee -a "$OUT/gputests-summary.txt"
tar czf "$OUT/gputests-shards.tar.gz" -C "$work" .
