"""Depthwise conv (width K) + SiLU for both Vim scan directions, one launch, natural token order.

Same contract as `conv1d_silu_bidir_ref`. Each program loads a [BLOCK_E, BLOCK_L] tile of x at the 2K-1 shifts
the two directions need (the shifted tiles overlap, so all but the first come from cache) and writes both
directions' outputs: causal taps for the forward direction, anti-causal taps for the backward one.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import CallMemo, launch
from kernels.runtime import LaunchConfig, cdiv, check_device, check_out, strides

_MEMO = CallMemo("conv1d_silu_bidir")  # eager calls replayed by signature (kernels/launch.py)


@triton.jit(do_not_specialize=["L"])
def _conv1d_silu_bidir_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    E, L,
    stride_x_b, stride_x_e, stride_x_l,
    stride_w_dir, stride_w_e, stride_w_k,
    stride_bias_dir, stride_bias_e,
    stride_out_dir, stride_out_b, stride_out_e, stride_out_l,
    K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    pid_l = tl.program_id(0)
    pid_e = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_e = offs_e < E
    e64 = offs_e.to(tl.int64)[:, None]  # (E, 1)
    t = offs_l[None, :]  # (1, L)
    x_row = x_ptr + pid_b * stride_x_b + e64 * stride_x_e

    acc_f = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
    if HAS_BIAS:
        acc_f += tl.load(bias_ptr + e64 * stride_bias_e, mask=mask_e[:, None], other=0.0).to(tl.float32)
        acc_b += tl.load(bias_ptr + stride_bias_dir + e64 * stride_bias_e, mask=mask_e[:, None],
                         other=0.0).to(tl.float32)
    for k in tl.static_range(K):
        # forward: out[t] += w_f[k] * x[t - (K-1) + k]; backward: out[t] += w_b[k] * x[t + (K-1) - k]
        w_f = tl.load(w_ptr + e64 * stride_w_e + k * stride_w_k, mask=mask_e[:, None], other=0.0).to(tl.float32)
        w_b = tl.load(w_ptr + stride_w_dir + e64 * stride_w_e + k * stride_w_k, mask=mask_e[:, None],
                      other=0.0).to(tl.float32)
        t_f = t - (K - 1) + k
        x_f = tl.load(x_row + t_f * stride_x_l, mask=mask_e[:, None] & (t_f >= 0) & (t_f < L),
                      other=0.0).to(tl.float32)
        t_b = t + (K - 1) - k
        x_b = tl.load(x_row + t_b * stride_x_l, mask=mask_e[:, None] & (t_b < L), other=0.0).to(tl.float32)
        acc_f += w_f * x_f
        acc_b += w_b * x_b
    mask = mask_e[:, None] & (t < L)
    out_row = out_ptr + pid_b * stride_out_b + e64 * stride_out_e + t * stride_out_l
    dtype = out_ptr.dtype.element_ty
    tl.store(out_row, (acc_f * tl.sigmoid(acc_f)).to(dtype), mask=mask)
    tl.store(out_row + stride_out_dir, (acc_b * tl.sigmoid(acc_b)).to(dtype), mask=mask)


@triton.jit(do_not_specialize=["L"])
def _conv1d_silu_bidir_rows_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    E, L,
    stride_x_b, stride_x_l,
    stride_w_dir, stride_w_e, stride_w_k,
    stride_bias_dir, stride_bias_e,
    stride_out_dir, stride_out_b, stride_out_l,
    BLOCK_C: tl.constexpr, CHUNK: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    """K = 4. Channel stride 1 for x and out. Program (channel block, token chunk, batch)."""
    pid_c = tl.program_id(0)
    t0 = tl.program_id(1) * CHUNK
    pid_b = tl.program_id(2).to(tl.int64)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < E
    c64 = c.to(tl.int64)
    x_row = x_ptr + pid_b * stride_x_b + c64
    out_row = out_ptr + pid_b * stride_out_b + c64
    wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b = load_taps(
        w_ptr, bias_ptr, c64, mask_c, stride_w_dir, stride_w_e, stride_w_k, stride_bias_dir, stride_bias_e,
        HAS_BIAS, BLOCK_C)
    # The window around token t: x[t-3] .. x[t+2] held, x[t+3] .. x[t+6] loaded each trip (zero outside [0, L)).
    xm3 = _x_at(x_row, t0 - 3, stride_x_l, L, mask_c)
    xm2 = _x_at(x_row, t0 - 2, stride_x_l, L, mask_c)
    xm1 = _x_at(x_row, t0 - 1, stride_x_l, L, mask_c)
    x0 = _x_at(x_row, t0, stride_x_l, L, mask_c)
    xp1 = _x_at(x_row, t0 + 1, stride_x_l, L, mask_c)
    xp2 = _x_at(x_row, t0 + 2, stride_x_l, L, mask_c)
    t_end = tl.minimum(t0 + CHUNK, L)
    for t in range(t0, t_end, 4):  # four tokens per trip: four loads in flight
        xp3 = _x_at(x_row, t + 3, stride_x_l, L, mask_c)
        xp4 = _x_at(x_row, t + 4, stride_x_l, L, mask_c)
        xp5 = _x_at(x_row, t + 5, stride_x_l, L, mask_c)
        xp6 = _x_at(x_row, t + 6, stride_x_l, L, mask_c)
        _conv_token(out_row, t, t_end, stride_out_dir, stride_out_l, mask_c, bias_f, bias_b,
                    wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, xm3, xm2, xm1, x0, xp1, xp2, xp3)
        _conv_token(out_row, t + 1, t_end, stride_out_dir, stride_out_l, mask_c, bias_f, bias_b,
                    wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, xm2, xm1, x0, xp1, xp2, xp3, xp4)
        _conv_token(out_row, t + 2, t_end, stride_out_dir, stride_out_l, mask_c, bias_f, bias_b,
                    wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, xm1, x0, xp1, xp2, xp3, xp4, xp5)
        _conv_token(out_row, t + 3, t_end, stride_out_dir, stride_out_l, mask_c, bias_f, bias_b,
                    wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, x0, xp1, xp2, xp3, xp4, xp5, xp6)
        xm3, xm2, xm1, x0, xp1, xp2 = xp1, xp2, xp3, xp4, xp5, xp6


@triton.jit
def _row(ptr, mask_c):
    return tl.load(ptr, mask=mask_c, other=0.0).to(tl.float32)


@triton.jit
def load_taps(w_ptr, bias_ptr, c64, mask_c, stride_w_dir, stride_w_e, stride_w_k, stride_bias_dir, stride_bias_e,
              HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr):
    """The program's channels' 4 filter taps of both directions and their biases (zeros without), fp32 (C,) rows:
    the width-4 rows kernels' (forward and backward) view of the (2, E, 4) weight and (2, E) bias stacks."""
    wf = w_ptr + c64 * stride_w_e
    wb = wf + stride_w_dir
    bias_f = tl.zeros((BLOCK_C,), dtype=tl.float32)
    bias_b = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_BIAS:
        bias_f = _row(bias_ptr + c64 * stride_bias_e, mask_c)
        bias_b = _row(bias_ptr + stride_bias_dir + c64 * stride_bias_e, mask_c)
    return (_row(wf, mask_c), _row(wf + stride_w_k, mask_c), _row(wf + 2 * stride_w_k, mask_c),
            _row(wf + 3 * stride_w_k, mask_c), _row(wb, mask_c), _row(wb + stride_w_k, mask_c),
            _row(wb + 2 * stride_w_k, mask_c), _row(wb + 3 * stride_w_k, mask_c), bias_f, bias_b)


