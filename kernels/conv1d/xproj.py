"""Both directions' conv1d + SiLU fused with x_proj, for inference: one launch writes u and x_dbl.

    u, x_dbl = conv_xproj(x, weight, bias, x_proj_t, out_dtype)        contract: `conv_xproj_ref`
    x_dbl = x_proj_rows(u, x_proj_t, out_dtype)   x_proj alone on the conv op's output (the front path's; at the end)

Measured 3.7-7x SLOWER in GPU time than the two kernels it replaces (session x, H100; kernels/NOTES.md, "Session x"),
so the per-op mixer does not use it (`vimbench.models.vim.FUSE_CONV_XPROJ` off). The model's front path for small
eager inference used it in session z (`FRONT_CONV_XPROJ`), where one launch fewer per layer beat the kernel time it
adds; once session aa replayed the front path's launches, the conv op and `x_proj_rows` (below) won (37 us per layer
against 2.7 + ~3 at batch 1), and FRONT_CONV_XPROJ is off.

Why it was tried (issues 11 and 12, session x): the mixer ran the conv (writes u, (2, B, E, L) laid out
(B, L, 2, E)) and then x_proj as a batched GEMM that reads all of u again to make x_dbl (2, B * L, W) =
[B | C | dt | pad] per token.
Here the program that makes a block of u also multiplies it by x_proj_t while it is in registers: u is written
once and never read back for x_proj (Vim-Ti 1248 px, batch 64, bf16: 0.6 GB less traffic per layer), and one
launch per layer fewer (at batch 1 the layer is ~6 launches of 2-12 us each).

One program: BLOCK_M token rows (m = b * L + l, rows of several images allowed) x all E channels, in BLOCK_K
channel steps. Per step: the x tile at the 2K - 1 token shifts both directions' taps need (the shifted tiles
overlap: all but the first come from L1/L2), both directions' pre-activations in fp32, SiLU, u stored in x's dtype,
then acc_dir += u_dir (rounded to x's dtype, as the unfused GEMM reads it) @ x_proj_t[dir][step rows] (tl.dot,
fp32 accumulation; fp32 operands with input_precision="ieee": no TF32). x_dbl is stored after the last step in
out_dtype (fp32 for 16-bit activations at inference, as the mixer's bmm(out_dtype=fp32) wrote it). Taps and pads
as `conv1d_silu_bidir_ref`: causal for the forward direction, anti-causal for the backward one, zeros outside
[0, L) of each image. x and u must be channel-last (channel stride 1), as the mixer lays them out.

Inference only: no backward (the op refuses autograd; training keeps the conv op and the GEMM). Under
TRITON_INTERPRET=1 16-bit tiles are multiplied in fp32 (the interpreter's tl.dot treats bf16 as raw bits, triton
3.6-3.8; see kernels/zgate/fwd.py): the CPU tests check the conv, the tiling and the masks, the GPU tests the
16-bit tl.dot.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.conv1d.fwd import conv_out_like
from kernels.launch import CallMemo, launch
from kernels.runtime import LaunchConfig, cdiv, check_device, check_out, next_power_of_2
from kernels.tiledot import dot_acc

_MEMO = CallMemo("conv_xproj")  # eager calls replayed by signature (kernels/launch.py)


@triton.jit(do_not_specialize=["M", "L"])
def _conv_xproj_kernel(
    x_ptr, w_ptr, bias_ptr, p_ptr, u_ptr, xdbl_ptr,
    M, L, E, W,
    stride_x_b, stride_x_l,
    stride_w_dir, stride_w_e, stride_w_k,
    stride_bias_dir, stride_bias_e,
    stride_p_dir, stride_p_e, stride_p_w,
    stride_u_dir, stride_u_b, stride_u_l,
    stride_o_dir, stride_o_m,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr,
):
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    b = offs_m // L
    l = offs_m - b * L
    x_rows = x_ptr + b * stride_x_b + l * stride_x_l  # (M,): channel stride 1
    u_rows = u_ptr + b * stride_u_b + l * stride_u_l
    offs_w = tl.arange(0, BLOCK_W)
    mask_w = offs_w < W
    acc_f = tl.zeros((BLOCK_M, BLOCK_W), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_M, BLOCK_W), dtype=tl.float32)
    for k0 in range(0, E, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < E
        pre_f = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        pre_b = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        if HAS_BIAS:
            pre_f += tl.load(bias_ptr + offs_k * stride_bias_e, mask=mask_k, other=0.0).to(tl.float32)[None, :]
            pre_b += tl.load(bias_ptr + stride_bias_dir + offs_k * stride_bias_e, mask=mask_k,
                             other=0.0).to(tl.float32)[None, :]
        for s in tl.static_range(2 * K - 1):
            # token shift d = s - (K - 1): forward tap K - 1 + d for d <= 0 (out[t] += w_f[k] x[t - K + 1 + k]),
            # backward tap K - 1 - d for d >= 0 (out[t] += w_b[k] x[t + K - 1 - k])
            d = s - (K - 1)
            ld = l + d
            inside = mask_m & (ld >= 0) & (ld < L)
            xs = tl.load(x_rows[:, None] + d * stride_x_l + offs_k[None, :], mask=inside[:, None] & mask_k[None, :],
                         other=0.0).to(tl.float32)
            if d <= 0:
                w_f = tl.load(w_ptr + offs_k * stride_w_e + (K - 1 + d) * stride_w_k, mask=mask_k, other=0.0)
                pre_f += w_f.to(tl.float32)[None, :] * xs
            if d >= 0:
                w_b = tl.load(w_ptr + stride_w_dir + offs_k * stride_w_e + (K - 1 - d) * stride_w_k, mask=mask_k,
                              other=0.0)
                pre_b += w_b.to(tl.float32)[None, :] * xs
        tile = mask_m[:, None] & mask_k[None, :]
        u_f = (pre_f * tl.sigmoid(pre_f)).to(u_ptr.dtype.element_ty)
        u_b = (pre_b * tl.sigmoid(pre_b)).to(u_ptr.dtype.element_ty)
        u_at = u_rows[:, None] + offs_k[None, :]
        tl.store(u_at, u_f, mask=tile)
        tl.store(u_at + stride_u_dir, u_b, mask=tile)
        p_at = p_ptr + offs_k[:, None] * stride_p_e + offs_w[None, :] * stride_p_w
        p_mask = mask_k[:, None] & mask_w[None, :]
        p_f = tl.load(p_at, mask=p_mask, other=0.0)
        p_b = tl.load(p_at + stride_p_dir, mask=p_mask, other=0.0)
        # (channels past E: u = SiLU(0) = 0 and x_proj_t's rows load as 0; rows past M: never stored)
        acc_f = dot_acc(u_f, p_f, acc_f, IEEE, UPCAST)
        acc_b = dot_acc(u_b, p_b, acc_b, IEEE, UPCAST)
    o_at = xdbl_ptr + offs_m[:, None] * stride_o_m + offs_w[None, :]
    o_mask = mask_m[:, None] & mask_w[None, :]
    tl.store(o_at, acc_f.to(xdbl_ptr.dtype.element_ty), mask=o_mask)
    tl.store(o_at + stride_o_dir, acc_b.to(xdbl_ptr.dtype.element_ty), mask=o_mask)


# Tiles (token rows, channels per step, warps, pipelining stages). Large grids: 64 x 32 on 8 warps with Triton's
# 3 stages (static, sm_90: 185 registers under triton 3.8, 184 under 3.6, no spill; the x tiles arrive by cp.async;
# 4 warps: 255 and a spill; 64 x 16 on 4: 180). Below SMALL_GRID_BLOCKS blocks of 64 rows (about two per SM of an
# H100/H200) 16 x 64 on 4 warps: at batch 1 and 224 px (197 tokens) 13 programs instead of 4. On an H100 (session x,
# results/history/convxproj-h100-2026-12-06x.json) these were the faster of each pair timed (stages 1: 1.2-1.7x
# slower still), and all 3.7-7x slower than the conv op + the bmm.
LARGE_TILE = (64, 32, 8, 3)
SMALL_TILE = (16, 64, 4, 3)
SMALL_GRID_BLOCKS = 264


def conv_xproj_launch_config(rows: int, channels: int, width: int, dtype: torch.dtype, interpreted: bool
                             ) -> LaunchConfig:
    """`_conv_xproj_kernel`'s grid, tiles, warps and stages: the one place that chooses them (the launcher and
    `vimbench kernels static` both call it). The whole x_dbl row (W padded to a power of two, >= 16 for tl.dot)
    stays in the accumulators; LARGE_TILE or SMALL_TILE on a GPU. Interpreter: 16 rows x 16 channels, so that tests
    cross row blocks, images and channel steps."""
    block_w = max(16, next_power_of_2(width))
    if interpreted:
        block_m, block_k, warps, stages = 16, 16, 1, 3
    elif cdiv(rows, 64) < SMALL_GRID_BLOCKS:
        block_m, block_k, warps, stages = SMALL_TILE
    else:
        block_m, block_k, warps, stages = LARGE_TILE
    return LaunchConfig(kernel="_conv_xproj_kernel", grid=(cdiv(rows, block_m),),
                        constexprs=dict(BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_W=block_w), num_warps=warps,
                        num_stages=stages)


def x_dbl_like(x: torch.Tensor, width: int, out_dtype: torch.dtype, device: torch.device | str | None = None
               ) -> torch.Tensor:
    """The uninitialized x_dbl (2, batch * L, width) in out_dtype for x (batch, E, L), on x's device or `device`:
    one definition for the launcher and the custom op's fake."""
    batch, _, length = x.shape
    return torch.empty((2, batch * length, width), dtype=out_dtype, device=x.device if device is None else device)


