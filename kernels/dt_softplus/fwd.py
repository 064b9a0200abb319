"""dt_proj fused with the dt bias and the softplus, in Triton: both directions' delta for the inference scan.

    delta = dt_softplus(dt, weight, bias, out_dtype)    (2, M, E) = softplus(dt @ weight + bias)
                                                                          contract: `dt_softplus_ref`

Why: the mixer's delta GEMM writes (2, B * L, E) pre-activations, and every scan step then adds the bias and runs
the softplus (one MUFU ex2 and a degree-7 polynomial per token and channel, on the recurrence's critical path).
The GEMM's output is written either way; computing the bias and softplus in its epilogue lets the scan take delta
as it is (`bimamba_scan(..., delta_bias=None, delta_softplus=False)`). Measured first with torch (session al,
H100, `results/history/softplusoff-h100-2026-12-07al/`): the scan at Vim-Ti 1248 px batch 64 2.317 -> 2.172 ms
with a softplus'd fp16 delta, Vim-B 8.63 -> 8.16 ms. fp16 output for 16-bit models: delta >= 0 and below ~30
in practice, where fp16 keeps 3 more mantissa bits than bf16 (tiny deltas flush towards 0, the identity step).

One program: BLOCK_M token rows x BLOCK_N channels of one direction (grid axis 0 the channel tiles, so that the
programs sharing a row tile run together and read its dt rows from L2). acc = dt[rows] @ weight[:, channels] with
the rank padded to BLOCK_R >= 16 (masked rows and columns are zeros), tl.dot in fp32 accumulation: 16-bit weights
take dt cast to their dtype (as the model's GEMM), fp32 ones multiply as fp32 ("ieee", never TF32). Then bias and
softplus in fp32, one rounding to the output dtype: for 16-bit outputs one MUFU ex2 and a degree-4 log1p polynomial
(`_softplus_short`, SHORT_LOG1P; measured in session am: Vim-Ti 0.402 -> 0.321 ms), for fp32 the scan's own
(`selective_scan.fwd._softplus`: Triton's exp and log). Under TRITON_INTERPRET=1 the 16-bit tiles
are multiplied in fp32 (`kernels.tiledot`). Inference only: the op refuses autograd (training keeps the GEMM; the
scan backward takes the pre-activation for its softplus slope).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import fastmath
from kernels.launch import launch
from kernels.runtime import LaunchConfig, cdiv, check_device, next_power_of_2
from kernels.selective_scan.fwd import _softplus, asm_level
from kernels.tiledot import dot_acc

OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# 16-bit outputs: softplus(x) = max(x, 0) + y s(y), y = e^-|x|, with s of degree 4 fitted (Lawson's iteration,
# relative error of y s(y) against log1p(y) on [0, 1], coefficients rounded to fp32) to 5.7e-5: about a tenth of
# an fp16 ulp (2^-11 to 2^-10 relative), where the scan's degree-7 fit (3.7e-7) is tuned for fp32. Three FMAs per
# output element fewer (~17.5 SASS instructions per element with the degree-7 fit, kernels/NOTES.md "Session al").
# False restores the scan's softplus for every output dtype (read at each launch and passed as a constexpr, so each
# value has its own binary; launches already recorded for replay keep the value they were recorded with).
SHORT_LOG1P = True
LOG1P_S = (0.9999432563781738, -0.4969778060913086, 0.30630093812942505, -0.15742720663547516, 0.04134730249643326)
LOG1P_ERROR_16BIT = 5.7e-5  # the fit's largest relative error (tests add it to the rounding's half ulp)
_S0, _S1, _S2, _S3, _S4 = (tl.constexpr(c) for c in LOG1P_S)


@triton.jit
def _softplus_short(x, USE_ASM: tl.constexpr):
    """softplus(x) for a 16-bit output: one ex2 (e^-|x|, 0 far out) and the degree-4 polynomial."""
    y = fastmath.exp(-tl.abs(x), USE_ASM)
    s = y * _S4 + _S3
    s = s * y + _S2
    s = s * y + _S1
    s = s * y + _S0
    return tl.maximum(x, 0.0) + y * s


@triton.jit(do_not_specialize=["M"])
def _dt_softplus_kernel(
    dt_ptr, w_ptr, bias_ptr, out_ptr,
    M, E, R,
    stride_dt_dir, stride_dt_m, stride_dt_r,
    stride_w_dir, stride_w_r, stride_w_e,
    stride_b_dir, stride_b_e,
    stride_o_dir, stride_o_m, stride_o_e,
    IEEE: tl.constexpr, UPCAST: tl.constexpr, USE_ASM: tl.constexpr, APPROX: tl.constexpr, SHORT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, ROW_TILES: tl.constexpr = 1,
):
    # axis 0 = channel tiles: the programs of one row tile run next to each other, so its dt rows come from L2
    offs_n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    direction = tl.program_id(2).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    mask_n = offs_n < E
    mask_r = offs_r < R
    w = tl.load(w_ptr + direction * stride_w_dir + offs_r[:, None] * stride_w_r + offs_n[None, :] * stride_w_e,
                mask=mask_r[:, None] & mask_n[None, :], other=0.0)
    bias = tl.load(bias_ptr + direction * stride_b_dir + offs_n * stride_b_e, mask=mask_n, other=0.0)
    # ROW_TILES consecutive row tiles per program: the weight tile and bias load once, and a tile's stores drain
    # while the next one is computed
    for i in range(ROW_TILES):
        offs_m = (tl.program_id(1).to(tl.int64) * ROW_TILES + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask_m = offs_m < M
        a = tl.load(dt_ptr + direction * stride_dt_dir + offs_m[:, None] * stride_dt_m
                    + offs_r[None, :] * stride_dt_r, mask=mask_m[:, None] & mask_r[None, :], other=0.0)
        acc = dot_acc(a.to(w.dtype), w, tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), IEEE, UPCAST)
        if SHORT:
            delta = _softplus_short(acc + bias.to(tl.float32)[None, :], USE_ASM)
        else:
            delta = _softplus(acc + bias.to(tl.float32)[None, :], USE_ASM, APPROX)
        o_off = direction * stride_o_dir + offs_m[:, None] * stride_o_m + offs_n[None, :] * stride_o_e
        tl.store(out_ptr + o_off, delta.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# Token rows x channels x warps per program on the GPU. 16-bit weights: 64 x 128 x 4, the fastest of nine tilings at
# Vim-Ti and Vim-B 1248/64 (session am, H100, results/history/dtsptiles-h100-2026-12-07am/). fp32 weights (the ieee
# tile on the FMA pipe): 64 x 64 x 4, chosen statically (92 registers under triton 3.6, no spill; 64 x 128 takes 168
# there and 254 under triton 3.8), then timed the fastest of seven (session ao, H100, one row tile, Vim-Ti 1248/64:
# 0.565 ms against the cast + fp32 delta GEMM's 0.689; results/history/dtsp32-h100-2026-12-07ao/). The fp32 model
# still keeps the GEMM where it does not fuse dt_proj (vim.DT_SOFTPLUS_FP32 off: its whole forward measured 1.4%
# slower with the op), and fuses it at 1248/64 anyway (vim.FUSE_DT_FP32).
TILE = (64, 128, 4)
FP32_TILE = (64, 64, 4)
# Row tiles per program on the GPU (the kernel's ROW_TILES): the most, up to MAX_ROW_TILES, that leave at least
# MIN_PROGRAMS programs, so that the weight tile and the bias load once per program and one tile's stores drain
# while the next is computed, where the grid stays large. Measured (session ao, H100, the kernel alone, 64 x 128 x 4,
# results/history/dtsprows-h100-2026-12-07ao/): Vim-B 1248/64 1.515 ms at 1 tile, 1.151 at 4, 1.056 at 16 (the
# cast + delta GEMM: 1.057); Vim-Ti 0.339 / 0.301 / 0.295 (GEMM 0.295); outputs bitwise equal. Vim-Ti's 16 tiles
# there leave 2,286 programs.
MAX_ROW_TILES = 16
MIN_PROGRAMS = 2048


def row_tiles_per_program(row_blocks: int, other_programs: int) -> int:
    """ROW_TILES for a grid of `row_blocks` row tiles times `other_programs` (channel blocks x directions): a power
    of two, at most MAX_ROW_TILES, halved until the grid keeps MIN_PROGRAMS programs (1 where even one tile per
    program leaves fewer)."""
    tiles = MAX_ROW_TILES
    while tiles > 1 and cdiv(row_blocks, tiles) * other_programs < MIN_PROGRAMS:
        tiles //= 2
    return tiles


def dt_softplus_launch_config(rows: int, channels: int, rank: int, interpreted: bool,
                              fp32: bool = False) -> LaunchConfig:
    """`_dt_softplus_kernel`'s grid, tiles and warps: the one place that chooses them (the launcher and `vimbench
    kernels static` both call it). TILE, or FP32_TILE for fp32 weights (the output tile is what moves: the kernel
    writes 2 x M x E values and reads M x R), row_tiles_per_program tiles per program; under the interpreter 16 x 32
    on one warp, two row tiles per program, so that tests cover several programs, partial tiles and an empty last
    one. The rank tile is a power of two of at least 16 (tl.dot's smallest K)."""
    block_m, block_n, warps = (16, 32, 1) if interpreted else (FP32_TILE if fp32 else TILE)
    block_r = max(16, next_power_of_2(rank))
    col_blocks, row_blocks, directions = cdiv(channels, block_n), cdiv(rows, block_m), 2
    row_tiles = 2 if interpreted else row_tiles_per_program(row_blocks, directions * col_blocks)
    return LaunchConfig(kernel="_dt_softplus_kernel",
                        grid=(col_blocks, cdiv(row_blocks, row_tiles), directions),
                        constexprs=dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_R=block_r, ROW_TILES=row_tiles),
                        num_warps=warps)


def delta_dtype(activation: torch.dtype) -> torch.dtype:
    """The dtype of the op's output for a model running in `activation`: fp16 for 16-bit activations (delta >= 0
    and far below fp16's range, where fp16 keeps 3 more mantissa bits than bf16), fp32 otherwise."""
    return torch.float16 if activation in (torch.bfloat16, torch.float16) else torch.float32


def short_log1p(out_dtype: torch.dtype) -> bool:
    """Whether the kernel takes the degree-4 log1p (`SHORT_LOG1P`): 16-bit outputs only."""
    return SHORT_LOG1P and out_dtype != torch.float32


def dt_softplus_out_like(dt: torch.Tensor, weight: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """What `dt_softplus` allocates: (2, M, E) in out_dtype, contiguous (the fake's answer too)."""
    return dt.new_empty((2, dt.shape[1], weight.shape[2]), dtype=out_dtype)


def check(dt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_dtype: torch.dtype) -> None:
    """ValueError naming what is wrong with `dt_softplus`'s arguments."""
    if dt.dim() != 3 or dt.shape[0] != 2:
        raise ValueError(f"dt must be the low-rank rows of both directions (2, M, R); got {tuple(dt.shape)}")
    rank = dt.shape[2]
    if rank < 1:
        raise ValueError("dt must have at least one rank column (R >= 1)")
    if weight.dim() != 3 or weight.shape[:2] != (2, rank):
        raise ValueError(f"weight must be (2, R, E) with R = {rank}; got {tuple(weight.shape)}")
    if tuple(bias.shape) != (2, weight.shape[2]):
        raise ValueError(f"bias must be (2, E) = (2, {weight.shape[2]}); got {tuple(bias.shape)}")
    if weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"weight must be fp32, bf16 or fp16; got {weight.dtype}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {', '.join(str(d) for d in OUT_DTYPES)}; got {out_dtype}")
    if not (dt.device == weight.device == bias.device):
        raise ValueError(f"dt, weight and bias must share one device; got {dt.device}, {weight.device}, {bias.device}")


def dt_softplus(dt: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """softplus(dt @ weight + bias) for both directions as (2, M, E) in out_dtype; contract: `dt_softplus_ref`."""
    check(dt, weight, bias, out_dtype)
    out = dt_softplus_out_like(dt, weight, out_dtype)
    rows, channels, rank = dt.shape[1], weight.shape[2], dt.shape[2]
    if rows == 0 or channels == 0:
        return out
    interpreted = check_device(dt, _dt_softplus_kernel)
    cfg = dt_softplus_launch_config(rows, channels, rank, interpreted, fp32=weight.dtype == torch.float32)
    use_asm = asm_level(interpreted)
    launch(_dt_softplus_kernel, cfg.grid,
        dt, weight, bias, out, rows, channels, rank,
        *dt.stride(), *weight.stride(), *bias.stride(), *out.stride(),
        IEEE=weight.dtype == torch.float32, UPCAST=interpreted and weight.dtype != torch.float32,
        USE_ASM=bool(use_asm), APPROX=bool(use_asm) and out_dtype != torch.float32,
        SHORT=short_log1p(out_dtype),
        **cfg.constexprs, num_warps=cfg.num_warps,
    )
    return out
