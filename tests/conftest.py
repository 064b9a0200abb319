"""Test setup shared by every module.

Without a GPU, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before any kernel module
is imported (Triton decides at @triton.jit time), so it is set here, at collection start."""
from __future__ import annotations

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The CLI's tables fit the console's width (vimbench.render: 160 columns off a terminal unless COLUMNS says
# otherwise). pytest-xdist's workers inherit COLUMNS=80, so the width is pinned here, before vimbench is imported,
# for every run to print the same tables: in one process or several, in a terminal or in CI.
os.environ["COLUMNS"] = "160"

# Under pytest-xdist (`-n auto`, the README's test command) the workers share the machine's cores: each gets its
# share of torch's intra-op threads instead of all of them (2 workers x 2 threads on 2 cores only thrash).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def device() -> str:
    return "cuda" if HAS_CUDA else "cpu"
