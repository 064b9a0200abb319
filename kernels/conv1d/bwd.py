"""Backward of `conv1d_silu_bidir`: both directions in one launch, pre-activations recomputed, no atomics.

With p_f / p_b the two directions' pre-activations (bias + taps, see reference.py), g_dir = dout_dir * SiLU'(p_dir)
where SiLU'(p) = s (1 + p (1 - s)), s = sigmoid(p):
    dx[j]         = sum_k w_f[k] g_f[j + (K-1) - k] + sum_k w_b[k] g_b[j - (K-1) + k]   (g zero outside [0, L))
    dweight[0, k] = sum_{b,t} g_f[t] x[t - (K-1) + k],  dweight[1, k] = sum_{b,t} g_b[t] x[t + (K-1) - k]
    dbias[dir]    = sum_{b,t} g_dir[t]
The forward's output is not saved: p is recomputed from x (K taps) wherever g is needed, so the backward reads
x and dout and writes dx, and the op saves nothing but its inputs (x is a view of in_proj's output, which the
mixer keeps alive anyway). dweight / dbias: each program sums its chunk in registers and writes one partial (per
direction, channel and tap) to its own slot; the launcher sums the slots with torch: deterministic, no atomics.

Two kernels, chosen by `conv1d_bwd_launch_config`:
- `_conv1d_silu_bidir_bwd_rows_kernel` (K = 4, x / dout / dx channel-last: the Vim mixer in training). Like the
  forward's rows kernel, a program walks a chunk of tokens of 128 channels in order. At token s it loads x[s+3],
  dout_f[s+3] and dout_b[s] (each row of x and dout read once, plus a 3-token halo per chunk), recomputes
  g_f[s+3] and g_b[s] from the window x[s..s+3], adds both to three running rows of dx[s..s+2] (plus a new one
  for dx[s+3]) and writes the now complete dx[s]; dweight takes g_f[s+3] x[s..s+3] and g_b[s] x[s..s+3] from
  the same window. Four tokens per loop trip with all their loads issued first. The partial buffer is
  (B x chunks) x 2 x E x (K + 1) fp32, a fixed share of the main traffic: 40 / (4 x CHUNK x itemsize) = 7.8% at
  64-token chunks in bf16.
- `_conv1d_silu_bidir_bwd_kernel` (any K, any layout): [BLOCK_E, BLOCK_L] tiles of output positions j; g at the
  2K-1 shifts j +- (K-1 - k), each recomputed from K shifted loads of x (K^2 extra FMAs and 2K sigmoids per element
  and direction); the shifted loads overlap, so all but the first come from cache.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import fastmath
from kernels.conv1d.fwd import _x_at, load_taps
from kernels.launch import CallMemo, launch
from kernels.runtime import LaunchConfig, cdiv, check_device, next_power_of_2, strides, sum_partials


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


@triton.jit(do_not_specialize=["L"])
def _conv1d_silu_bidir_bwd_rows_kernel(
    x_ptr, w_ptr, bias_ptr, dout_ptr, dx_ptr, dw_part_ptr, db_part_ptr,
    E, L,
    stride_x_b, stride_x_l,
    stride_w_dir, stride_w_e, stride_w_k,
    stride_bias_dir, stride_bias_e,
    stride_dout_dir, stride_dout_b, stride_dout_l,
    stride_dx_b, stride_dx_l,
    BLOCK_C: tl.constexpr, CHUNK: tl.constexpr, HAS_BIAS: tl.constexpr, USE_ASM: tl.constexpr,
):
    """K = 4. Channel stride 1 for x, dout and dx. Program (channel block, token chunk, batch): dx of the chunk's
    tokens [t0, t0 + CHUNK), and in slot (batch, chunk) the dweight / dbias terms of g_b at the chunk's tokens and
    of g_f at the chunk's tokens shifted by 3 (+ tokens 0..2 for the first chunk): each g counted once."""
    pid_c = tl.program_id(0)
    pid_t = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    t0 = pid_t * CHUNK
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = c < E
    c64 = c.to(tl.int64)
    x_row = x_ptr + pid_b * stride_x_b + c64
    df_row = dout_ptr + pid_b * stride_dout_b + c64
    db_row = df_row + stride_dout_dir
    dx_row = dx_ptr + pid_b * stride_dx_b + c64
    wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b = load_taps(
        w_ptr, bias_ptr, c64, mask_c, stride_w_dir, stride_w_e, stride_w_k, stride_bias_dir, stride_bias_e,
        HAS_BIAS, BLOCK_C)
    zero = tl.zeros((BLOCK_C,), dtype=tl.float32)
    # Step s (token s) recomputes g_f[s+3] and g_b[s], both from x[s] .. x[s+3], and adds them to dx[s] .. dx[s+3]
    # (d0 .. d2 hold dx[s] .. dx[s+2] so far; after step s, dx[s] is complete). Three warm-up steps
    # s = t0-3 .. t0-1 bring in g_f[t0 .. t0+2] and
    # g_b[t0-3 .. t0-1]; their dx[s] belong to the previous chunk and are dropped, and their g_f terms are this
    # program's dweight share only in the first chunk (later chunks': the previous program's loop counted them).
    xm3 = _x_at(x_row, t0 - 3, stride_x_l, L, mask_c)
    xm2 = _x_at(x_row, t0 - 2, stride_x_l, L, mask_c)
    xm1 = _x_at(x_row, t0 - 1, stride_x_l, L, mask_c)
    x0 = _x_at(x_row, t0, stride_x_l, L, mask_c)
    xp1 = _x_at(x_row, t0 + 1, stride_x_l, L, mask_c)
    xp2 = _x_at(x_row, t0 + 2, stride_x_l, L, mask_c)
    gf0, gbm3 = _g_pair(xm3, xm2, xm1, x0, _x_at(df_row, t0, stride_dout_l, L, mask_c),
                        _x_at(db_row, t0 - 3, stride_dout_l, L, mask_c),
                        wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b, USE_ASM)
    gf1, gbm2 = _g_pair(xm2, xm1, x0, xp1, _x_at(df_row, t0 + 1, stride_dout_l, L, mask_c),
                        _x_at(db_row, t0 - 2, stride_dout_l, L, mask_c),
                        wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b, USE_ASM)
    gf2, gbm1 = _g_pair(xm1, x0, xp1, xp2, _x_at(df_row, t0 + 2, stride_dout_l, L, mask_c),
                        _x_at(db_row, t0 - 1, stride_dout_l, L, mask_c),
                        wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b, USE_ASM)
    # dx[t0] .. dx[t0+2] so far (g_f[t] feeds dx[t-3+k] through w_f[k], g_b[t] feeds dx[t+3-k] through w_b[k]).
    d0 = (wf3 * gf0 + wf2 * gf1 + wf1 * gf2) + (wb0 * gbm3 + wb1 * gbm2 + wb2 * gbm1)
    d1 = (wf3 * gf1 + wf2 * gf2) + (wb0 * gbm2 + wb1 * gbm1)
    d2 = wf3 * gf2 + wb0 * gbm1
    own = (t0 == 0).to(tl.float32)  # the first chunk owns g_f[0 .. 2]
    dwf0 = own * (gf0 * xm3 + gf1 * xm2 + gf2 * xm1)
    dwf1 = own * (gf0 * xm2 + gf1 * xm1 + gf2 * x0)
    dwf2 = own * (gf0 * xm1 + gf1 * x0 + gf2 * xp1)
    dwf3 = own * (gf0 * x0 + gf1 * xp1 + gf2 * xp2)
    dbf = own * (gf0 + gf1 + gf2)
    dwb0 = zero
    dwb1 = zero
    dwb2 = zero
    dwb3 = zero
    dbb = zero
    # Past t_end (only in the last chunk, where t_end = L) dout is zero, so g is too and the sums are unchanged.
    t_end = tl.minimum(t0 + CHUNK, L)
    for s in range(t0, t_end, 4):  # four tokens per trip: their twelve row loads in flight together
        xp3 = _x_at(x_row, s + 3, stride_x_l, L, mask_c)
        xp4 = _x_at(x_row, s + 4, stride_x_l, L, mask_c)
        xp5 = _x_at(x_row, s + 5, stride_x_l, L, mask_c)
        xp6 = _x_at(x_row, s + 6, stride_x_l, L, mask_c)
        dof3 = _x_at(df_row, s + 3, stride_dout_l, L, mask_c)
        dof4 = _x_at(df_row, s + 4, stride_dout_l, L, mask_c)
        dof5 = _x_at(df_row, s + 5, stride_dout_l, L, mask_c)
        dof6 = _x_at(df_row, s + 6, stride_dout_l, L, mask_c)
        dob0 = _x_at(db_row, s, stride_dout_l, L, mask_c)
        dob1 = _x_at(db_row, s + 1, stride_dout_l, L, mask_c)
        dob2 = _x_at(db_row, s + 2, stride_dout_l, L, mask_c)
        dob3 = _x_at(db_row, s + 3, stride_dout_l, L, mask_c)
        d0, d1, d2, dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb = _bwd_token(
            dx_row, s, t_end, stride_dx_l, mask_c, x0, xp1, xp2, xp3, dof3, dob0, d0, d1, d2,
            wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
            dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb, USE_ASM)
        d0, d1, d2, dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb = _bwd_token(
            dx_row, s + 1, t_end, stride_dx_l, mask_c, xp1, xp2, xp3, xp4, dof4, dob1, d0, d1, d2,
            wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
            dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb, USE_ASM)
        d0, d1, d2, dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb = _bwd_token(
            dx_row, s + 2, t_end, stride_dx_l, mask_c, xp2, xp3, xp4, xp5, dof5, dob2, d0, d1, d2,
            wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
            dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb, USE_ASM)
        d0, d1, d2, dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb = _bwd_token(
            dx_row, s + 3, t_end, stride_dx_l, mask_c, xp3, xp4, xp5, xp6, dof6, dob3, d0, d1, d2,
            wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
            dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb, USE_ASM)
        x0, xp1, xp2 = xp4, xp5, xp6
    # Partial slot (batch, chunk): (2, E, 4) taps and (2, E) biases, contiguous fp32.
    slot = pid_b * tl.num_programs(1) + pid_t
    part = dw_part_ptr + slot * (2 * E * 4) + c64 * 4
    tl.store(part, dwf0, mask=mask_c)
    tl.store(part + 1, dwf1, mask=mask_c)
    tl.store(part + 2, dwf2, mask=mask_c)
    tl.store(part + 3, dwf3, mask=mask_c)
    tl.store(part + E * 4, dwb0, mask=mask_c)
    tl.store(part + E * 4 + 1, dwb1, mask=mask_c)
    tl.store(part + E * 4 + 2, dwb2, mask=mask_c)
    tl.store(part + E * 4 + 3, dwb3, mask=mask_c)
    bias_part = db_part_ptr + slot * (2 * E) + c64
    tl.store(bias_part, dbf, mask=mask_c)
    tl.store(bias_part + E, dbb, mask=mask_c)


