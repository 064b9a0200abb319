"""vimbench: the efficiency benchmark for Vision Mamba (Vim) against DeiT.

Public API: create_model, list_models, run_sweep, load_results, __version__.
"""
from vimbench.models import create_model, list_models
from vimbench.results import load_results

__version__ = "0.1.0"


def run_sweep(*args, **kwargs):
    """Run a sweep (see vimbench.bench.sweep.run_sweep)."""
    from vimbench.bench.sweep import run_sweep as _run_sweep

    return _run_sweep(*args, **kwargs)


__all__ = ["__version__", "create_model", "list_models", "load_results", "run_sweep"]
