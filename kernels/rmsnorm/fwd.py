"""Residual add + RMSNorm (weight only), several rows per program; same contract as `add_rmsnorm_ref`."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.runtime import check_device


@triton.jit
def _add_rmsnorm_kernel(
    x_ptr, res_ptr, w_ptr, y_ptr, r_ptr,
    rows, D, eps,
    stride_x, stride_res, stride_y, stride_r,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RES: tl.constexpr,
):
    offs_r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    mask = (offs_r < rows)[:, None] & mask_d[None, :]
    r = tl.load(x_ptr + offs_r[:, None] * stride_x + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r += tl.load(res_ptr + offs_r[:, None] * stride_res + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(r_ptr + offs_r[:, None] * stride_r + offs_d[None, :], r, mask=mask)
    inv_rms = 1.0 / tl.sqrt(tl.sum(r * r, axis=1) / D + eps)  # (R,)
    w = tl.load(w_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    y = r * inv_rms[:, None] * w[None, :]
    tl.store(y_ptr + offs_r[:, None] * stride_y + offs_d[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    t2 = t.reshape(-1, dim)  # a view whenever the leading dims allow it
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float = 1e-5,
                out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """r = residual + x (or x alone when residual is None), y = r * rsqrt(mean(r^2) + eps) * weight.

    x: (..., D) any float dtype; residual: (..., D) fp32 or None; weight: (D,).
    Returns (y in out_dtype, default x.dtype; r in fp32), both contiguous with x's shape. All math in fp32.
    """
    dim = x.shape[-1]
    if weight.shape != (dim,):
        raise ValueError(f"weight must be ({dim},); got {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}; got {tuple(residual.shape)}")
    x2 = _rows(x, dim)
    res2 = _rows(residual, dim) if residual is not None else x2
    rows = x2.shape[0]
    y = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    r = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    if rows == 0 or dim == 0:
        return y, r
    block_d = triton.next_power_of_2(dim)
    if check_device(x, _add_rmsnorm_kernel):  # the interpreter: small blocks
        block_r, warps = 4, 1
    else:
        block_r = max(1, min(16, 4096 // block_d))
        warps = 4 if block_d * block_r <= 4096 else 8
    _add_rmsnorm_kernel[(triton.cdiv(rows, block_r),)](
        x2, res2, weight, y, r, rows, dim, eps,
        x2.stride(0), res2.stride(0), dim, dim,
        BLOCK_R=block_r, BLOCK_D=block_d, HAS_RES=residual is not None, num_warps=warps,
    )
    return y, r