@triton.jit
def _x_at(x_row, t, stride_x_l, L, mask_c):
    """Token t's (C,) row (of x, or of dout in the backward) in fp32; zeros outside [0, L) (the convolutions'
    padding)."""
    inside = (t >= 0) & (t < L)
    return tl.load(x_row + t * stride_x_l, mask=mask_c & inside, other=0.0).to(tl.float32)


@triton.jit
def _conv_token(out_row, t, t_end, stride_out_dir, stride_out_l, mask_c, bias_f, bias_b,
                wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, xm3, xm2, xm1, x0, xp1, xp2, xp3):
    """Both directions' outputs at token t from the window x[t-3] .. x[t+3]; nothing written past t_end."""
    f = bias_f + wf0 * xm3 + wf1 * xm2 + wf2 * xm1 + wf3 * x0
    b = bias_b + wb0 * xp3 + wb1 * xp2 + wb2 * xp1 + wb3 * x0
    dtype = out_row.dtype.element_ty
    ptr = out_row + t * stride_out_l  # t * stride < L * 2E: int32 is enough; the batch term is int64
    mask = mask_c & (t < t_end)
    tl.store(ptr, (f * tl.sigmoid(f)).to(dtype), mask=mask)
    tl.store(ptr + stride_out_dir, (b * tl.sigmoid(b)).to(dtype), mask=mask)