def check_conv_xproj(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, x_proj_t: torch.Tensor,
                     out_dtype: torch.dtype) -> None:
    """Shapes, dtypes and the channel-last layout the kernel needs; ValueError naming what is wrong."""
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, E, L); got {tuple(x.shape)}")
    batch, channels, length = x.shape
    if x.stride(1) != 1 and channels > 1:
        raise ValueError(f"x must be channel-last (channel stride 1, as the mixer's in_proj output is); got strides "
                         f"{tuple(x.stride())}")
    if weight.dim() != 3 or tuple(weight.shape[:2]) != (2, channels):
        raise ValueError(f"weight must be (2, {channels}, K); got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (2, channels):
        raise ValueError(f"bias must be (2, {channels}); got {tuple(bias.shape)}")
    if x_proj_t.dim() != 3 or tuple(x_proj_t.shape[:2]) != (2, channels):
        raise ValueError(f"x_proj_t must be (2, {channels}, W); got {tuple(x_proj_t.shape)}")
    if x_proj_t.dtype != x.dtype:
        raise ValueError(f"x and x_proj_t must share one dtype (the GEMM's); got {x.dtype} and {x_proj_t.dtype}")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"x must be fp32, bf16 or fp16; got {x.dtype}")
    if out_dtype not in (torch.float32, x.dtype):
        raise ValueError(f"out_dtype must be fp32 or x's dtype ({x.dtype}); got {out_dtype}")


