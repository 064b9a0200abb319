"""The public add + RMSNorm op: what the Vim backend and the tools call. Kernels and launchers live in fwd.py
(forward); the backward pass and the torch custom-op registration belong here, beside the public function."""
from kernels.rmsnorm.fwd import add_rmsnorm

__all__ = ["add_rmsnorm"]
