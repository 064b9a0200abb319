"""Residual add + RMSNorm (weight only): the pure-PyTorch spec."""
from __future__ import annotations

import torch


def add_rmsnorm_ref(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-5,
    out_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """r = residual + x (or x alone when residual is None), y = r * rsqrt(mean(r^2) + eps) * weight.

    x: (..., D) any float dtype; residual: (..., D) fp32 or None; weight: (D,).
    Returns (y in out_dtype, default x.dtype; r in fp32). All math in fp32.
    """
    r = x.float() if residual is None else residual.float() + x.float()
    y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(out_dtype or x.dtype), r
