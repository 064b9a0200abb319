"""The public selective-scan ops: what the Vim backend and the tools call. Kernels and launchers live in fwd.py
(forward); the backward pass and the torch custom-op registration belong here, beside the public functions."""
from kernels.selective_scan.fwd import bimamba_scan, selective_scan

__all__ = ["bimamba_scan", "selective_scan"]