# Below this many 128 x 32 programs the rows kernel takes 32 x 8 tiles: more programs, a shorter walk each.
# Measured on the H200 (2026-12-02, bf16, 197 tokens, kernel time of graph-captured launches,
# results/history/scan-small-grid-h200-2026-12-02.json): Vim-Ti batch 1 (21 programs) 6.81 -> 2.25 us, batch 8
# (168) 7.16 -> 3.68 us, Vim-S batch 1 6.91 -> 2.49 us; at batch 64 (1,344) 128 x 32 stays (15.7 vs 15.3 us).
SMALL_GRID_PROGRAMS = 528


def conv1d_launch_config(batch: int, channels: int, length: int, width: int, channel_last: bool,
                         interpreted: bool) -> LaunchConfig:
    """Which kernel `conv1d_silu_bidir` launches, its grid, tile and warps: the one place that chooses them (the
    launcher and `vimbench kernels static` both call it).

    Channel-last x with K = 4 (the Vim mixer): the token-walking kernel, 128 channels x 32 tokens per program
    on a GPU. On the H200, 32-token chunks beat the tile kernel at every batch-64 Vim-Ti length from 577 tokens
    up in bf16 and fp32, and in bf16 at batch 1 and 8 too (results/history/conv1d-dispatch-h200-2026-11-30.json).
    Grids of fewer than SMALL_GRID_PROGRAMS such programs take 32 channels x 8 tokens instead.
    Otherwise the tile kernel: lanes along channels for channel-last x (each token's channel run is one
    coalesced access), along tokens for token-contiguous x. Interpreter: small blocks and chunks so that tests
    cross chunk, tile and channel-block edges."""
    if channel_last and width == 4:
        if interpreted:
            block_c, chunk = 8, 8
        elif cdiv(channels, 128) * cdiv(length, 32) * batch < SMALL_GRID_PROGRAMS:
            block_c, chunk = 32, 8
        else:
            block_c, chunk = 128, 32
        return LaunchConfig(kernel="_conv1d_silu_bidir_rows_kernel",
                            grid=(cdiv(channels, block_c), cdiv(length, chunk), batch),
                            constexprs=dict(BLOCK_C=block_c, CHUNK=chunk), num_warps=1)
    if interpreted:
        block_e, block_l, warps = 4, 8, 1
    elif channel_last:
        block_e, block_l, warps = 64, 32, 4
    else:
        block_e, block_l, warps = 4, 256, 4
    return LaunchConfig(kernel="_conv1d_silu_bidir_kernel",
                        grid=(cdiv(length, block_l), cdiv(channels, block_e), batch),
                        constexprs=dict(K=width, BLOCK_E=block_e, BLOCK_L=block_l), num_warps=warps)


