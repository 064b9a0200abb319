"""vimbench's own kernels: a pure-PyTorch reference (`*_ref`) next to each Triton op, same signatures.

Importing this package never needs a GPU; the Triton ops are imported lazily by their submodules.
"""
from kernels.bimamba_inner.reference import bimamba_inner_ref
from kernels.conv1d.reference import conv1d_silu_bidir_bwd_ref, conv1d_silu_bidir_ref
from kernels.rmsnorm.reference import add_rmsnorm_bwd_ref, add_rmsnorm_ref
from kernels.selective_scan.reference import (
    bimamba_scan_ref,
    selective_scan_ref,
    selective_scan_sequential,
)

IS_VIMBENCH_KERNELS = True  # tests check this: a PyPI project is also called `kernels`

__all__ = [
    "add_rmsnorm_bwd_ref",
    "add_rmsnorm_ref",
    "bimamba_inner_ref",
    "bimamba_scan_ref",
    "conv1d_silu_bidir_bwd_ref",
    "conv1d_silu_bidir_ref",
    "selective_scan_ref",
    "selective_scan_sequential",
]
