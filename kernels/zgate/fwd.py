"""The Vim mixer's z gate fused with the sum of the scan's halves, in Triton: one GEMM tile with its epilogue.

    out = zgate(y, h, z_weight)    (batch, L, E) = (y_f + y_b) * SiLU(h @ z_weight^T)    contract: `zgate_ref`

Why: at inference the mixer's z = in_proj_z(h) (batch, L, E) exists only to gate the scan's output. With the
scan run ungated (z=None) and this op after it, z lives in registers: the (batch, L, E) z tensor is never
stored (Vim-Ti, 1248 px, batch 64, bf16: 0.3 GB less at the mixer's peak, where z, u and x_dbl were alive
together), and the output is the halves' sum, so out_proj runs as a K = E GEMM instead of K = 2E. Bytes per
token and channel: reads h once per channel tile, both halves; writes one value (the z GEMM wrote z and the scan
read it before; out_proj read both halves).

One program: BLOCK_M token rows x BLOCK_N channels (grid axis 0 the channel tiles, so that the programs sharing an
h tile run together and read it from L2; the first version, row tiles on axis 0 and the halves loaded after the
GEMM, ran at 46% of the HBM floor: 0.535 ms at Vim-Ti 1248 px b64 bf16, the second 0.426 ms (58%),
results/history/kernels-zgate*-h200-2026-12-03.jsonl). In 16-bit the halves' tiles are loaded first, in flight
during the GEMM (fp32 loads them after it: `zgate_launch_config`). acc = h[rows] @ z_weight[channels]^T over D in
BLOCK_K steps (tl.dot, fp32 accumulation; fp32 inputs with input_precision="ieee", so fp32 stays fp32 and TF32 is
never used), then out = (y_f + y_b) * acc * sigmoid(acc), stored in y's dtype. Token row m = b * L + l: y, h and
out are read through their (b, l) strides, so any layout works (the model's are channel-last). Inference only (no
backward: the op refuses autograd). Under TRITON_INTERPRET=1 the 16-bit tiles are multiplied in fp32 (the
interpreter's tl.dot treats bf16 as raw bits, triton 3.6-3.8): the CPU tests check the tiling and the epilogue, the
GPU tests the bf16 tl.dot.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import launch
from kernels.runtime import LaunchConfig, cdiv, check_device
from kernels.tiledot import dot_acc


@triton.jit(do_not_specialize=["M", "L"])
def _zgate_kernel(
    y_ptr, h_ptr, w_ptr, out_ptr,
    M, L, E, D,
    stride_y_dir, stride_y_b, stride_y_e, stride_y_l,
    stride_h_b, stride_h_l, stride_h_d,
    stride_w_e, stride_w_d,
    stride_o_b, stride_o_l, stride_o_e,
    TWO: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr, EARLY_Y: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # axis 0 = channel tiles: the programs of one row tile run next to each other, so its h tile comes from L2
    offs_n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    mask_n = offs_n < E
    b = offs_m // L
    l = offs_m - b * L
    tile = mask_m[:, None] & mask_n[None, :]
    y_off = b[:, None] * stride_y_b + l[:, None] * stride_y_l + offs_n[None, :] * stride_y_e
    if EARLY_Y:  # the halves' loads first: in flight while the GEMM runs
        y0 = tl.load(y_ptr + y_off, mask=tile, other=0.0)
        if TWO:
            y1 = tl.load(y_ptr + stride_y_dir + y_off, mask=tile, other=0.0)
    h_rows = h_ptr + b * stride_h_b + l * stride_h_l  # (M,)
    w_cols = w_ptr + offs_n * stride_w_e  # (N,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, D, BLOCK_K):
        offs_k = k + tl.arange(0, BLOCK_K)
        mask_k = offs_k < D
        a = tl.load(h_rows[:, None] + offs_k[None, :] * stride_h_d, mask=mask_m[:, None] & mask_k[None, :],
                    other=0.0)
        w = tl.load(w_cols[None, :] + offs_k[:, None] * stride_w_d, mask=mask_k[:, None] & mask_n[None, :],
                    other=0.0)
        acc = dot_acc(a, w, acc, IEEE, UPCAST)
    if not EARLY_Y:
        y0 = tl.load(y_ptr + y_off, mask=tile, other=0.0)
        if TWO:
            y1 = tl.load(y_ptr + stride_y_dir + y_off, mask=tile, other=0.0)
    total = y0.to(tl.float32)
    if TWO:
        total += y1.to(tl.float32)
    gated = total * acc * tl.sigmoid(acc)
    o_off = b[:, None] * stride_o_b + l[:, None] * stride_o_l + offs_n[None, :] * stride_o_e
    tl.store(out_ptr + o_off, gated.to(out_ptr.dtype.element_ty), mask=tile)


def zgate_launch_config(rows: int, channels: int, dim: int, dtype: torch.dtype, interpreted: bool) -> LaunchConfig:
    """`_zgate_kernel`'s grid, tiles and warps: the one place that chooses them (the launcher and `vimbench
    kernels static` both call it). 64 token rows x 128 channels x 64 of D per step for 16-bit inputs (Vim-Ti's
    D = 192: three tl.dot steps) on 8 warps: with 4 the two half tiles beside the accumulator spilled (255
    registers, 48 B of stack; 8 warps: 128 registers, no spill; static check, sm_90, triton 3.8); fp32 32 rows on
    4 warps with the halves loaded after the GEMM (EARLY_Y off: 4.79 ms at Vim-Ti 1248 px b64, where the early
    loads on 8 warps took 8.29 ms; results/history/kernels-zgate*-h200-2026-12-03.jsonl). Under the interpreter
    16 x 32 x 16, so that tests cover several programs, partial tiles and the K loop's mask."""
    if interpreted:
        block_m, block_n, block_k, warps = 16, 32, 16, 1
    elif dtype == torch.float32:
        block_m, block_n, block_k, warps = 32, 128, 64, 4
    else:
        block_m, block_n, block_k, warps = 64, 128, 64, 8
    return LaunchConfig(kernel="_zgate_kernel", grid=(cdiv(channels, block_n), cdiv(rows, block_m)),
                        constexprs=dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k), num_warps=warps)


def zgate_out_like(y: torch.Tensor) -> torch.Tensor:
    """What `zgate` allocates: (batch, L, E) in y's dtype, contiguous (the fakes' answer too)."""
    batch, channels, length = y.shape[-3:]
    return y.new_empty((batch, length, channels))


def _check(y: torch.Tensor, h: torch.Tensor, z_weight: torch.Tensor) -> None:
    if y.dim() not in (3, 4) or (y.dim() == 4 and y.shape[0] != 2):
        raise ValueError(f"y must be the halves (2, batch, E, L) or their sum (batch, E, L); got {tuple(y.shape)}")
    batch, channels, length = y.shape[-3:]
    if h.dim() != 3 or h.shape[:2] != (batch, length):
        raise ValueError(f"h must be (batch, L, D) = ({batch}, {length}, D); got {tuple(h.shape)}")
    if z_weight.shape != (channels, h.shape[2]):
        raise ValueError(f"z_weight must be (E, D) = ({channels}, {h.shape[2]}); got {tuple(z_weight.shape)}")
    if h.dtype != z_weight.dtype:
        raise ValueError(f"h and z_weight must share one dtype (the GEMM's); got {h.dtype} and {z_weight.dtype}")
    if h.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"h must be fp32, bf16 or fp16; got {h.dtype}")


def check_out(y: torch.Tensor, h: torch.Tensor, z_weight: torch.Tensor, out: torch.Tensor) -> None:
    """`zgate`'s out buffer: (batch, L, E) in y's dtype on y's device, apart from h and z_weight; it may lie over y
    only element for element, as y's first direction (halves) or y itself (the sum) seen as (batch, L, E): each
    program then reads its tile of y before it writes the same tile of out, and no program reads what another
    writes. ValueError naming what is wrong."""
    batch, channels, length = y.shape[-3:]
    if out.shape != (batch, length, channels) or out.dtype != y.dtype or out.device != y.device:
        raise ValueError(f"out must be {y.dtype} ({batch}, {length}, {channels}) on {y.device}; got {out.dtype} "
                         f"{tuple(out.shape)} on {out.device}")
    storage = out.untyped_storage().data_ptr()
    if any(t.untyped_storage().data_ptr() == storage for t in (h, z_weight)):
        raise ValueError("out shares memory with h or z_weight")
    over_y = (out.data_ptr() == y.data_ptr() and out.stride() == (y.stride(-3), y.stride(-1), y.stride(-2)))
    if y.untyped_storage().data_ptr() == storage and not over_y:
        raise ValueError("out shares memory with y other than element for element over its first direction (or "
                         "the sum): pass y[0].transpose(1, 2) (halves) or y.transpose(1, 2) (sum), or a buffer apart")


def zgate(y: torch.Tensor, h: torch.Tensor, z_weight: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(y_f + y_b) * SiLU(h @ z_weight^T) as (batch, L, E); contract: `zgate_ref`. out: the buffer to write
    (`check_out`: it may lie over y's first direction, so that the gated sum takes no memory of its own); None: a
    new contiguous tensor."""
    _check(y, h, z_weight)
    if out is None:
        out = zgate_out_like(y)
    else:
        check_out(y, h, z_weight, out)
    batch, channels, length = y.shape[-3:]
    rows, dim = batch * length, h.shape[2]
    if rows == 0 or channels == 0:
        return out
    if dim == 0:
        return out.zero_()
    interpreted = check_device(y, _zgate_kernel)
    cfg = zgate_launch_config(rows, channels, dim, h.dtype, interpreted)
    two = y.dim() == 4
    y_strides = y.stride() if two else (0, *y.stride())
    launch(_zgate_kernel, cfg.grid,
        y, h, z_weight, out, rows, length, channels, dim,
        *y_strides, *h.stride(), *z_weight.stride(), out.stride(0), out.stride(1), out.stride(2),
        TWO=two, IEEE=h.dtype == torch.float32, UPCAST=interpreted and h.dtype != torch.float32,
        EARLY_Y=h.dtype != torch.float32,
        **cfg.constexprs, num_warps=cfg.num_warps,
    )
    return out