def conv_xproj(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, x_proj_t: torch.Tensor,
               out_dtype: torch.dtype, out: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, x_dbl): u = conv1d_silu_bidir(x, weight, bias) ((2, batch, E, L) in x's dtype, laid out (batch, L, 2, E))
    and x_dbl = u's token rows @ x_proj_t per direction ((2, batch * L, W) in out_dtype, fp32 accumulation).
    out: (u, x_dbl) buffers to write instead of new ones, laid out as `conv_out_like` and `x_dbl_like` make them
    and apart from the inputs (`check_out`). Contract: `conv_xproj_ref`."""
    check_conv_xproj(x, weight, bias, x_proj_t, out_dtype)
    width = x_proj_t.shape[-1]
    if out is None:
        u, x_dbl = conv_out_like(x), x_dbl_like(x, width, out_dtype)
    else:
        check_out(out, (conv_out_like(x, "meta"), x_dbl_like(x, width, out_dtype, "meta")), x.device,
                  (x, weight, bias, x_proj_t), ("u", "x_dbl"))
        u, x_dbl = out
    tensors = (x, weight, bias, x_proj_t, u, x_dbl)
    if u.numel() == 0:  # no tokens, or no channels (x_dbl: a sum over none)
        return u, x_dbl.zero_()
    sig = _MEMO.signature(tensors)
    if _MEMO.replay(sig, tensors):
        return u, x_dbl
    with _MEMO.record(sig, tensors):
        _launch(x, weight, bias, x_proj_t, u, x_dbl)
    return u, x_dbl


def _launch(x, weight, bias, x_proj_t, u, x_dbl) -> None:
    batch, channels, length = x.shape
    rows, width = batch * length, x_proj_t.shape[-1]
    interpreted = check_device(x, _conv_xproj_kernel)
    cfg = conv_xproj_launch_config(rows, channels, width, x.dtype, interpreted)
    b = bias if bias is not None else weight  # never read without HAS_BIAS
    launch(_conv_xproj_kernel, cfg.grid,
        x, weight, b, x_proj_t, u, x_dbl, rows, length, channels, width,
        x.stride(0), x.stride(2), *weight.stride(), b.stride(0), b.stride(1), *x_proj_t.stride(),
        u.stride(0), u.stride(1), u.stride(3), x_dbl.stride(0), x_dbl.stride(1),
        K=weight.shape[-1], HAS_BIAS=bias is not None, IEEE=x.dtype == torch.float32,
        UPCAST=interpreted and x.dtype != torch.float32, **cfg.constexprs, **cfg.launch_options(),
    )


# x_proj alone, after the conv op: the front path's form (`vimbench.models.vim.FRONT_CONV_XPROJ` off). The fused
# kernel above runs each row block's channel steps in one program, with a u tile made in registers feeding every
# tl.dot, and at batch 1 its 13 programs take 37 us (an H100, session aa: 24 of them the dots, 13 the token shifts;
# results/history/convparts-h100-2026-12-06aa.json); the conv op alone takes 2.7 us. Here a program owns a block of
# token rows of one direction and streams u and x_proj_t from memory into tl.dot, so the loads pipeline.
#   x_dbl = x_proj_rows(u, x_proj_t, out_dtype)                   contract: `x_proj_rows_ref`

_ROWS_MEMO = CallMemo("x_proj_rows")


@triton.jit(do_not_specialize=["M", "L"])
def _x_proj_rows_kernel(
    u_ptr, p_ptr, xdbl_ptr,
    M, L, E, W,
    stride_u_dir, stride_u_b, stride_u_l,
    stride_p_dir, stride_p_e, stride_p_w,
    stride_o_dir, stride_o_m,
    IEEE: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_W: tl.constexpr,
):
    direction = tl.program_id(1).to(tl.int64)
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    b = offs_m // L
    l = offs_m - b * L
    u_rows = u_ptr + direction * stride_u_dir + b * stride_u_b + l * stride_u_l  # (M,): channel stride 1
    p_dir = p_ptr + direction * stride_p_dir
    offs_w = tl.arange(0, BLOCK_W)
    mask_w = offs_w < W
    acc = tl.zeros((BLOCK_M, BLOCK_W), dtype=tl.float32)
    for k0 in range(0, E, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < E
        a = tl.load(u_rows[:, None] + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        p = tl.load(p_dir + offs_k[:, None] * stride_p_e + offs_w[None, :] * stride_p_w,
                    mask=mask_k[:, None] & mask_w[None, :], other=0.0)
        acc = dot_acc(a, p, acc, IEEE, UPCAST)
    o_at = xdbl_ptr + direction * stride_o_dir + offs_m[:, None] * stride_o_m + offs_w[None, :]
    tl.store(o_at, acc.to(xdbl_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_w[None, :])


# (token rows, channels per step, warps, stages) of `_x_proj_rows_kernel` on a GPU; the interpreter takes 16 x 16 on
# one warp, so that the CPU tests cross row blocks and channel steps.
X_PROJ_ROWS_TILE = (16, 64, 4, 3)


def x_proj_rows_launch_config(rows: int, channels: int, width: int, interpreted: bool) -> LaunchConfig:
    """`_x_proj_rows_kernel`'s grid (row blocks, the two directions), tiles, warps and stages (the launcher and
    `vimbench kernels static` both call it)."""
    block_m, block_k, warps, stages = (16, 16, 1, 1) if interpreted else X_PROJ_ROWS_TILE
    return LaunchConfig(kernel="_x_proj_rows_kernel", grid=(cdiv(rows, block_m), 2),
                        constexprs=dict(BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_W=max(16, next_power_of_2(width))),
                        num_warps=warps, num_stages=stages)


def check_x_proj_rows(u: torch.Tensor, x_proj_t: torch.Tensor, out_dtype: torch.dtype) -> None:
    """Shapes, dtypes and u's channel-last layout; ValueError naming what is wrong."""
    if u.dim() != 4 or u.shape[0] != 2:
        raise ValueError(f"u must be (2, batch, E, L); got {tuple(u.shape)}")
    channels = u.shape[2]
    if u.stride(2) != 1 and channels > 1:
        raise ValueError(f"u must be channel-last (channel stride 1, as the conv writes it from a channel-last x); got "
                         f"strides {tuple(u.stride())}")
    if x_proj_t.dim() != 3 or tuple(x_proj_t.shape[:2]) != (2, channels):
        raise ValueError(f"x_proj_t must be (2, {channels}, W); got {tuple(x_proj_t.shape)}")
    if x_proj_t.dtype != u.dtype or u.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"u and x_proj_t must share one dtype, fp32, bf16 or fp16; got {u.dtype} and "
                         f"{x_proj_t.dtype}")
    if out_dtype not in (torch.float32, u.dtype):
        raise ValueError(f"out_dtype must be fp32 or u's dtype ({u.dtype}); got {out_dtype}")


