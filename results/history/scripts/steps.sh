#!/usr/bin/env bash
# usage: bash .scratch/steps.sh stepsfile ; each line "name|timeout|cmd"
set -u
mkdir -p "$OUT"
: > "$OUT/summary.txt"
while IFS='|' read -r name to cmd; do
  [ -z "$name" ] && continue
  case "$name" in \#*) continue;; esac
  start=$(date +%s)
  timeout "$to" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$OUT/summary.txt"
  tail -5 "$OUT/$name.log"
done < "$1"
echo "=== summary"; cat "$OUT/summary.txt"
