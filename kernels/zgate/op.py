"""The public z-gate op, registered as a torch custom op (inference only).

    vimbench::zgate(y, h, z_weight) -> out        (batch, L, E) = (y_f + y_b) * SiLU(h @ z_weight^T)   (fwd.py)

Functional (no input mutated, the output a new tensor) with a fake implementation, so torch.compile(fullgraph=True)
traces it as an opaque node. Eager calls may pass an out buffer instead (`zgate(..., out=)`), which can lie over
y's first direction. No backward: under autograd it raises (the training path keeps the unfused z GEMM).
"""
from __future__ import annotations

import torch

from kernels.runtime import needs_custom_op, records_autograd
from kernels.zgate import fwd


@torch.library.custom_op("vimbench::zgate", mutates_args=())
def _zgate_op(y: torch.Tensor, h: torch.Tensor, z_weight: torch.Tensor) -> torch.Tensor:
    return fwd.zgate(y, h, z_weight)


@_zgate_op.register_fake
def _(y, h, z_weight):
    return fwd.zgate_out_like(y)


def zgate(y: torch.Tensor, h: torch.Tensor, z_weight: torch.Tensor, out: torch.Tensor | None = None
          ) -> torch.Tensor:
    """The scan's ungated output (halves (2, batch, E, L) or their sum (batch, E, L)) gated by SiLU(h @
    z_weight^T) and summed over the directions: (batch, L, E) in y's dtype. Contract: `zgate_ref`.
    out: the buffer to write (`fwd.check_out`; it may lie over y's first direction), eager calls only.
    Inference only: raises NotImplementedError when autograd would record the call."""
    if records_autograd(y, h, z_weight):
        raise NotImplementedError("zgate on the triton backend has no backward pass: run it under torch.no_grad() "
                                  "(inference); training keeps the z GEMM")
    if needs_custom_op(y, h, z_weight):
        if out is not None:
            raise ValueError("zgate's out buffer is for eager calls; traced calls allocate their output")
        return torch.ops.vimbench.zgate(y, h, z_weight)
    return fwd.zgate(y, h, z_weight, out)


__all__ = ["zgate"]
