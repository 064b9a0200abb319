"""The public conv1d op: what the Vim backend and the tools call, registered as torch custom ops.

    vimbench::conv1d_silu_bidir(x, weight, bias) -> out                 forward (fwd.py)
    vimbench::conv1d_silu_bidir_bwd(dout, x, weight, bias) -> (dx, dweight, dbias)   backward (bwd.py)
    vimbench::conv_xproj(x, weight, bias, x_proj_t, out_dtype) -> (u, x_dbl)   the conv fused with x_proj,
                                                                 inference only (xproj.py)
    vimbench::x_proj_rows(u, x_proj_t, out_dtype) -> x_dbl     x_proj on the conv's output, inference only
                                                                 (xproj.py; the front path's)

All are functional (no input is mutated, no output aliases an input) and have fake implementations, so autograd
works (conv_xproj and x_proj_rows have no backward and refuse autograd), and torch.compile(fullgraph=True) traces
them as opaque nodes. Saved for backward: the inputs only (x is a view of in_proj's output that the mixer keeps
alive anyway); the output is recomputed inside the backward kernel.
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels.conv1d import bwd, fwd, xproj
from kernels.runtime import eager_autograd, needs_custom_op, op_call, records_autograd, traced


@torch.library.custom_op("vimbench::conv1d_silu_bidir", mutates_args=())
def _conv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return fwd.conv1d_silu_bidir(x, weight, bias)


@_conv1d_op.register_fake
def _(x, weight, bias):
    return fwd.conv_out_like(x)


@torch.library.custom_op("vimbench::conv1d_silu_bidir_bwd", mutates_args=())
def _conv1d_bwd_op(dout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with op_call():  # inside a compiled graph: no ones vector kept (runtime.sum_partials)
        dx, dweight, dbias = bwd.conv1d_silu_bidir_bwd(dout, x, weight, bias)
    # A custom op returns tensors only: without bias, an empty (0,) placeholder that autograd drops.
    return dx, dweight, dbias if dbias is not None else weight.new_empty(0)


@_conv1d_bwd_op.register_fake
def _(dout, x, weight, bias):
    dbias = torch.empty_like(bias) if bias is not None else weight.new_empty(0)
    return bwd.dx_like(x), torch.empty_like(weight), dbias


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight, bias)


def _backward(ctx, dout):
    x, weight, bias = ctx.saved_tensors
    dx, dweight, dbias = conv1d_silu_bidir_bwd(dout, x, weight, bias)
    return dx, dweight, dbias


_conv1d_op.register_autograd(_backward, setup_context=_setup_context)
_conv1d_eager = eager_autograd("Conv1dSiluBidirFunction", fwd.conv1d_silu_bidir, _setup_context, _backward)


def conv1d_silu_bidir_bwd(dout, x, weight, bias):
    """The backward (bwd.conv1d_silu_bidir_bwd), through its custom op when traced: (dx, dweight, dbias or None)."""
    if traced(dout, x, weight, bias):
        dx, dweight, dbias = torch.ops.vimbench.conv1d_silu_bidir_bwd(dout, x, weight, bias)
        return dx, dweight, dbias if bias is not None else None
    return bwd.conv1d_silu_bidir_bwd(dout, x, weight, bias)


def conv1d_silu_bidir(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Both directions' depthwise conv + SiLU in natural token order; differentiable.

    x: (batch, E, L), any float dtype and strides; weight: (2, E, K) (weight[0] the causal taps, weight[1] the
    anti-causal ones as the official `conv1d_b.weight` stores them); bias: (2, E) or None. Returns (2, batch, E, L)
    in x's dtype, laid out (batch, L, 2, E) in memory when x is channel-last. Contract: `conv1d_silu_bidir_ref`.
    out: the output's buffer (`fwd.conv1d_silu_bidir`), for eager inference only.
    """
    if out is not None and (traced(x, weight, bias) or records_autograd(x, weight, bias)):
        raise ValueError("conv1d_silu_bidir's out buffer is for eager inference; traced and autograd-recorded calls "
                         "allocate their output")
    if traced(x, weight, bias):
        return torch.ops.vimbench.conv1d_silu_bidir(x, weight, bias)
    if records_autograd(x, weight, bias):
        return _conv1d_eager(x, weight, bias)
    return fwd.conv1d_silu_bidir(x, weight, bias, out)