@triton.jit
def _silu_grad(dout, p, USE_ASM: tl.constexpr):
    """dout * SiLU'(p) = dout s (1 + p (1 - s)), s = sigmoid(p): zero wherever dout is (outside [0, L) the loads
    return zero). Written as ds + ds * (p - p s) with ds = dout s: three FP32 instructions after the sigmoid."""
    s = fastmath.sigmoid(p, USE_ASM)
    ds = dout * s
    return ds + ds * (p - p * s)


@triton.jit
def _g_pair(xa, xb, xc, xd, dout_f, dout_b, wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
            USE_ASM: tl.constexpr):
    """From the window x[s] .. x[s+3] (xa .. xd): g_f[s+3] (given dout_f[s+3]) and g_b[s] (given dout_b[s])."""
    g_f = _silu_grad(dout_f, bias_f + wf0 * xa + wf1 * xb + wf2 * xc + wf3 * xd, USE_ASM)
    g_b = _silu_grad(dout_b, bias_b + wb0 * xd + wb1 * xc + wb2 * xb + wb3 * xa, USE_ASM)
    return g_f, g_b


@triton.jit
def _bwd_token(dx_row, s, t_end, stride_dx_l, mask_c, xa, xb, xc, xd, dout_f, dout_b, d0, d1, d2,
               wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
               dwf0, dwf1, dwf2, dwf3, dwb0, dwb1, dwb2, dwb3, dbf, dbb, USE_ASM: tl.constexpr):
    """Step s, window x[s] .. x[s+3] (xa .. xd): g_f[s+3] and g_b[s] recomputed and added to dx[s] .. dx[s+3]
    (d0 .. d2 hold dx[s] .. dx[s+2] so far); dx[s] written (nothing at or past t_end); g_f[s+3]'s and g_b[s]'s
    dweight / dbias terms added. Returns dx[s+1] .. dx[s+3] so far and the sums."""
    g_f, g_b = _g_pair(xa, xb, xc, xd, dout_f, dout_b, wf0, wf1, wf2, wf3, wb0, wb1, wb2, wb3, bias_f, bias_b,
                       USE_ASM)
    # g_f[s+3] feeds dx[s + k] through w_f[k]; g_b[s] feeds dx[s + 3 - k] through w_b[k].
    dx = d0 + wf0 * g_f + wb3 * g_b
    tl.store(dx_row + s * stride_dx_l, dx.to(dx_row.dtype.element_ty), mask=mask_c & (s < t_end))
    # dweight[0, k] takes g_f[t] x[t-3+k], dweight[1, k] takes g_b[t] x[t+3-k]: here t-3 = s and t = s.
    return (d1 + wf1 * g_f + wb2 * g_b, d2 + wf2 * g_f + wb1 * g_b, wf3 * g_f + wb0 * g_b,
            dwf0 + g_f * xa, dwf1 + g_f * xb, dwf2 + g_f * xc, dwf3 + g_f * xd,
            dwb0 + g_b * xd, dwb1 + g_b * xc, dwb2 + g_b * xb, dwb3 + g_b * xa, dbf + g_f, dbb + g_b)


