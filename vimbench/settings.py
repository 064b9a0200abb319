"""The only place that reads environment variables. Everything else gets these values passed in."""
from __future__ import annotations

import os

BACKENDS = ("torch", "triton")


def default_backend() -> str:
    """Vim op backend used when none is named: VIMBENCH_BACKEND, else 'torch'."""
    value = os.environ.get("VIMBENCH_BACKEND", "torch").strip().lower() or "torch"
    if value not in BACKENDS:
        from vimbench.errors import VimbenchError

        raise VimbenchError(f"VIMBENCH_BACKEND={value!r} is not a backend; use one of {', '.join(BACKENDS)}")
    return value


def triton_interpreter_requested() -> bool:
    """TRITON_INTERPRET=1: Triton kernels run interpreted on CPU tensors (tests; no GPU needed)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


def results_dir() -> str:
    """Folder where sweeps, kernel benchmarks and `reproduce --run` write new result files: VIMBENCH_RESULTS_DIR,
    else ./runs. Not results/: that folder holds only the GPU runs the project ships, so an ad-hoc run (a CPU
    smoke sweep) never mixes into `vimbench report results/` or `reproduce --results results/`; move a run
    there to ship it."""
    return os.environ.get("VIMBENCH_RESULTS_DIR", "runs")


def git_commit_override() -> str | None:
    """VIMBENCH_GIT_COMMIT: the commit a copied tree (no .git, e.g. on a lent GPU box) was taken from."""
    return os.environ.get("VIMBENCH_GIT_COMMIT") or None


def cuda_visible_devices() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of device ids (indices or UUIDs), None when unset (all GPUs visible)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]
