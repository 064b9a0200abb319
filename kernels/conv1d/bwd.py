"""Backward of `conv1d_silu_bidir`: both directions in one launch, pre-activations recomputed, no atomics.

With p_f / p_b the two directions' pre-activations (bias + taps, see reference.py), g_dir = dout_dir * SiLU'(p_dir)
where SiLU'(p) = s (1 + p (1 - s)), s = sigmoid(p):
    dx[j]         = sum_k w_f[k] g_f[j + (K-1) - k] + sum_k w_b[k] g_b[j - (K-1) + k]   (g zero outside [0, L))
    dweight[0, k] = sum_{b,t} g_f[t] x[t - (K-1) + k],  dweight[1, k] = sum_{b,t} g_b[t] x[t + (K-1) - k]
    dbias[dir]    = sum_{b,t} g_dir[t]
The forward's output is not saved: p is recomputed from x (K taps) wherever g is needed, so the backward reads
x and dout and writes dx, and the op saves nothing but its inputs (x is a view of in_proj's output, which the
mixer keeps alive anyway).

Program (token chunk, channel block, batch) walks its chunk in [BLOCK_E, BLOCK_L] tiles of output positions j.
For dx it needs g at the 2K-1 shifts j +- (K-1 - k), each recomputed from K shifted loads of x: K^2 extra FMAs
and 2K sigmoids per element and direction, cheap against the memory traffic; the shifted loads overlap, so all
but the first come from cache. dweight / dbias: each program sums its chunk in registers and writes one partial
(per direction, channel and tap) to its own slot; the launcher sums the slots with torch: deterministic, and the
partial buffer is small (programs x 2 x E x (K + 1) fp32).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.runtime import LaunchConfig, check_device, strides


@triton.jit
def _pre_activation(x_row, w_row, bias, t, L, stride_x_l, stride_w_k, mask_e, K: tl.constexpr,
                    BACKWARD: tl.constexpr):
    """One direction's pre-activation at positions t ((1, BLOCK_L)) for the (BLOCK_E, 1) channel rows."""
    acc = bias
    for k in tl.static_range(K):
        w = tl.load(w_row + k * stride_w_k, mask=mask_e, other=0.0).to(tl.float32)
        if BACKWARD:
            ts = t + (K - 1) - k
        else:
            ts = t - (K - 1) + k
        xs = tl.load(x_row + ts * stride_x_l, mask=mask_e & (ts >= 0) & (ts < L), other=0.0).to(tl.float32)
        acc += w * xs
    return acc


@triton.jit
def _grad_pre(dout_row, x_row, w_row, bias, t, L, stride_dout_l, stride_x_l, stride_w_k, mask_e,
              K: tl.constexpr, BACKWARD: tl.constexpr):
    """g = dout * SiLU'(p) of one direction at positions t; zero where t lies outside [0, L)."""
    inside = mask_e & (t >= 0) & (t < L)
    p = _pre_activation(x_row, w_row, bias, t, L, stride_x_l, stride_w_k, mask_e, K, BACKWARD)
    s = tl.sigmoid(p)
    dout = tl.load(dout_row + t * stride_dout_l, mask=inside, other=0.0).to(tl.float32)
    return tl.where(inside, dout * s * (1.0 + p * (1.0 - s)), 0.0)