@torch.library.custom_op("vimbench::conv_xproj", mutates_args=())
def _conv_xproj_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], x_proj_t: torch.Tensor,
                   out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return xproj.conv_xproj(x, weight, bias, x_proj_t, out_dtype)


@_conv_xproj_op.register_fake
def _(x, weight, bias, x_proj_t, out_dtype):
    xproj.check_conv_xproj(x, weight, bias, x_proj_t, out_dtype)
    return fwd.conv_out_like(x), xproj.x_dbl_like(x, x_proj_t.shape[-1], out_dtype)


def conv_xproj(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, x_proj_t: torch.Tensor,
               out_dtype: torch.dtype, out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions' conv + SiLU and x_proj in one launch: (u, x_dbl), u as `conv1d_silu_bidir` returns it and
    x_dbl (2, batch * L, W) = u's token rows @ x_proj_t in out_dtype (fp32 or x's dtype). x channel-last.
    Contract: `conv_xproj_ref`. out: (u, x_dbl) buffers to write (eager only; `xproj.conv_xproj`). Inference
    only: raises NotImplementedError when autograd would record the call."""
    if records_autograd(x, weight, bias, x_proj_t):
        raise NotImplementedError("conv_xproj on the triton backend has no backward pass: run it under "
                                  "torch.no_grad() (inference); training keeps the conv op and the x_proj GEMM")
    if needs_custom_op(x, weight, bias, x_proj_t):
        if out is not None:
            raise ValueError("conv_xproj's out buffers are for eager calls; a traced call allocates its outputs")
        return torch.ops.vimbench.conv_xproj(x, weight, bias, x_proj_t, out_dtype)
    return xproj.conv_xproj(x, weight, bias, x_proj_t, out_dtype, out)


@torch.library.custom_op("vimbench::x_proj_rows", mutates_args=())
def _x_proj_rows_op(u: torch.Tensor, x_proj_t: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    return xproj.x_proj_rows(u, x_proj_t, out_dtype)


@_x_proj_rows_op.register_fake
def _(u, x_proj_t, out_dtype):
    xproj.check_x_proj_rows(u, x_proj_t, out_dtype)
    return xproj.x_dbl_like(u[0], x_proj_t.shape[-1], out_dtype)


def x_proj_rows(u: torch.Tensor, x_proj_t: torch.Tensor, out_dtype: torch.dtype, out: torch.Tensor | None = None
                ) -> torch.Tensor:
    """x_proj on the conv's output: x_dbl (2, batch * L, W) = u's token rows @ x_proj_t in out_dtype (fp32 or u's
    dtype), u (2, batch, E, L) channel-last. Contract: `x_proj_rows_ref`. out: x_dbl's buffer (eager only;
    `xproj.x_proj_rows`). Inference only: raises NotImplementedError when autograd would record the call."""
    if records_autograd(u, x_proj_t):
        raise NotImplementedError("x_proj_rows on the triton backend has no backward pass: run it under "
                                  "torch.no_grad() (inference); training keeps the x_proj GEMM")
    if needs_custom_op(u, x_proj_t):
        if out is not None:
            raise ValueError("x_proj_rows's out buffer is for eager calls; a traced call allocates its output")
        return torch.ops.vimbench.x_proj_rows(u, x_proj_t, out_dtype)
    return xproj.x_proj_rows(u, x_proj_t, out_dtype, out)


__all__ = ["conv1d_silu_bidir", "conv_xproj", "x_proj_rows"]
