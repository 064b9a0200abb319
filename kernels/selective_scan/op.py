"""The public selective-scan ops: what the Vim backend and the tools call, registered as torch custom ops.

    vimbench::bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, dt_proj=None) -> out
        functional: a new output (combined (batch, E, L), or the two gated halves (2, batch, E, L)).
    vimbench::bimamba_scan_halves_(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out!, dt_proj=None) -> ()
        the inference trick "halves written over u": declared as mutating `out` (which may be u itself), so the
        compiler knows; never under autograd.
    With dt_proj (2, E, R) given, delta is the low-rank dt (2, batch, R, L) and the scan computes the channel
    delta itself (inference only; no backward).
    vimbench::selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> out
        one direction; functional; inference only.
    vimbench::bimamba_scan_fwd_save(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, chunk)
        -> (out, checkpoints)     the training forward: also the fp32 states every `chunk` tokens; differentiable
    vimbench::bimamba_scan_bwd(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus,
        combine, chunk, dz_halves=False, bc_rows_dtype=None, softplus_done=False)
        -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)
        its backward (bwd.py; dz_halves: dz as the two directions' unsummed terms, laid out like u; bc_rows_dtype:
        dB's slot holds the (2, batch * L, 2N) rows [dB | dC] in that dtype, dC's is empty; softplus_done: delta
        is softplus(pre + delta_bias) already and ddelta is dL/dpre)

What the training forward saves for backward: its inputs (u is also saved by the x_proj GEMM, z is a view of
in_proj's output that the conv keeps; delta is the one tensor kept for the scan alone) and the checkpoints,
2 * batch * N * E * cdiv(L, chunk) fp32; never the (batch, E, L, N) states or the output (recomputed per chunk
in the backward). kernels/README.md has the per-layer budget.

Fake implementations allocate exactly what the launchers allocate (same layouts), so torch.compile(fullgraph=True)
traces them as opaque nodes.
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels.runtime import eager_autograd, needs_custom_op, op_call, records_autograd, traced
from kernels.selective_scan import bwd, fwd

Tensor = torch.Tensor

# Tokens between saved states in the training forward: memory 2 * batch * E * N * cdiv(L, CHUNK) * 4 bytes per
# layer (Vim-Ti, 1248 px, batch 8: 18.9 MB at 128, 37.7 MB at 64) against the backward's per-program scratch (CHUNK / 2
# state tiles in the pairs walk) and its recomputation of one chunk per program. Measured on the H200 (2026-12-04,
# whole captured Vim-Ti bf16 training steps, results/history/ckptab-h200-2026-12-04i.json), img/s and peak GiB at
# 64 / 128 / 256: 1248 px batch 8 90.6, 3.87 / 90.8, 3.55 / 80.0, 3.43; 224 px batch 128 3,085, 2.23 / 3,079, 2.05 /
# 3,105, 2.09. 128: the same speed in 8% less memory.
CHECKPOINT_CHUNK = 128


def _no_backward(name: str, *tensors: Tensor | None) -> None:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise NotImplementedError(f"{name} on the triton backend has no backward pass yet: run it under "
                                  "torch.no_grad() (inference), or train with backend 'torch'")


@torch.library.custom_op("vimbench::bimamba_scan", mutates_args=())
def _bimamba_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                     z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, combine: bool,
                     dt_proj: Optional[Tensor] = None) -> Tensor:
    return fwd.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, dt_proj=dt_proj)


def _out_like(u: Tensor, combine: bool) -> Tensor:
    """What the launcher allocates for the output (the fakes' answer): the halves like u, or the combined output
    like its fp32 accumulator (laid out like u[0]) cast to u's dtype."""
    if not combine:
        return torch.empty_like(u)
    out32 = torch.empty_like(u[0], dtype=torch.float32)
    return out32 if u.dtype == torch.float32 else torch.empty_like(out32, dtype=u.dtype)


@_bimamba_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, dt_proj=None):
    return _out_like(u, combine)


@torch.library.custom_op("vimbench::bimamba_scan_halves_", mutates_args=("out",))
def _bimamba_scan_halves_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                            z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, out: Tensor,
                            dt_proj: Optional[Tensor] = None) -> None:
    fwd.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine=False, out=out, dt_proj=dt_proj)


