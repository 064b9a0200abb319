"""vimbench: the efficiency benchmark for Vision Mamba (Vim) against DeiT (and any timm model as a peer).

Public API (imported on first use, so importing vimbench, and `vimbench --help`, does not load torch):
    create_model(name, img_size=224, num_classes=1000, backend=None, attn="sdpa")   an nn.Module
    list_models(include_test=False)                                                 [ModelSpec]
    SweepConfig(models=("vim_t", "deit_t"), res=(224, 512), batch=(64,), dtypes=("bf16",), device="cuda", ...)
    plan_sweep(config)                          the cases (CaseKey) and the combinations dropped, with reasons
    run_sweep(config, out="runs/x.jsonl")       measure; returns [CaseResult], rows appended to `out`
    load_results(paths)                         results files or folders -> a typed pandas DataFrame
    CaseKey, CaseResult                         one case's identity and its measured row
    __version__
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "create_model": "vimbench.models.registry",
    "list_models": "vimbench.models.registry",
    "SweepConfig": "vimbench.bench.grid",
    "plan_sweep": "vimbench.bench.sweep",
    "run_sweep": "vimbench.bench.sweep",
    "load_results": "vimbench.results",
    "CaseKey": "vimbench.results",
    "CaseResult": "vimbench.results",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vimbench' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
