"""vimbench: the efficiency benchmark for Vision Mamba (Vim) against DeiT.

Public API: create_model, list_models, run_sweep, load_results, __version__. The names are imported on first
use, so importing vimbench (and `vimbench --help`) does not load torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "create_model": "vimbench.models.registry",
    "list_models": "vimbench.models.registry",
    "run_sweep": "vimbench.bench.sweep",
    "load_results": "vimbench.results",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vimbench' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