def conv_out_like(x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """The uninitialized (2, batch, E, L) output for x (batch, E, L): laid out (batch, L, 2, E) in memory when x is
    channel-last, else contiguous; on x's device or `device`. One definition for the launcher and the custom op's
    fake."""
    batch, channels, length = x.shape
    device = x.device if device is None else device
    if x.stride(1) == 1 and channels > 1:  # per token, both directions' channel runs side by side
        return torch.empty((batch, length, 2, channels), dtype=x.dtype, device=device).permute(2, 0, 3, 1)
    return torch.empty((2, batch, channels, length), dtype=x.dtype, device=device)


def conv1d_silu_bidir(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Both directions' depthwise conv + SiLU in natural token order; same contract as `conv1d_silu_bidir_ref`.

    x: (batch, E, L), any float dtype, any strides (tokens contiguous is the fast case). weight: (2, E, K),
    weight[0] the forward (causal) taps, weight[1] the backward ones as the official `conv1d_b.weight` stores them.
    bias: (2, E) or None. Returns (2, batch, E, L) in x's dtype, computed in fp32. When x is channel-last (channel
    stride 1) the output is too, laid out (batch, L, 2, E) in memory: the scan that reads it gets coalesced
    per-token loads, and the Vim mixer's out_proj can read the scan's halves written over it as one
    (batch, L, 2E) matrix. Otherwise token-contiguous. out: a buffer to write instead of a new one, laid out as
    `conv_out_like` makes it and apart from the inputs.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, E, L); got {tuple(x.shape)}")
    batch, channels, length = x.shape
    if weight.dim() != 3 or tuple(weight.shape[:2]) != (2, channels):
        raise ValueError(f"weight must be (2, {channels}, K); got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (2, channels):
        raise ValueError(f"bias must be (2, {channels}); got {tuple(bias.shape)}")
    if out is None:
        out = conv_out_like(x)
    else:
        check_out((out,), (conv_out_like(x, "meta"),), x.device, (x, weight, bias), ("out",))
    tensors = (x, weight, bias, out)
    sig = _MEMO.signature(tensors)
    if out.numel() == 0 or _MEMO.replay(sig, tensors):
        return out
    with _MEMO.record(sig, tensors):
        _launch(x, weight, bias, out)
    return out


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    batch, channels, length = x.shape
    channel_last = x.stride(1) == 1 and channels > 1
    cfg = conv1d_launch_config(batch, channels, length, weight.shape[-1], channel_last,
                               check_device(x, _conv1d_silu_bidir_rows_kernel))
    b = bias if bias is not None else weight  # never read without HAS_BIAS
    weight_strides = strides("stride_w", ("dir", "e", "k"), weight.stride())
    bias_strides = dict(stride_bias_dir=b.stride(0), stride_bias_e=b.stride(1))
    if cfg.kernel == "_conv1d_silu_bidir_rows_kernel":  # x and out have channel stride 1
        launch(_conv1d_silu_bidir_rows_kernel, cfg.grid,
            x_ptr=x, w_ptr=weight, bias_ptr=b, out_ptr=out, E=channels, L=length,
            stride_x_b=x.stride(0), stride_x_l=x.stride(2), **weight_strides, **bias_strides,
            stride_out_dir=out.stride(0), stride_out_b=out.stride(1), stride_out_l=out.stride(3),
            HAS_BIAS=bias is not None, **cfg.constexprs, num_warps=cfg.num_warps,
        )
        return
    launch(_conv1d_silu_bidir_kernel, cfg.grid,
        x_ptr=x, w_ptr=weight, bias_ptr=b, out_ptr=out, E=channels, L=length,
        **strides("stride_x", ("b", "e", "l"), x.stride()), **weight_strides, **bias_strides,
        **strides("stride_out", ("dir", "b", "e", "l"), out.stride()),
        HAS_BIAS=bias is not None, **cfg.constexprs, num_warps=cfg.num_warps,
    )