def conv1d_bwd_launch_config(batch: int, channels: int, length: int, width: int, channel_last: bool,
                             interpreted: bool) -> LaunchConfig:
    """Which kernel `conv1d_silu_bidir_bwd` launches, its grid, tile and warps: the one place that chooses them (the
    launcher and `vimbench kernels static` both call it). channel_last: x, dout and dx all have channel stride 1.
    The dweight/dbias partial buffer has one slot per (batch, chunk).

    Channel-last with K = 4 (the Vim mixer in training): the token-walking rows kernel, grid (channel blocks,
    chunks, batch), 128 channels x 64 tokens per two-warp program on a GPU. Two channels per lane: 96 registers
    in bf16 and fp32 under triton 3.6 and 3.8, so ~20 warps per SM stay resident to keep loads in flight; at four
    (one warp) bf16 needs 168 and fp32 254. 64-token chunks: the forward's 32 would double the partial
    buffer (15.6% of the main traffic in bf16 instead of 7.8%); Vim-Ti 1248 px, batch 8: 2,304 programs.
    Interpreter: 8-token chunks (tests cross chunk edges inside the 7-token window) and 16-channel
    blocks for the kernel tests' small widths, 64 for the model tests' E = 64 (its cost is per operation).
    Otherwise the tile kernel, grid (chunks, channel blocks, batch): lanes along the contiguous axis (64 x 16 tiles
    spill under triton 3.8); chunks long enough that the partial buffer stays a few MB."""
    if channel_last and width == 4:
        if interpreted:
            block_c, chunk, warps = (16 if channels <= 32 else 64), 8, 1
        else:
            block_c, chunk, warps = 128, 64, 2
        return LaunchConfig(kernel="_conv1d_silu_bidir_bwd_rows_kernel",
                            grid=(cdiv(channels, block_c), cdiv(length, chunk), batch),
                            constexprs=dict(BLOCK_C=block_c, CHUNK=chunk, USE_ASM=not interpreted),
                            num_warps=warps)
    if interpreted:
        block_e, block_l, chunk, warps = (16 if channels <= 32 else 64), 8, 16, 1
    elif channel_last:
        block_e, block_l, chunk, warps = 64, 8, 256, 4
    else:
        block_e, block_l, chunk, warps = 4, 128, 1024, 4
    return LaunchConfig(kernel="_conv1d_silu_bidir_bwd_kernel",
                        grid=(cdiv(length, chunk), cdiv(channels, block_e), batch),
                        constexprs=dict(K=width, K_POW2=next_power_of_2(width), BLOCK_E=block_e,
                                        BLOCK_L=block_l, CHUNK=chunk),
                        num_warps=warps)


