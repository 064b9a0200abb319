#!/usr/bin/env bash
# Run the GPU tests named in a file (one node id per line), each in its own pytest process, all at once (compiles
# dominate). usage (repo root, on the box): bash results/history/scripts/gpurerun.sh IDS_FILE TIMEOUT_S
# writes $OUT/gpurerun-<n>.txt per test and prints each one's summary line.
n=0
while read -r id; do
  [ -z "$id" ] && continue
  timeout "$2" python -m pytest -q -m gpu -p no:cacheprovider "$id" > "$OUT/gpurerun-$n.txt" 2>&1 &
  n=$((n + 1))
done < "$1"
wait
for f in "$OUT"/gpurerun-*.txt; do echo "$(basename "$f"): $(grep -m1 '::' "$f" | head -c 0)$(tail -1 "$f")"; done
