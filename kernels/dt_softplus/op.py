"""The public dt_softplus op, registered as a torch custom op (inference only).

    vimbench::dt_softplus(dt, weight, bias, out_dtype) -> delta    (2, M, E) = softplus(dt @ weight + bias)  (fwd.py)

Functional with a fake implementation, so torch.compile(fullgraph=True) traces it as an opaque node. No backward:
under autograd it raises (training keeps the delta GEMM and the scan's own softplus).
"""
from __future__ import annotations

import torch

from kernels.dt_softplus import fwd
from kernels.runtime import needs_custom_op, records_autograd


@torch.library.custom_op("vimbench::dt_softplus", mutates_args=())
def _dt_softplus_op(dt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_dtype: torch.dtype
                    ) -> torch.Tensor:
    return fwd.dt_softplus(dt, weight, bias, out_dtype)


@_dt_softplus_op.register_fake
def _(dt, weight, bias, out_dtype):
    return fwd.dt_softplus_out_like(dt, weight, out_dtype)


def dt_softplus(dt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Both directions' scan step sizes softplus(dt @ weight + bias), (2, M, E) in out_dtype. Contract:
    `dt_softplus_ref`. Inference only: raises NotImplementedError when autograd would record the call."""
    if records_autograd(dt, weight, bias):
        raise NotImplementedError("dt_softplus on the triton backend has no backward pass: run it under "
                                  "torch.no_grad() (inference); training keeps the delta GEMM")
    if needs_custom_op(dt, weight, bias):
        return torch.ops.vimbench.dt_softplus(dt, weight, bias, out_dtype)
    return fwd.dt_softplus(dt, weight, bias, out_dtype)


__all__ = ["dt_softplus"]
