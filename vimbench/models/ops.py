"""One table: backend name -> the op functions the Vim block calls. The model never knows which backend runs it.

Op signatures (all backends identical; shapes documented on the reference ops in `kernels`):
    add_rmsnorm(x, residual, weight, eps, out_dtype) -> (y, residual_fp32)
    conv1d_silu_bidir(x, weight, bias, out=None) -> u   x (B, E, L), weight (2, E, K), bias (2, E) -> (2, B, E, L)
    bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True, combine=True, out=None, dt_proj=None)
                      -> y    direction-stacked inputs -> (B, E, L); combine=False: the two gated halves
                      (2, B, E, L), written to `out` if given (may be u itself); dt_proj (2, E, R): delta is
                      the low-rank dt (2, B, R, L) and the scan applies dt_proj itself; delta_softplus=False:
                      delta is already the step size (dt_softplus's output, delta_bias None)
scan_fuses_dt_proj: whether the mixer should hand the scan the low-rank dt and dt_proj at inference (the Triton
scan computes delta per token, so no (2, B, E, L) delta tensor and no dt_proj GEMM exist); the reference
accepts the same call but only computes delta first, so the torch backend keeps its GEMM.
scan_blocks_take_dt_proj(batch, channels, length, dt_rank, interpreted) -> bool: whether the fused scan of that
size runs in one pass in blocks of tokens, captured or not (kernels.selective_scan.fwd.token_blocks_take_dt_proj);
None where the backend has no such kernel.
scan_takes_dt_proj(batch, channels, length, dt_rank, n_state, device) -> bool: whether an eager fused scan of that
size applies dt_proj itself (kernels.selective_scan.fwd.eager_scan_takes_dt_proj: not where it runs chunk-parallel,
which computes delta first); None where the backend has no fused scan.
    bimamba_inner(h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, combine, norm)
                      -> (B, L, D) training: in_proj -> conv -> x_proj -> dt_proj -> scan -> out_proj as one
                      differentiable op
                      (kernels.bimamba_inner); None in a table without one (the mixer then trains op by op)
    zgate(y, h, z_weight, out=None) -> (B, L, E)    inference: (y_f + y_b) * SiLU(h @ z_weight^T) from the scan's
                      ungated halves (or their sum), z made inside the op (kernels.zgate; memory mode lean-gated);
                      out may lie over y's first direction (y[0].transpose(1, 2)) or the sum (y.transpose(1, 2))
    conv_xproj(x, weight, bias, x_proj_t, out_dtype, out=None) -> (u, x_dbl)    inference: conv1d_silu_bidir and
                      the x_proj GEMM in one launch (kernels.conv1d.xproj; x channel-last); None where the backend
                      has none
    norm_in_proj(y, out_w, residual, norm_w, eps, in_w, out=None) -> (xz, r)    inference: the previous mixer's
                      out_proj, the residual add, RMSNorm and in_proj in one launch (kernels.norm_in_proj); None
                      where the backend has none
    x_proj_rows(u, x_proj_t, out_dtype, out=None) -> x_dbl    inference: x_proj on the conv's output u (2, B, E, L)
                      channel-last, (2, B * L, W) (kernels.conv1d.xproj); None where the backend has none
    dt_softplus(dt, weight, bias, out_dtype) -> delta    inference: softplus(dt @ dt_proj + dt_bias) for both
                      directions, dt (2, M, R) -> (2, M, E), the scan then called with delta_bias=None and
                      delta_softplus=False (kernels.dt_softplus); None where the backend has none (the delta GEMM
                      and the scan's own bias and softplus, as the official code)
    (out: the outputs' buffers, written instead of new tensors; eager calls only; conv1d_silu_bidir and zgate take one
    too)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from vimbench.errors import VimbenchError
from vimbench.settings import BACKENDS


@dataclass(frozen=True)
class VimOps:
    name: str
    add_rmsnorm: Callable
    conv1d_silu_bidir: Callable
    bimamba_scan: Callable
    bimamba_inner: Callable | None = None
    scan_fuses_dt_proj: bool = False
    scan_blocks_take_dt_proj: Callable | None = None
    scan_takes_dt_proj: Callable | None = None
    zgate: Callable | None = None
    conv_xproj: Callable | None = None
    norm_in_proj: Callable | None = None
    x_proj_rows: Callable | None = None
    dt_softplus: Callable | None = None


def _torch_ops() -> VimOps:
    from kernels.bimamba_inner.reference import bimamba_inner_ref
    from kernels.conv1d.reference import conv1d_silu_bidir_ref
    from kernels.rmsnorm.reference import add_rmsnorm_ref
    from kernels.selective_scan.reference import bimamba_scan_ref
    from kernels.zgate.reference import zgate_ref

    return VimOps("torch", add_rmsnorm_ref, conv1d_silu_bidir_ref, bimamba_scan_ref, bimamba_inner_ref,
                  zgate=zgate_ref)


def _triton_ops() -> VimOps:
    import torch

    from vimbench.settings import triton_interpreter_requested

    # Without a GPU the kernels only run interpreted; failing here says so at build time, instead of a
    # "0 active drivers" error deep inside the first forward.
    if not torch.cuda.is_available() and not triton_interpreter_requested():
        raise VimbenchError("the triton backend needs a CUDA GPU and none is visible here (set TRITON_INTERPRET=1 "
                            "before importing to run the kernels slowly on CPU, for tests); use backend torch")
    try:
        from kernels.bimamba_inner.op import bimamba_inner
        from kernels.conv1d.op import conv1d_silu_bidir, conv_xproj, x_proj_rows
        from kernels.dt_softplus.op import dt_softplus
        from kernels.norm_in_proj.op import norm_in_proj
        from kernels.rmsnorm.op import add_rmsnorm
        from kernels.selective_scan.fwd import eager_scan_takes_dt_proj, token_blocks_take_dt_proj
        from kernels.selective_scan.op import bimamba_scan
        from kernels.zgate.op import zgate
    except ImportError as exc:  # triton missing, or kernels not built yet
        raise VimbenchError(f"the triton backend is unavailable here ({exc}); use --backend torch") from exc
    return VimOps("triton", add_rmsnorm, conv1d_silu_bidir, bimamba_scan, bimamba_inner,
                  scan_fuses_dt_proj=True, scan_blocks_take_dt_proj=token_blocks_take_dt_proj,
                  scan_takes_dt_proj=eager_scan_takes_dt_proj, zgate=zgate,
                  conv_xproj=conv_xproj, norm_in_proj=norm_in_proj, x_proj_rows=x_proj_rows,
                  dt_softplus=dt_softplus)


_FACTORIES = {"torch": _torch_ops, "triton": _triton_ops}
assert set(_FACTORIES) == set(BACKENDS)


def normalize_backend(backend: str) -> str:
    """A backend name in any case ('Triton', ' torch') -> its canonical name; VimbenchError if unknown. The same
    rule as VIMBENCH_BACKEND and --backend."""
    name = backend.strip().lower() if isinstance(backend, str) else backend
    if name not in _FACTORIES:
        raise VimbenchError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return name


def get_ops(backend: str) -> VimOps:
    """The op table of one backend ('torch' or 'triton', any case)."""
    return _FACTORIES[normalize_backend(backend)]()
