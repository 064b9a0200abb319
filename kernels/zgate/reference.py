"""PyTorch reference of the z gate fused with the sum of the scan's halves (`zgate`, kernels/zgate/fwd.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def zgate_ref(y: torch.Tensor, h: torch.Tensor, z_weight: torch.Tensor, out: torch.Tensor | None = None
              ) -> torch.Tensor:
    """The Vim mixer's gate with z made on the fly: (y_f + y_b) * SiLU(h @ z_weight^T), per token.

    y: the scan's UNGATED output, either its two halves (2, batch, E, L) (0.5 * y_dir each, the scan's
    combine=False form with z=None) or their sum (batch, E, L) (combine=True); any strides, any float dtype.
    h: the mixer input (batch, L, D); z_weight: in_proj's z rows (E, D) (in_proj.weight[E:]). The z GEMM
    accumulates in fp32 and is not rounded to h's dtype before the gate (the unfused path rounds z once).
    Returns (batch, L, E) in y's dtype, contiguous: the input of out_proj's K = E GEMM; or, given `out` ((batch, L, E)
    in y's dtype; it may lie over y, e.g. y[0].transpose(1, 2)), that buffer written once everything is computed."""
    z = F.linear(h.float(), z_weight.float())  # (batch, L, E)
    total = (y[0] + y[1]) if y.dim() == 4 else y
    gated = (total.float().transpose(1, 2) * F.silu(z)).to(y.dtype)
    if out is None:
        return gated
    if out.shape != gated.shape or out.dtype != gated.dtype:  # copy_ would broadcast or cast without a word
        raise ValueError(f"out must be {gated.dtype} {tuple(gated.shape)}; got {out.dtype} {tuple(out.shape)}")
    return out.copy_(gated)
