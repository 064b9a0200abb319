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
    Returns (y in out_dtype, default x.dtype; r in fp32). All math in fp32 (float64 when x is float64; r then
    float64 too, so that autograd through the reference is the float64 spec of the backward kernels).
    """
    compute = torch.promote_types(x.dtype, torch.float32)
    r = x.to(compute) if residual is None else residual.to(compute) + x.to(compute)
    y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)
    return y.to(out_dtype or x.dtype), r
