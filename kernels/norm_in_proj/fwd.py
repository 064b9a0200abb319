"""The Vim mixer's front in one launch, for small eager inference: the previous mixer's out_proj, the residual
add, RMSNorm and this mixer's in_proj.

    xz, r = norm_in_proj(y, out_w, residual, norm_w, eps, in_w)        contract: `norm_in_proj_ref`

Why (issue 11, eager batch 1): at 224 px, batch 1 an eager Vim-Ti forward is host-bound: ~6 launches per layer
(add + RMSNorm, in_proj, conv, x_proj, scan, out_proj) at ~25 us of host time each on the GPU box, against DeiT-Ti's
~11 cheaper aten ops per block over half as many blocks. This op replaces three of a layer's launches (out_proj, the
norm, in_proj) by one; with the conv fused with x_proj (`kernels/conv1d/xproj.py`) a layer is three launches.
All three stages are row-local (per token), so one program's rows go through them without leaving it.

One program: BLOCK_M token rows (m = b * L + l) x BLOCK_N of in_proj's N outputs (grid axis 0 the N tiles, so that
the programs sharing rows run together and read them from L2). Each program
1. makes x for its rows over all of D (BLOCK_D = D rounded up to a power of two): with out_w, acc = y @ out_w^T in
   BLOCK_K steps of K (tl.dot, fp32 accumulation), rounded to y's dtype as the out_proj GEMM writes it; else
   x = y;
2. r = residual + x in fp32, stored by the programs of N tile 0; h = r * rsqrt(mean(r^2) + eps) * norm_w, rounded
   to in_w's dtype (the norm kernel's math, `kernels/rmsnorm/fwd.py`);
3. xz[rows, tile] = h @ in_w[tile]^T (one tl.dot over BLOCK_D), stored in in_w's dtype.
Each of a row tile's N-tile programs recomputes steps 1-2 (cdiv(N, BLOCK_N) times the out_proj FLOPs): meant for
small row counts, where the launches, not the FLOPs, bound the forward (the model uses it in eager calls of at most
`vimbench.models.vim.FRONT_MAX_ROWS` token rows). fp32 operands multiply with input_precision="ieee" (no TF32).
Inference only (the op refuses autograd). Under TRITON_INTERPRET=1 16-bit tiles are multiplied in fp32 (the
interpreter's tl.dot treats bf16 as raw bits, triton 3.6-3.8; kernels/tiledot.py): the CPU tests check the
tiling, masks and the norm, the GPU tests the 16-bit tl.dot.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import CallMemo, launch
from kernels.runtime import LaunchConfig, cdiv, check_device, check_out, next_power_of_2, sm_count
from kernels.tiledot import dot_acc

_MEMO = CallMemo("norm_in_proj")  # eager calls replayed by signature (kernels/launch.py)


@triton.jit(do_not_specialize=["M", "L"])
def _norm_in_proj_kernel(
    y_ptr, ow_ptr, res_ptr, nw_ptr, iw_ptr, xz_ptr, r_ptr,
    M, L, K, D, N, eps,
    stride_y_b, stride_y_l, stride_y_k,
    stride_ow_d, stride_ow_k,
    stride_res_b, stride_res_l, stride_res_d,
    stride_iw_n, stride_iw_d,
    stride_xz_b, stride_xz_l,
    stride_r_b, stride_r_l,
    HAS_OUT: tl.constexpr, HAS_RES: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    N_TILES: tl.constexpr,
):
    pid_n = tl.program_id(0)  # this program's group of N_TILES in_proj tiles
    offs_m = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    b = offs_m // L
    l = offs_m - b * L
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < D
    rows_d = mask_m[:, None] & mask_d[None, :]
    y_rows = y_ptr + b * stride_y_b + l * stride_y_l  # (M,)
    # 1. x: the previous out_proj's output for these rows (or the block input itself)
    if HAS_OUT:
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = tl.load(y_rows[:, None] + offs_k[None, :] * stride_y_k, mask=mask_m[:, None] & mask_k[None, :],
                        other=0.0)
            w = tl.load(ow_ptr + offs_d[None, :] * stride_ow_d + offs_k[:, None] * stride_ow_k,
                        mask=mask_k[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_K, BLOCK_D) = out_w^T
            acc = dot_acc(a, w, acc, IEEE, UPCAST)
        x = acc.to(y_ptr.dtype.element_ty).to(tl.float32)  # as the out_proj GEMM writes it
    else:
        x = tl.load(y_rows[:, None] + offs_d[None, :] * stride_y_k, mask=rows_d, other=0.0).to(tl.float32)
    # 2. the residual add and the norm
    r = x
    if HAS_RES:
        r += tl.load(res_ptr + (b * stride_res_b + l * stride_res_l)[:, None] + offs_d[None, :] * stride_res_d,
                     mask=rows_d, other=0.0).to(tl.float32)
    tl.store(r_ptr + (b * stride_r_b + l * stride_r_l)[:, None] + offs_d[None, :], r, mask=rows_d & (pid_n == 0))
    inv_rms = 1.0 / tl.sqrt(tl.sum(r * r, axis=1) / D + eps)  # (M,)
    nw = tl.load(nw_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    h = (r * inv_rms[:, None] * nw[None, :]).to(xz_ptr.dtype.element_ty)
    # 3. this program's in_proj outputs: N_TILES tiles from the same h (the last group's may run past N: masked)
    xz_rows = xz_ptr + (b * stride_xz_b + l * stride_xz_l)[:, None]
    for t in range(N_TILES):
        offs_n = (pid_n * N_TILES + t) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        wi = tl.load(iw_ptr + offs_n[None, :] * stride_iw_n + offs_d[:, None] * stride_iw_d,
                     mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # (BLOCK_D, BLOCK_N) = in_w^T
        out = dot_acc(h, wi, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), IEEE, UPCAST)
        tl.store(xz_rows + offs_n[None, :], out.to(xz_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# in_proj tiles per program (None: as `norm_in_proj_launch_config` chooses from the grid; an int: at most that many,
# for A/B runs). Each program repeats out_proj for its rows, so fewer groups of tiles repeat it fewer times, and
# fewer programs run in parallel. Measured against one tile per program (session aa, H100, Vim-Ti 224 px bf16, the
# replayed front path, results/history/planab-ntiles-h100-2026-12-06aa.json): the kernel's time per forward 892
# against 1,201 us at batch 16 (3 tiles), 803 against 802 at batch 8 (2), the same code at batch 1.
N_TILES: int | None = None


def norm_in_proj_launch_config(rows: int, dim: int, n_out: int, dtype: torch.dtype, interpreted: bool,
                               sms: int = 132) -> LaunchConfig:
    """`_norm_in_proj_kernel`'s grid, tiles, warps and stages: the one place that chooses them (the launcher and
    `vimbench kernels static` both call it). BLOCK_D = D rounded up to a power of two (>= 16, tl.dot's minimum);
    the in_proj tile (BLOCK_D x BLOCK_N) and the out_proj step's (BLOCK_K x BLOCK_D) are held to 32 Ki and 16 Ki
    elements (Vim-Ti, D = 192: 256 x 128 and 64 x 256; Vim-B, D = 768: 1024 x 32 and 16 x 1024), 32 rows (16 from
    BLOCK_D = 1024), 4 warps (8 from BLOCK_D = 1024), 2 stages. fp32 (ieee tl.dot, on the FMA pipe from registers):
    16 rows, an in_proj tile of at most 8 Ki elements, 16 of K per step, 8 warps; it still spills (static, sm_90,
    Vim-Ti: 256 x 128 on 4 warps 8.6 KB, 256 x 32 on 4 or 8 warps 1.1 KB), so the model runs the front path for
    16-bit activations only (`vimbench.models.vim.FRONT_DTYPES`). Under the interpreter 16 rows x 32 outputs x 16
    of K, so that tests cross row tiles, images, N tiles and K steps. At least one N tile: its programs store r
    (N = 0 too). A program makes N_TILES of in_proj's tiles from its rows' h: one where a tile per program leaves
    the GPU's `sms` short of work, else as many as keep about one program per SM, a divisor of the tile count
    (Vim-Ti at 224 px on 132 SMs: 1 up to batch 5, 2 at batch 8, 3 at batch 16); two under the interpreter, so
    that tests cross a group and a masked tile."""
    block_d = max(16, next_power_of_2(dim))
    if interpreted:
        block_m, block_n, block_k, warps = 16, 32, 16, 1
    elif dtype == torch.float32:  # tl.dot with ieee fp32 multiplies on the FMA pipe from registers: small tiles
        block_n = max(16, min(32, 8192 // block_d))
        block_k = 16
        block_m, warps = 16, 8
    else:
        block_n = max(16, min(128, 32768 // block_d))
        block_k = max(16, min(64, 16384 // block_d))
        block_m, warps = (32, 4) if block_d <= 512 else (16, 8)
    tiles, row_blocks = max(1, cdiv(n_out, block_n)), cdiv(rows, block_m)
    if interpreted:
        n_tiles = 2
    elif N_TILES is not None:
        n_tiles = max(1, min(N_TILES, tiles))
    else:  # the largest divisor of the tile count within one program per SM (no group runs short)
        target = row_blocks * tiles // max(1, sms)
        n_tiles = max(d for d in range(1, tiles + 1) if tiles % d == 0 and d <= max(1, target))
    if n_tiles > 1 and not interpreted:
        warps *= 2  # h stays live across the tiles: 4 warps spill at Vim-Ti's tiles (static, sm_90: 48 B)
    return LaunchConfig(kernel="_norm_in_proj_kernel", grid=(cdiv(tiles, n_tiles), row_blocks),
                        constexprs=dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_D=block_d,
                                        N_TILES=n_tiles),
                        num_warps=warps, num_stages=2)


def outputs_like(y: torch.Tensor, norm_w: torch.Tensor, in_w: torch.Tensor, device: torch.device | str | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """What `norm_in_proj` allocates: xz (batch, L, N) in in_w's dtype and r (batch, L, D) fp32, contiguous (the
    fake's answer too), on y's device or `device`."""
    batch, length = y.shape[:2]
    device = y.device if device is None else device
    return (torch.empty((batch, length, in_w.shape[0]), dtype=in_w.dtype, device=device),
            torch.empty((batch, length, norm_w.shape[0]), dtype=torch.float32, device=device))


def check_norm_in_proj(y: torch.Tensor, out_w: torch.Tensor | None, residual: torch.Tensor | None,
                       norm_w: torch.Tensor, in_w: torch.Tensor) -> None:
    """Shapes and dtypes; ValueError naming what is wrong."""
    floats = (torch.float32, torch.bfloat16, torch.float16)
    if y.dim() != 3:
        raise ValueError(f"y must be (batch, L, K); got {tuple(y.shape)}")
    if norm_w.dim() != 1:
        raise ValueError(f"norm_w must be (D,); got {tuple(norm_w.shape)}")
    dim = norm_w.shape[0]
    if out_w is None:
        if y.shape[2] != dim:
            raise ValueError(f"without out_w, y is the block input (batch, L, D = {dim}); got {tuple(y.shape)}")
    elif out_w.dim() != 2 or tuple(out_w.shape) != (dim, y.shape[2]):
        raise ValueError(f"out_w must be (D, K) = ({dim}, {y.shape[2]}); got {tuple(out_w.shape)}")
    elif out_w.dtype != y.dtype or in_w.dtype != y.dtype:
        raise ValueError(f"y, out_w and in_w must share one dtype (the GEMMs'); got {y.dtype}, {out_w.dtype} and "
                         f"{in_w.dtype}")
    if residual is not None and (tuple(residual.shape) != (*y.shape[:2], dim) or residual.dtype != torch.float32):
        raise ValueError(f"residual must be fp32 (batch, L, D) = ({y.shape[0]}, {y.shape[1]}, {dim}); got "
                         f"{residual.dtype} {tuple(residual.shape)}")
    if in_w.dim() != 2 or in_w.shape[1] != dim:
        raise ValueError(f"in_w must be (N, D = {dim}); got {tuple(in_w.shape)}")
    if y.dtype not in floats or in_w.dtype not in floats:
        raise ValueError(f"y and in_w must be fp32, bf16 or fp16; got {y.dtype} and {in_w.dtype}")


def norm_in_proj(y: torch.Tensor, out_w: torch.Tensor | None, residual: torch.Tensor | None, norm_w: torch.Tensor,
                 eps: float, in_w: torch.Tensor, out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(xz, r): the previous out_proj (when out_w is given), the residual add, RMSNorm and in_proj for every token
    of y. out: (xz, r) buffers to write instead of new ones, laid out as `outputs_like` makes them and apart from
    the inputs (`check_out`). Contract: `norm_in_proj_ref`."""
    check_norm_in_proj(y, out_w, residual, norm_w, in_w)
    if out is None:
        xz, r = outputs_like(y, norm_w, in_w)
    else:
        check_out(out, outputs_like(y, norm_w, in_w, "meta"), y.device, (y, out_w, residual, norm_w, in_w),
                  ("xz", "r"))
        xz, r = out
    tensors = (y, out_w, residual, norm_w, in_w, xz, r)
    sig = _MEMO.signature(tensors, eps)
    if _MEMO.replay(sig, tensors):
        return xz, r
    with _MEMO.record(sig, tensors):
        _launch(y, out_w, residual, norm_w, eps, in_w, xz, r)
    return xz, r


def _launch(y, out_w, residual, norm_w, eps, in_w, xz, r) -> None:
    batch, length, k_in = y.shape
    rows, dim, n_out = batch * length, norm_w.shape[0], in_w.shape[0]
    if rows == 0:
        return
    if dim == 0:  # no features: r is empty; xz = h @ in_w^T sums over none
        xz.zero_()
        return
    interpreted = check_device(y, _norm_in_proj_kernel)
    cfg = norm_in_proj_launch_config(rows, dim, n_out, in_w.dtype, interpreted, sm_count(y.device))
    ow = out_w if out_w is not None else in_w  # never read without HAS_OUT
    ow_strides = out_w.stride() if out_w is not None else (0, 0)
    res = residual if residual is not None else r  # never read without HAS_RES
    launch(_norm_in_proj_kernel, cfg.grid,
        y, ow, res, norm_w, in_w, xz, r, rows, length, k_in, dim, n_out, eps,
        *y.stride(), *ow_strides, *res.stride(), *in_w.stride(), xz.stride(0), xz.stride(1), r.stride(0), r.stride(1),
        HAS_OUT=out_w is not None, HAS_RES=residual is not None, IEEE=in_w.dtype == torch.float32,
        UPCAST=interpreted and in_w.dtype != torch.float32,
        **cfg.constexprs, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
