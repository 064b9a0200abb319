"""The tiny CPU sweep the multi-worker and SLURM tests share: its CLI flags, its config, and case counts per run
folder (rootdir-relative import, as tests/kernels/_tolerances.py)."""
from __future__ import annotations

from collections import Counter

from vimbench.bench import rundir
from vimbench.bench import sweep as sweeps
from vimbench.results import iter_rows, key_of_row

TINY = ["--models", "vim_test,deit_test", "--res", "32,40", "--batch", "2", "--attn", "sdpa,eager",
        "--warmup", "1", "--iters", "5", "--device", "cpu"]


def tiny():
    return sweeps.make_config({"models": "vim_test,deit_test", "res": "32,40", "batch": 2, "attn": "sdpa,eager",
                               "warmup": 1, "iters": 5, "device": "cpu"}, cuda_available=False)


def case_counts(folder) -> Counter:
    return Counter(key_of_row(r) for path in rundir.results_files(folder) for r in iter_rows(path)
                   if r["kind"] == "case")
