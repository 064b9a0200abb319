"""Compile the timed kernel suite's cases ahead of `vimbench kernels check` (session aj): process K of N builds and
calls every N-th case of `regression.default_suite()` once, so that N processes fill Triton's disk cache in
parallel and the timed run (one process, nothing else on the GPU) starts warm. No timing here.
usage (repo root, on the box): for k in 0 1 2 3; do python results/history/scripts/warmkernels.py $k 4 & done; wait"""
import sys
import torch
from vimbench.kerneltools import regression as rg

k, n = int(sys.argv[1]), int(sys.argv[2])
cases = rg.default_suite()[k::n]
for case in cases:
    call = case.build()
    call()
    torch.cuda.synchronize()
print(f"warmkernels {k}/{n}: {len(cases)} cases compiled and run once")
