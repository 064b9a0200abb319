"""The public add + RMSNorm op: what the Vim backend and the tools call, registered as torch custom ops.

    vimbench::add_rmsnorm(x, residual, weight, eps, out_dtype) -> (y, r)                 forward (fwd.py)
    vimbench::add_rmsnorm_bwd(dy, dr, r, weight, eps, x_dtype, has_residual) -> (dx, dresidual, dweight)  (bwd.py)

Both are functional with fake implementations (autograd; torch.compile traces them as opaque nodes). Saved for
backward: r (fp32, an output the next layer keeps anyway as its residual input) and the weight; the per-row
1/rms is recomputed from r.
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels.rmsnorm import bwd, fwd
from kernels.runtime import eager_autograd, op_call, records_autograd, traced


@torch.library.custom_op("vimbench::add_rmsnorm", mutates_args=())
def _add_rmsnorm_op(x: torch.Tensor, residual: Optional[torch.Tensor], weight: torch.Tensor, eps: float,
                    out_dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor]:
    return fwd.add_rmsnorm(x, residual, weight, eps, out_dtype)


@_add_rmsnorm_op.register_fake
def _(x, residual, weight, eps, out_dtype):
    y = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    return y, torch.empty(x.shape, dtype=torch.float32, device=x.device)


@torch.library.custom_op("vimbench::add_rmsnorm_bwd", mutates_args=())
def _add_rmsnorm_bwd_op(dy: torch.Tensor, dr: Optional[torch.Tensor], r: torch.Tensor, weight: torch.Tensor,
                        eps: float, x_dtype: torch.dtype, has_residual: bool
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with op_call():  # inside a compiled graph: no ones vector kept (runtime.sum_partials)
        dx, dres, dweight = bwd.add_rmsnorm_bwd(dy, dr, r, weight, eps, x_dtype, has_residual)
    # A custom op returns tensors only: without a residual, an empty (0,) placeholder that autograd drops.
    return dx, dres if dres is not None else r.new_empty(0), dweight


@_add_rmsnorm_bwd_op.register_fake
def _(dy, dr, r, weight, eps, x_dtype, has_residual):
    dres = torch.empty_like(r, memory_format=torch.contiguous_format) if has_residual else r.new_empty(0)
    return torch.empty(r.shape, dtype=x_dtype, device=r.device), dres, torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, residual, weight, eps, _ = inputs
    ctx.save_for_backward(output[1], weight)
    ctx.eps, ctx.x_dtype, ctx.residual_dtype = eps, x.dtype, None if residual is None else residual.dtype
    ctx.set_materialize_grads(False)  # the last norm's r is unused: no zero tensor to read


def _backward(ctx, dy, dr):
    r, weight = ctx.saved_tensors
    if dy is None:  # only r was used: y contributes nothing
        dy = torch.zeros_like(r)
    has_residual = ctx.residual_dtype is not None
    dx, dres, dweight = add_rmsnorm_bwd(dy, dr, r, weight, ctx.eps, ctx.x_dtype, has_residual)
    return dx, dres.to(ctx.residual_dtype) if has_residual else None, dweight, None, None


_add_rmsnorm_op.register_autograd(_backward, setup_context=_setup_context)
_add_rmsnorm_eager = eager_autograd("AddRMSNormFunction", fwd.add_rmsnorm, _setup_context, _backward)


def add_rmsnorm_bwd(dy, dr, r, weight, eps, x_dtype, has_residual):
    """The backward (bwd.add_rmsnorm_bwd), through its custom op when traced: (dx, dresidual or None, dweight)."""
    if traced(dy, dr, r, weight):
        dx, dres, dweight = torch.ops.vimbench.add_rmsnorm_bwd(dy, dr, r, weight, eps, x_dtype, has_residual)
        return dx, dres if has_residual else None, dweight
    return bwd.add_rmsnorm_bwd(dy, dr, r, weight, eps, x_dtype, has_residual)


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float = 1e-5,
                out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """r = residual + x (or x alone when residual is None), y = r * rsqrt(mean(r^2) + eps) * weight; differentiable.

    x: (..., D) any float dtype; residual: (..., D) fp32 or None; weight: (D,). Returns (y in out_dtype, default
    x.dtype; r in fp32), both contiguous with x's shape. All math in fp32. Contract: `add_rmsnorm_ref`.
    """
    if traced(x, residual, weight):
        return torch.ops.vimbench.add_rmsnorm(x, residual, weight, eps, out_dtype)
    if records_autograd(x, residual, weight):
        return _add_rmsnorm_eager(x, residual, weight, eps, out_dtype)
    return fwd.add_rmsnorm(x, residual, weight, eps, out_dtype)


__all__ = ["add_rmsnorm"]
