"""Backward of `add_rmsnorm`: row gradients in one pass, weight gradient from per-program partials.

Forward (per row of D): r = x + residual, inv = rsqrt(mean(r^2) + eps), y = r * inv * w; both y and r are outputs.
Given dy and dr (the gradient reaching r directly: the next layer's residual input):
    dr_total = dr + inv * (w dy) - r * inv^3 / D * sum(w dy r)
    dx = dr_total (in x's dtype), dresidual = dr_total (fp32), dweight = sum_rows dy * r * inv.
Saved by the op: r (fp32, its own output) and w; inv is recomputed from r (one row reduction) instead of saved.
Program p handles row blocks p, p + P, p + 2P, ... and keeps its dweight share in registers; it writes one (D,)
partial and the launcher sums the P partials with torch: deterministic, no atomics.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.runtime import check_device


@triton.jit
def _add_rmsnorm_bwd_kernel(
    dy_ptr, dr_ptr, r_ptr, w_ptr, dx_ptr, dres_ptr, dw_part_ptr,
    rows, D, eps,
    stride_dy, stride_dr, stride_r, stride_dx, stride_dres,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, HAS_DR: tl.constexpr, HAS_RES: tl.constexpr,
):
    pid = tl.program_id(0)
    n_prog = tl.num_programs(0)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    w = tl.load(w_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for block in tl.range(pid, tl.cdiv(rows, BLOCK_R), n_prog):
        offs_r = (block * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        mask = (offs_r < rows)[:, None] & mask_d[None, :]
        r = tl.load(r_ptr + offs_r[:, None] * stride_r + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs_r[:, None] * stride_dy + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(r * r, axis=1) / D + eps)  # (R,)
        wdy = w[None, :] * dy
        proj = tl.sum(wdy * r, axis=1) * inv * inv * inv / D  # (R,)
        grad = inv[:, None] * wdy - r * proj[:, None]
        if HAS_DR:
            grad += tl.load(dr_ptr + offs_r[:, None] * stride_dr + offs_d[None, :], mask=mask,
                            other=0.0).to(tl.float32)
        tl.store(dx_ptr + offs_r[:, None] * stride_dx + offs_d[None, :], grad.to(dx_ptr.dtype.element_ty),
                 mask=mask)
        if HAS_RES:
            tl.store(dres_ptr + offs_r[:, None] * stride_dres + offs_d[None, :], grad, mask=mask)
        dw += tl.sum(dy * r * inv[:, None], axis=0)
    tl.store(dw_part_ptr + pid * D + offs_d, dw, mask=mask_d)


def _rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    t2 = t.reshape(-1, dim)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _programs(interpreted: bool, row_blocks: int, device: torch.device) -> int:
    """Programs that walk the row blocks: a few per SM on a GPU (the partial buffer is programs x D fp32); under
    the interpreter at most 3, so that tests cover programs with several row blocks."""
    if interpreted:
        return min(row_blocks, 3)
    return min(row_blocks, 4 * torch.cuda.get_device_properties(device).multi_processor_count)


def add_rmsnorm_bwd(dy: torch.Tensor, dr: torch.Tensor | None, r: torch.Tensor, weight: torch.Tensor,
                    eps: float, x_dtype: torch.dtype, has_residual: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of `add_rmsnorm(x, residual, weight, eps, out_dtype)`, from its saved output r.

    dy: (..., D) gradient of y, any float dtype; dr: (..., D) gradient of r or None (r unused); r: (..., D) fp32
    (the forward's output); weight: (D,). Returns (dx (..., D) in x_dtype; dresidual (..., D) fp32, or None when
    the forward had no residual; dweight (D,) in weight's dtype), all math in fp32.
    """
    dim = r.shape[-1]
    if dy.shape != r.shape or (dr is not None and dr.shape != r.shape):
        raise ValueError(f"dy and dr must have r's shape {tuple(r.shape)}; got {tuple(dy.shape)} and "
                         f"{None if dr is None else tuple(dr.shape)}")
    dy2, r2 = _rows(dy, dim), _rows(r, dim)
    dr2 = _rows(dr, dim) if dr is not None else r2
    rows = r2.shape[0]
    dx = torch.empty(r.shape, dtype=x_dtype, device=r.device)
    dres = torch.empty(r.shape, dtype=torch.float32, device=r.device) if has_residual else None
    if rows == 0 or dim == 0:
        return dx, dres, torch.zeros_like(weight)
    block_d = triton.next_power_of_2(dim)
    interpreted = check_device(r, _add_rmsnorm_bwd_kernel)
    if interpreted:
        block_r, warps = 2, 1
    else:
        block_r = max(1, min(16, 4096 // block_d))
        warps = 4 if block_d * block_r <= 4096 else 8
    programs = _programs(interpreted, triton.cdiv(rows, block_r), r.device)
    dw_part = torch.empty((programs, dim), dtype=torch.float32, device=r.device)
    dres_t = dres if dres is not None else dx  # never written without HAS_RES
    _add_rmsnorm_bwd_kernel[(programs,)](
        dy2, dr2, r2, weight, dx, dres_t, dw_part, rows, dim, eps,
        dy2.stride(0), dr2.stride(0), r2.stride(0), dim, dim,
        BLOCK_R=block_r, BLOCK_D=block_d, HAS_DR=dr is not None, HAS_RES=has_residual, num_warps=warps,
    )
    return dx, dres, dw_part.sum(0).to(weight.dtype)