@triton.jit(do_not_specialize=["L"])
def _conv1d_silu_bidir_bwd_kernel(
    x_ptr, w_ptr, bias_ptr, dout_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
    E, L,
    stride_x_b, stride_x_e, stride_x_l,
    stride_w_dir, stride_w_e, stride_w_k,
    stride_bias_dir, stride_bias_e,
    stride_dout_dir, stride_dout_b, stride_dout_e, stride_dout_l,
    stride_dx_b, stride_dx_e, stride_dx_l,
    K: tl.constexpr, K_POW2: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr,
    CHUNK: tl.constexpr, HAS_BIAS: tl.constexpr,
):
    pid_l = tl.program_id(0)
    pid_e = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    e64 = offs_e.to(tl.int64)[:, None]  # (E, 1)
    mask_e = (offs_e < E)[:, None]
    x_row = x_ptr + pid_b * stride_x_b + e64 * stride_x_e
    wf_row = w_ptr + e64 * stride_w_e
    wb_row = wf_row + stride_w_dir
    df_row = dout_ptr + pid_b * stride_dout_b + e64 * stride_dout_e
    db_row = df_row + stride_dout_dir
    dx_row = dx_ptr + pid_b * stride_dx_b + e64 * stride_dx_e
    bias_f = tl.zeros((BLOCK_E, 1), dtype=tl.float32)
    bias_b = tl.zeros((BLOCK_E, 1), dtype=tl.float32)
    if HAS_BIAS:
        bias_f = tl.load(bias_ptr + e64 * stride_bias_e, mask=mask_e, other=0.0).to(tl.float32)
        bias_b = tl.load(bias_ptr + stride_bias_dir + e64 * stride_bias_e, mask=mask_e, other=0.0).to(tl.float32)
    taps = tl.arange(0, K_POW2)[None, :]  # (1, K_POW2): column k of the dweight partials
    dw_f = tl.zeros((BLOCK_E, K_POW2), dtype=tl.float32)
    dw_b = tl.zeros((BLOCK_E, K_POW2), dtype=tl.float32)
    db_f = tl.zeros((BLOCK_E,), dtype=tl.float32)
    db_b = tl.zeros((BLOCK_E,), dtype=tl.float32)
    t_start = pid_l * CHUNK
    for t0 in tl.range(t_start, t_start + CHUNK, BLOCK_L):
        t = t0 + tl.arange(0, BLOCK_L)[None, :]  # (1, L)
        mask = mask_e & (t < L)
        dx = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
        for k in tl.static_range(K):
            # x[j] feeds out_f[j + (K-1) - k] through w_f[k] and out_b[j - (K-1) + k] through w_b[k].
            g_f = _grad_pre(df_row, x_row, wf_row, bias_f, t + (K - 1) - k, L, stride_dout_l, stride_x_l,
                            stride_w_k, mask_e, K, False)
            g_b = _grad_pre(db_row, x_row, wb_row, bias_b, t - (K - 1) + k, L, stride_dout_l, stride_x_l,
                            stride_w_k, mask_e, K, True)
            w_f = tl.load(wf_row + k * stride_w_k, mask=mask_e, other=0.0).to(tl.float32)
            w_b = tl.load(wb_row + k * stride_w_k, mask=mask_e, other=0.0).to(tl.float32)
            dx += w_f * g_f + w_b * g_b
            if k == K - 1:  # the unshifted g: this tile's share of dweight and dbias
                db_f += tl.sum(g_f, axis=1)
                db_b += tl.sum(g_b, axis=1)
                for kk in tl.static_range(K):
                    ts_f = t - (K - 1) + kk
                    x_f = tl.load(x_row + ts_f * stride_x_l, mask=mask_e & (ts_f >= 0) & (ts_f < L),
                                  other=0.0).to(tl.float32)
                    ts_b = t + (K - 1) - kk
                    x_b = tl.load(x_row + ts_b * stride_x_l, mask=mask_e & (ts_b < L), other=0.0).to(tl.float32)
                    dw_f += tl.where(taps == kk, tl.sum(g_f * x_f, axis=1)[:, None], 0.0)
                    dw_b += tl.where(taps == kk, tl.sum(g_b * x_b, axis=1)[:, None], 0.0)
        tl.store(dx_row + t * stride_dx_l, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    # Partial slot (batch, chunk): (2, E, K) taps and (2, E) biases, contiguous fp32.
    slot = pid_b * tl.num_programs(0) + pid_l
    part = dw_part_ptr + slot * (2 * E * K) + e64 * K + taps
    mask_taps = mask_e & (taps < K)
    tl.store(part, dw_f, mask=mask_taps)
    tl.store(part + E * K, dw_b, mask=mask_taps)
    bias_part = db_part_ptr + slot * (2 * E) + offs_e
    tl.store(bias_part, db_f, mask=offs_e < E)
    tl.store(bias_part + E, db_b, mask=offs_e < E)


def conv1d_bwd_launch_config(batch: int, channels: int, length: int, width: int, channel_last: bool,
                             interpreted: bool) -> LaunchConfig:
    """`_conv1d_silu_bidir_bwd_kernel`'s grid, tile and warps: the one place that chooses them (the launcher and
    `vimbench kernels static` both call it). Grid (token chunks, channel blocks, batch); the dweight/dbias partial
    buffer has one slot per (batch, chunk). Interpreter: small tiles and chunks of two tiles, so tests cross tile,
    chunk and channel-block edges (its cost is per operation, not per element: 16-channel blocks for the kernel
    tests' small widths, 64 for the model tests' E = 64). GPU: lanes along the contiguous axis (64 x 16 tiles
    spill under triton 3.8); chunks long enough that the partial buffer stays a few MB (Vim-Ti 1248 px, batch 8:
    8 x 24 slots x 12 KB = 2.3 MB)."""
    if interpreted:
        block_e, block_l, chunk, warps = (16 if channels <= 32 else 64), 8, 16, 1
    elif channel_last:
        block_e, block_l, chunk, warps = 64, 8, 256, 4
    else:
        block_e, block_l, chunk, warps = 4, 128, 1024, 4
    return LaunchConfig(kernel="_conv1d_silu_bidir_bwd_kernel",
                        grid=(triton.cdiv(length, chunk), triton.cdiv(channels, block_e), batch),
                        constexprs=dict(K=width, K_POW2=triton.next_power_of_2(width), BLOCK_E=block_e,
                                        BLOCK_L=block_l, CHUNK=chunk),
                        num_warps=warps)


def dx_like(x: torch.Tensor) -> torch.Tensor:
    """An uninitialized (batch, E, L) tensor laid out like x: channel-last stays channel-last."""
    batch, channels, length = x.shape
    if x.stride(1) == 1 and channels > 1:
        return torch.empty((batch, length, channels), dtype=x.dtype, device=x.device).transpose(1, 2)
    return torch.empty((batch, channels, length), dtype=x.dtype, device=x.device)


def conv1d_silu_bidir_bwd(dout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of `conv1d_silu_bidir(x, weight, bias)` given dout = dL/d out.

    dout: (2, batch, E, L), any strides and float dtype. x: (batch, E, L); weight: (2, E, K); bias: (2, E) or None.
    Returns (dx (batch, E, L) in x's dtype, laid out like x when x is channel-last; dweight (2, E, K) in weight's
    dtype; dbias (2, E) in bias's dtype, or None without bias). Accumulation in fp32; dweight and dbias are
    reduced deterministically (per-program partials, then one sum).
    """
    batch, channels, length = x.shape
    width = weight.shape[-1]
    if tuple(dout.shape) != (2, batch, channels, length):
        raise ValueError(f"dout must be (2, {batch}, {channels}, {length}); got {tuple(dout.shape)}")
    dx = dx_like(x)
    if dx.numel() == 0:
        dweight = torch.zeros_like(weight)
        return dx, dweight, None if bias is None else torch.zeros_like(bias)
    channel_last = x.stride(1) == 1 and channels > 1
    cfg = conv1d_bwd_launch_config(batch, channels, length, width, channel_last,
                                   check_device(x, _conv1d_silu_bidir_bwd_kernel))
    slots = cfg.grid[0] * cfg.grid[2]
    dw_part = torch.empty((slots, 2, channels, width), dtype=torch.float32, device=x.device)
    db_part = torch.empty((slots, 2, channels), dtype=torch.float32, device=x.device)
    b = bias if bias is not None else weight  # never read without HAS_BIAS
    _conv1d_silu_bidir_bwd_kernel[cfg.grid](
        x_ptr=x, w_ptr=weight, bias_ptr=b, dout_ptr=dout, dx_ptr=dx, dw_part_ptr=dw_part, db_part_ptr=db_part,
        E=channels, L=length,
        **strides("stride_x", ("b", "e", "l"), x.stride()),
        **strides("stride_w", ("dir", "e", "k"), weight.stride()),
        **strides("stride_bias", ("dir", "e"), b.stride()[:2]),
        **strides("stride_dout", ("dir", "b", "e", "l"), dout.stride()),
        **strides("stride_dx", ("b", "e", "l"), dx.stride()),
        HAS_BIAS=bias is not None, **cfg.constexprs, num_warps=cfg.num_warps,
    )
    dweight = dw_part.sum(0).to(weight.dtype)
    dbias = None if bias is None else db_part.sum(0).to(bias.dtype)
    return dx, dweight, dbias
