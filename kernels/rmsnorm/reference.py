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


def add_rmsnorm_bwd_ref(dy: torch.Tensor, dr: torch.Tensor | None, r: torch.Tensor, weight: torch.Tensor,
                        eps: float, x_dtype: torch.dtype, has_residual: bool
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of `add_rmsnorm_ref` from its output r, written out: with inv = rsqrt(mean(r^2) + eps),
        dr_total = dr + inv * (w dy) - r * inv^3 / D * sum(w dy r);  dx = dr_total;  dresidual = dr_total;
        dweight = sum over rows of dy * r * inv.
    Same signature and returns as `kernels.rmsnorm.bwd.add_rmsnorm_bwd`: (dx in x_dtype, dresidual fp32 or None
    without a residual, dweight in weight's dtype). Math in fp32 (float64 for float64 r)."""
    compute = torch.promote_types(r.dtype, torch.float32)
    rf, w, g = r.to(compute), weight.to(compute), dy.to(compute)
    inv = torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps)
    wdy = w * g
    total = inv * wdy - rf * inv.pow(3) * (wdy * rf).mean(-1, keepdim=True)
    if dr is not None:
        total = total + dr.to(compute)
    dweight = (g * rf * inv).reshape(-1, r.shape[-1]).sum(0)
    dres = total.clone() if has_residual else None  # its own tensor, never an alias of dx
    return total.to(x_dtype), dres, dweight.to(weight.dtype)
