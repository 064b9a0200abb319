"""Depthwise conv (width K) + SiLU for both Vim scan directions, one launch, natural token order.

Same contract as `conv1d_silu_bidir_ref`. Each program loads a [BLOCK_E, BLOCK_L] tile of x at the 2K-1 shifts
the two directions need (the shifted tiles overlap, so all but the first come from cache) and writes both
directions' outputs: causal taps for the forward direction, anti-causal taps for the backward one.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


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


def conv1d_silu_bidir(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Both directions' depthwise conv + SiLU in natural token order; same contract as `conv1d_silu_bidir_ref`.

    x: (batch, E, L), any float dtype, any strides (tokens contiguous is the fast case). weight: (2, E, K),
    weight[0] the forward (causal) taps, weight[1] the backward ones as the official `conv1d_b.weight` stores them.
    bias: (2, E) or None. Returns (2, batch, E, L) in x's dtype, computed in fp32; channel-last in memory
    (channel stride 1) when x is, so the scan that reads it gets coalesced per-token loads, else token-contiguous.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (batch, E, L); got {tuple(x.shape)}")
    batch, channels, length = x.shape
    if weight.dim() != 3 or tuple(weight.shape[:2]) != (2, channels):
        raise ValueError(f"weight must be (2, {channels}, K); got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (2, channels):
        raise ValueError(f"bias must be (2, {channels}); got {tuple(bias.shape)}")
    channel_last = x.stride(1) == 1 and channels > 1
    if channel_last:
        out = torch.empty((2, batch, length, channels), dtype=x.dtype, device=x.device).transpose(2, 3)
    else:
        out = torch.empty((2, batch, channels, length), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if x.device.type == "cpu":  # the interpreter: small tiles so tests cover masks and several programs
        block_e, block_l, warps = 4, 8, 1
    elif channel_last:  # lanes along channels: each token's channel run is one coalesced access
        block_e, block_l, warps = 64, 32, 4
    else:
        block_e, block_l, warps = 4, 256, 4
    grid = (triton.cdiv(length, block_l), triton.cdiv(channels, block_e), batch)
    b = bias if bias is not None else weight  # never read without HAS_BIAS
    _conv1d_silu_bidir_kernel[grid](
        x, weight, b, out, channels, length,
        *x.stride(), *weight.stride(), b.stride(0), b.stride(1), *out.stride(),
        K=weight.shape[-1], BLOCK_E=block_e, BLOCK_L=block_l, HAS_BIAS=bias is not None, num_warps=warps,
    )
    return out
