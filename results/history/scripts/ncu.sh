#!/usr/bin/env bash
# Nsight Compute on the scan kernels (ncuscan.py's variants): speed of light, pipe use, warp stalls, issue.
# usage (repo root, on the box): bash results/history/scripts/ncu.sh ; writes $OUT/ncu-<variant>.txt
# VARIANTS="bwd bwdcarry" (default: the four below) picks variants; CHUNK (ncuscan.py) the backward's checkpoint
# interval (default 64, as first run; training uses 128).
cd "$(dirname "$0")"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
for v in ${VARIANTS:-fwd_delta_z fwd_dt_z fwd_dt_noz bwd}; do
  k='regex:_scan_kernel'; [ "$v" = bwd ] && k='regex:_scan_bwd_kernel'; [ "$v" = bwdcarry ] && k='regex:_scan_bwd_group_carry'
  run=$v; [ "$v" = bwdcarry ] && run=bwd
  timeout 100 "$NCU" --clock-control none --kernel-name "$k" --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section Occupancy --section InstructionStats --section MemoryWorkloadAnalysis \
    --metrics smsp__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,smsp__issue_active.avg.pct_of_peak_sustained_active \
    --print-details all python ncuscan.py $run > "$OUT/ncu-$v.txt" 2>&1
  echo "$v rc=$?"; grep -E "Duration|Issue Slots Busy|Executed Ipc A|Warp Cycles Per Issued|pipe_xu|pipe_fma|pipe_alu|Active Warps Per" "$OUT/ncu-$v.txt" | head -12
done
