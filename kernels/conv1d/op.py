"""The public conv1d op: what the Vim backend and the tools call. Kernels and launchers live in fwd.py (forward);
the backward pass and the torch custom-op registration belong here, beside the public function."""
from kernels.conv1d.fwd import conv1d_silu_bidir

__all__ = ["conv1d_silu_bidir"]
