"""The public selective-scan ops: what the Vim backend and the tools call, registered as torch custom ops.

    vimbench::bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine) -> out
        functional: a new output (combined (batch, E, L), or the two gated halves (2, batch, E, L)).
    vimbench::bimamba_scan_halves_(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out!) -> ()
        the inference trick "halves written over u": declared as mutating `out` (which may be u itself), so the
        compiler knows; never under autograd.
    vimbench::selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> out
        one direction; functional.

Fake implementations allocate exactly what the launchers allocate (same layouts), so torch.compile(fullgraph=True)
traces them as opaque nodes.
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels.runtime import needs_custom_op
from kernels.selective_scan import fwd

Tensor = torch.Tensor


def _no_backward(name: str, *tensors: Tensor | None) -> None:
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise NotImplementedError(f"{name} on the triton backend has no backward pass yet: run it under "
                                  "torch.no_grad() (inference), or train with backend 'torch'")


@torch.library.custom_op("vimbench::bimamba_scan", mutates_args=())
def _bimamba_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                     z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, combine: bool
                     ) -> Tensor:
    return fwd.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine)


@_bimamba_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine):
    if not combine:
        return torch.empty_like(u)
    out32 = torch.empty_like(u[0], dtype=torch.float32)  # the launcher's fp32 accumulator, then its cast
    return out32 if u.dtype == torch.float32 else torch.empty_like(out32, dtype=u.dtype)


@torch.library.custom_op("vimbench::bimamba_scan_halves_", mutates_args=("out",))
def _bimamba_scan_halves_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                            z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, out: Tensor
                            ) -> None:
    fwd.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine=False, out=out)


@_bimamba_scan_halves_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out):
    return None


@torch.library.custom_op("vimbench::selective_scan", mutates_args=())
def _selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool, reverse: bool
                       ) -> Tensor:
    return fwd.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    return torch.empty_like(u)


def bimamba_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, combine=True, out=None):
    """Both Vim directions in one launch, gated: 0.5 * (y_fwd + y_bwd) * SiLU(z). Contract: `bimamba_scan_ref`.

    Direction-stacked inputs (index 0 forward, 1 backward): u, delta (2, batch, E, L) fp32/fp16/bf16; A (2, E, N)
    fp32; B, C (2, batch, N, L), any strides; D, delta_bias (2, E) fp32 or None; z (batch, E, L) or None.
    combine=True: returns (batch, E, L) in u's dtype, laid out like u[0]. combine=False: returns the gated halves
    0.5 * y_dir * SiLU(z), (2, batch, E, L) in u's dtype, a new tensor laid out like u, or `out` (u's shape and
    dtype; may be u or delta itself, which the scan then overwrites) when given. out= is an in-place write and
    is refused under autograd.
    """
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    if out is not None:
        if combine:
            raise ValueError("out= is only taken with combine=False")
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors + (out,)):
            raise ValueError("bimamba_scan(out=...) overwrites its output buffer in place; not allowed under "
                             "autograd: pass out=None")
    _no_backward("bimamba_scan", *tensors)
    if not needs_custom_op(*tensors, out):
        return fwd.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out)
    if out is None:
        return torch.ops.vimbench.bimamba_scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                               bool(combine))
    torch.ops.vimbench.bimamba_scan_halves_(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), out)
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
