"""PyTorch reference of the mixer front (`norm_in_proj`, kernels/norm_in_proj/fwd.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.rmsnorm.reference import add_rmsnorm_ref


def norm_in_proj_ref(y: torch.Tensor, out_w: torch.Tensor | None, residual: torch.Tensor | None,
                     norm_w: torch.Tensor, eps: float, in_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Vim block's entry, from the previous mixer's output to this mixer's in_proj:

        x  = y @ out_w^T (rounded to y's dtype, as the out_proj GEMM writes it), or y itself when out_w is None
        r  = residual + x (x alone when residual is None), in fp32
        h  = r * rsqrt(mean(r^2) + eps) * norm_w, rounded to in_w's dtype
        xz = h @ in_w^T (fp32 accumulation, rounded to in_w's dtype)

    y: (batch, L, K) any float dtype, any strides (the previous scan's halves as (batch, L, 2E) with out_w the
    out_proj weight doubled along K, or its combined output (batch, L, E)); out_w: (D, K) in y's dtype, or None
    (then K = D: y is the block input, e.g. the embedded patches); residual: (batch, L, D) fp32 or None;
    norm_w: (D,); in_w: (N, D). Returns (xz (batch, L, N) in in_w's dtype, r (batch, L, D) fp32): what
    `add_rmsnorm_ref` then `F.linear` return, composed."""
    x = y if out_w is None else F.linear(y, out_w)
    h, r = add_rmsnorm_ref(x, residual, norm_w, eps, in_w.dtype)
    return F.linear(h, in_w), r