def x_proj_rows(u: torch.Tensor, x_proj_t: torch.Tensor, out_dtype: torch.dtype, out: torch.Tensor | None = None
                ) -> torch.Tensor:
    """x_dbl (2, batch * L, W) in out_dtype = u's token rows @ x_proj_t per direction (fp32 accumulation), for u
    (2, batch, E, L) channel-last (the conv op's output from the mixer's x). out: a buffer to write instead of a
    new one, laid out as `x_dbl_like` makes it and apart from the inputs. Contract: `x_proj_rows_ref`."""
    check_x_proj_rows(u, x_proj_t, out_dtype)
    width = x_proj_t.shape[-1]
    if out is None:
        x_dbl = x_dbl_like(u[0], width, out_dtype)
    else:
        check_out((out,), (x_dbl_like(u[0], width, out_dtype, "meta"),), u.device, (u, x_proj_t), ("x_dbl",))
        x_dbl = out
    if u.numel() == 0:
        return x_dbl.zero_()
    tensors = (u, x_proj_t, x_dbl)
    sig = _ROWS_MEMO.signature(tensors)
    if _ROWS_MEMO.replay(sig, tensors):
        return x_dbl
    with _ROWS_MEMO.record(sig, tensors):
        _, batch, channels, length = u.shape
        interpreted = check_device(u, _x_proj_rows_kernel)
        cfg = x_proj_rows_launch_config(batch * length, channels, width, interpreted)
        launch(_x_proj_rows_kernel, cfg.grid,
            u, x_proj_t, x_dbl, batch * length, length, channels, width,
            u.stride(0), u.stride(1), u.stride(3), *x_proj_t.stride(), x_dbl.stride(0), x_dbl.stride(1),
            IEEE=u.dtype == torch.float32, UPCAST=interpreted and u.dtype != torch.float32, **cfg.constexprs,
            **cfg.launch_options(),
        )
    return x_dbl