@_bimamba_scan_halves_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out, dt_proj=None):
    return None


@torch.library.custom_op("vimbench::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, reverse: bool
                       ) -> Tensor:
    return fwd.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    return torch.empty_like(u)


@torch.library.custom_op("vimbench::bimamba_scan_fwd_save", mutates_args=())
def _bimamba_scan_fwd_save_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                              z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, combine: bool,
                              chunk: int) -> tuple[Tensor, Tensor]:
    return fwd.bimamba_scan_fwd_save(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, chunk)


@_bimamba_scan_fwd_save_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, chunk):
    batch, channels, length = u.shape[1:]
    checkpoints = u.new_empty((2, batch, -(-length // chunk), A.shape[-1], channels), dtype=torch.float32)
    return _out_like(u, combine), checkpoints


@torch.library.custom_op("vimbench::bimamba_scan_bwd", mutates_args=())
def _bimamba_scan_bwd_op(grad_out: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor], checkpoints: Tensor,
                         delta_softplus: bool, combine: bool, chunk: int, dz_halves: bool = False,
                         bc_rows_dtype: Optional[torch.dtype] = None, softplus_done: bool = False) -> list[Tensor]:
    with op_call():  # inside a compiled graph: no ones vector kept (runtime.sum_partials)
        grads = bwd.bimamba_scan_bwd(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus,
                                     combine, chunk, dz_halves=dz_halves, bc_rows_dtype=bc_rows_dtype,
                                     softplus_done=softplus_done)
    # A custom op returns tensors only: an empty (0,) placeholder for each absent optional input's gradient.
    return [g if g is not None else u.new_empty(0, dtype=torch.float32) for g in grads]


@_bimamba_scan_bwd_op.register_fake
def _(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus, combine, chunk, dz_halves=False,
      bc_rows_dtype=None, softplus_done=False):
    batch, length = u.shape[1], u.shape[3]
    f32 = dict(dtype=torch.float32, device=u.device)
    absent = u.new_empty(0, dtype=torch.float32)
    # dB, dC: (2, batch, N, L) views of (2, batch, L, N) sums, as bwd.py returns them
    d_bc = [torch.empty(2, batch, length, A.shape[-1], **f32).transpose(-1, -2) for _ in range(2)]
    if bc_rows_dtype is not None:  # [dB | dC] rows in dB's slot
        d_bc = [u.new_empty((2, batch * length, 2 * A.shape[-1]), dtype=bc_rows_dtype), absent]
    # like u[0] in z's dtype, or with dz_halves like u
    dz = absent if z is None else torch.empty_like(u, dtype=z.dtype) if dz_halves else _out_like(u.to(z.dtype), True)
    ddelta = torch.empty_like(delta, dtype=u.dtype if softplus_done else delta.dtype)
    return [torch.empty_like(u), ddelta, torch.empty(A.shape, **f32), *d_bc,
            absent if D is None else torch.empty(D.shape, **f32), dz,
            absent if delta_bias is None else torch.empty(delta_bias.shape, **f32)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, chunk = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1])
    ctx.delta_softplus, ctx.combine, ctx.chunk = delta_softplus, combine, chunk
    ctx.set_materialize_grads(False)  # the checkpoints output gets no gradient


def _backward(ctx, grad_out, _grad_checkpoints):
    u, delta, A, B, C, D, z, delta_bias, checkpoints = ctx.saved_tensors
    if grad_out is None:
        return (None,) * 11
    grads = bimamba_scan_bwd(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, ctx.delta_softplus,
                             ctx.combine, ctx.chunk)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    # fp32 partial sums (dA, dB, dC, dD, ddelta_bias) go back in their input's dtype; absent inputs get None
    return (*(None if t is None else g.to(t.dtype) for g, t in zip(grads, inputs)), None, None, None)


_bimamba_scan_fwd_save_op.register_autograd(_backward, setup_context=_setup_context)
_bimamba_scan_fwd_save_eager = eager_autograd("BimambaScanFunction", fwd.bimamba_scan_fwd_save, _setup_context,
                                              _backward)


def bimamba_scan_bwd(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus, combine, chunk,
                     dz_halves=False, bc_rows_dtype=None, softplus_done=False):
    """The backward (bwd.bimamba_scan_bwd), through its custom op when traced: (du, ddelta, dA, dB, dC, dD, dz,
    ddelta_bias), None for the gradient of an absent optional input; dz_halves, bc_rows_dtype and softplus_done
    as in bwd.bimamba_scan_bwd (with bc_rows_dtype, dC is None; with softplus_done, ddelta is dL/dpre)."""
    args = (grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints)
    if traced(*args):
        grads = torch.ops.vimbench.bimamba_scan_bwd(*args, bool(delta_softplus), bool(combine), int(chunk),
                                                    bool(dz_halves), bc_rows_dtype, bool(softplus_done))
        present = (u, delta, A, B, C, D, z, delta_bias)
        if bc_rows_dtype is not None:
            present = (u, delta, A, B, None, D, z, delta_bias)
        return tuple(None if t is None else g for g, t in zip(grads, present))
    return tuple(bwd.bimamba_scan_bwd(*args, delta_softplus, combine, chunk, dz_halves=dz_halves,
                                      bc_rows_dtype=bc_rows_dtype, softplus_done=softplus_done))


def bimamba_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, combine=True, out=None,
                 dt_proj=None):
    """Both Vim directions in one launch, gated: 0.5 * (y_fwd + y_bwd) * SiLU(z). Contract: `bimamba_scan_ref`.

    Direction-stacked inputs (index 0 forward, 1 backward): u, delta (2, batch, E, L) fp32/fp16/bf16; A (2, E, N)
    fp32; B, C (2, batch, N, L), any strides; D, delta_bias (2, E) fp32 or None; z (batch, E, L) or None.
    combine=True: returns (batch, E, L) in u's dtype, laid out like u[0]. combine=False: returns the gated halves
    0.5 * y_dir * SiLU(z), (2, batch, E, L) in u's dtype, a new tensor laid out like u, or `out` (u's shape and
    dtype; may be u or delta itself, which the scan then overwrites) when given. out= is an in-place write and
    is refused under autograd. Differentiable in u, delta, A, B, C, D, z and delta_bias: under autograd the
    forward also saves fp32 state checkpoints every CHECKPOINT_CHUNK tokens for the backward kernel.
    dt_proj: None, or the (2, E, R) dt_proj weights; then delta is the low-rank dt (2, batch, R, L) and the scan
    computes the channel delta itself (fwd.bimamba_scan). Inference only: refused under autograd.
    """
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    if dt_proj is not None:
        _no_backward("bimamba_scan(dt_proj=...)", *tensors, dt_proj)
        tensors += (dt_proj,)
    if out is not None:
        if combine:
            raise ValueError("out= is only taken with combine=False")
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors + (out,)):
            raise ValueError("bimamba_scan(out=...) overwrites its output buffer in place; not allowed under "
                             "autograd: pass out=None")
    if records_autograd(*tensors):
        save = _bimamba_scan_fwd_save_eager if not traced(*tensors) else torch.ops.vimbench.bimamba_scan_fwd_save
        return save(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), bool(combine), CHECKPOINT_CHUNK)[0]
    if not needs_custom_op(*tensors, out):
        return fwd.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out, dt_proj)
    if out is None:
        return torch.ops.vimbench.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                               bool(combine), dt_proj)
    torch.ops.vimbench.bimamba_scan_halves_(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), out,
                                            dt_proj)
    return out


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False):
    """Selective scan, one direction. Contract: `selective_scan_ref`. u, delta: (batch, E, L); A: (E, N) fp32;
    B, C: (batch, N, L); D, delta_bias: (E,) or None; z: (batch, E, L) or None. Returns (batch, E, L) in u's dtype
    and layout. Inference only (no backward)."""
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    _no_backward("selective_scan", *tensors)
    if not needs_custom_op(*tensors):
        return fwd.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    return torch.ops.vimbench.selective_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                             bool(reverse))


__all__ = ["bimamba_scan", "selective_scan"]
