"""PyTorch reference of dt_proj fused with the dt bias and the softplus (`dt_softplus`, kernels/dt_softplus/fwd.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dt_softplus_ref(dt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_dtype: torch.dtype
                    ) -> torch.Tensor:
    """Both directions' delta = softplus(dt @ weight + bias), the scan's step sizes, per token row.

    dt: the low-rank dt rows (2, M, R), any strides and float dtype (the model passes x_dbl's dt columns);
    weight: dt_proj's weights (2, R, E) (the mixer's `dt_proj_t`); bias: (2, E). The product takes dt in weight's
    dtype (as the model's delta GEMM, which casts the dt columns to the activation dtype) and accumulates in fp32;
    the bias and the softplus are fp32 (torch's softplus, threshold 20); the result is rounded once, to out_dtype.
    Returns (2, M, E) in out_dtype, contiguous."""
    acc = torch.bmm(dt.to(weight.dtype).float(), weight.float())  # (2, M, E)
    return F.softplus(acc + bias.float()[:, None, :]).to(out_dtype)
