"""The public mixer-front op, registered as a torch custom op (inference only).

    vimbench::norm_in_proj(y, out_w, residual, norm_w, eps, in_w) -> (xz, r)    out_proj + add + RMSNorm + in_proj

Functional (no input mutated, the outputs new tensors) with a fake implementation, so torch.compile(fullgraph=True)
traces it as an opaque node. No backward: under autograd it raises (training keeps the norm op and the GEMMs).
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels.norm_in_proj import fwd
from kernels.runtime import needs_custom_op, records_autograd


@torch.library.custom_op("vimbench::norm_in_proj", mutates_args=())
def _norm_in_proj_op(y: torch.Tensor, out_w: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                     norm_w: torch.Tensor, eps: float, in_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return fwd.norm_in_proj(y, out_w, residual, norm_w, eps, in_w)


@_norm_in_proj_op.register_fake
def _(y, out_w, residual, norm_w, eps, in_w):
    fwd.check_norm_in_proj(y, out_w, residual, norm_w, in_w)
    return fwd.outputs_like(y, norm_w, in_w)


def norm_in_proj(y: torch.Tensor, out_w: torch.Tensor | None, residual: torch.Tensor | None, norm_w: torch.Tensor,
                 eps: float, in_w: torch.Tensor, out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(xz, r): y @ out_w^T (or y itself without out_w), plus the residual, RMSNorm'd, times in_w^T; r is the new
    fp32 residual. Contract: `norm_in_proj_ref`. out: (xz, r) buffers to write (eager only; `fwd.norm_in_proj`).
    Inference only: raises NotImplementedError when autograd would record the call."""
    if records_autograd(y, out_w, residual, norm_w, in_w):
        raise NotImplementedError("norm_in_proj on the triton backend has no backward pass: run it under "
                                  "torch.no_grad() (inference); training keeps the norm op and the GEMMs")
    if needs_custom_op(y, out_w, residual, norm_w, in_w):
        if out is not None:
            raise ValueError("norm_in_proj's out buffers are for eager calls; a traced call allocates its outputs")
        return torch.ops.vimbench.norm_in_proj(y, out_w, residual, norm_w, eps, in_w)
    return fwd.norm_in_proj(y, out_w, residual, norm_w, eps, in_w, out)


__all__ = ["norm_in_proj"]