def partial_slots(cfg: LaunchConfig) -> int:
    """How many dweight/dbias partial slots (one per (batch, chunk)) a launch with `cfg` writes."""
    if cfg.kernel == "_conv1d_silu_bidir_bwd_rows_kernel":
        return cfg.grid[1] * cfg.grid[2]
    return cfg.grid[0] * cfg.grid[2]


def is_channel_last(x: torch.Tensor, dout: torch.Tensor) -> bool:
    """Whether x (batch, E, L) and dout (2, batch, E, L) both have channel stride 1 (dx then does too): the layout
    `conv1d_bwd_launch_config` calls channel_last."""
    return x.stride(1) == 1 and dout.stride(2) == 1 and x.shape[1] > 1


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
    # Eager calls are replayed by signature (kernels/launch.py CallMemo); the recording keeps the launch
    # configuration, which sizes the partials.
    tensors = (dout, x, weight, bias, dx)
    sig = _MEMO.signature(tensors)
    cfg = _MEMO.extra(sig)
    if cfg is not None:
        parts = _partials(cfg, channels, width, x.device)
        if _MEMO.replay(sig, tensors + parts):
            return _finish(dx, *parts, weight, bias)
    cfg = conv1d_bwd_launch_config(batch, channels, length, width, is_channel_last(x, dout),
                                   check_device(x, _conv1d_silu_bidir_bwd_kernel))
    parts = _partials(cfg, channels, width, x.device)
    dw_part, db_part = parts
    b = bias if bias is not None else weight  # never read without HAS_BIAS
    weight_strides = strides("stride_w", ("dir", "e", "k"), weight.stride())
    bias_strides = strides("stride_bias", ("dir", "e"), b.stride()[:2])
    with _MEMO.record(sig, tensors + parts, extra=cfg):
        if cfg.kernel == "_conv1d_silu_bidir_bwd_rows_kernel":  # x, dout and dx have channel stride 1
            launch(_conv1d_silu_bidir_bwd_rows_kernel, cfg.grid,
                x_ptr=x, w_ptr=weight, bias_ptr=b, dout_ptr=dout, dx_ptr=dx, dw_part_ptr=dw_part,
                db_part_ptr=db_part, E=channels, L=length, stride_x_b=x.stride(0), stride_x_l=x.stride(2),
                **weight_strides, **bias_strides,
                stride_dout_dir=dout.stride(0), stride_dout_b=dout.stride(1), stride_dout_l=dout.stride(3),
                stride_dx_b=dx.stride(0), stride_dx_l=dx.stride(2),
                HAS_BIAS=bias is not None, **cfg.constexprs, num_warps=cfg.num_warps,
            )
        else:
            launch(_conv1d_silu_bidir_bwd_kernel, cfg.grid,
                x_ptr=x, w_ptr=weight, bias_ptr=b, dout_ptr=dout, dx_ptr=dx, dw_part_ptr=dw_part,
                db_part_ptr=db_part, E=channels, L=length,
                **strides("stride_x", ("b", "e", "l"), x.stride()), **weight_strides, **bias_strides,
                **strides("stride_dout", ("dir", "b", "e", "l"), dout.stride()),
                **strides("stride_dx", ("b", "e", "l"), dx.stride()),
                HAS_BIAS=bias is not None, **cfg.constexprs, num_warps=cfg.num_warps,
            )
    return _finish(dx, dw_part, db_part, weight, bias)


_MEMO = CallMemo("conv1d_silu_bidir_bwd")  # eager calls replayed by signature (kernels/launch.py)


def _partials(cfg: LaunchConfig, channels: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The dweight and dbias partial buffers a launch with `cfg` writes (one slot per program row)."""
    slots = partial_slots(cfg)
    return (torch.empty((slots, 2, channels, width), dtype=torch.float32, device=device),
            torch.empty((slots, 2, channels), dtype=torch.float32, device=device))


def _finish(dx, dw_part, db_part, weight, bias):
    dweight = sum_partials(dw_part).to(weight.dtype)
    dbias = None if bias is None else sum_partials(db_part).to(bias.dtype)
    return dx, dweight, dbias
