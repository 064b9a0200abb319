"""Depthwise conv (width K) + SiLU for both scan directions: the pure-PyTorch spec."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def conv1d_silu_bidir_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """Both directions' conv + SiLU in natural token order.

    x: (batch, E, L), any float dtype. weight: (2, E, K); weight[0] holds the forward (causal) taps,
    weight[1] the backward ones exactly as the official `conv1d_b.weight` stores them. bias: (2, E) or None.
    Returns (2, batch, E, L) in x's dtype, computed in fp32 (float64 for float64 x, so that autograd through the
    reference is the float64 spec the backward kernels are tested against):
        out[0, :, :, t] = silu(bias[0] + sum_k weight[0, :, k] * x[..., t - K + 1 + k])   (zero left padding)
        out[1, :, :, t] = silu(bias[1] + sum_k weight[1, :, k] * x[..., t + K - 1 - k])   (zero right padding)
    out: a (2, batch, E, L) buffer in x's dtype to write instead (any strides), as the Triton op takes one.
    """
    channels, width = x.shape[1], weight.shape[-1]
    compute = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(compute)
    wf = weight.to(compute)
    bf = bias.to(compute) if bias is not None else [None, None]
    fwd = F.conv1d(F.pad(xf, (width - 1, 0)), wf[0].unsqueeze(1), bf[0], groups=channels)
    # Anti-causal taps are the causal ones mirrored: F.conv1d correlates, so flip the kernel.
    bwd = F.conv1d(F.pad(xf, (0, width - 1)), wf[1].flip(-1).unsqueeze(1), bf[1], groups=channels)
    result = F.silu(torch.stack([fwd, bwd])).to(x.dtype)
    if out is None:
        return result
    if out.shape != result.shape or out.dtype != result.dtype:  # copy_ would broadcast or cast without a word
        raise ValueError(f"out must be {result.dtype} {tuple(result.shape)}; got {out.dtype} {tuple(out.shape)}")
    return out.copy_(result)


def conv1d_silu_bidir_bwd_ref(dout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                              bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of `conv1d_silu_bidir_ref(x, weight, bias)` given dout (2, batch, E, L), by autograd through it.
    Same signature and returns as `kernels.conv1d.bwd.conv1d_silu_bidir_bwd`: (dx like x, dweight like weight,
    dbias like bias or None)."""
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in (x, weight, bias)]
        out = conv1d_silu_bidir_ref(*leaves)
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None], dout.to(out.dtype))
    return grads[0], grads[1], grads[2] if bias is not None else None


def conv_xproj_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, x_proj_t: torch.Tensor,
                   out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The conv fused with x_proj (kernels/conv1d/xproj.py), as the unfused mixer computes it: u =
    `conv1d_silu_bidir_ref(x, weight, bias)` (2, batch, E, L) in x's dtype, then x_dbl = u's token rows @ x_proj_t
    per direction, (2, batch * L, W) in out_dtype, accumulated in fp32 (float64 for float64 inputs) from u as stored.
    x_proj_t: (2, E, W) in x's dtype."""
    u = conv1d_silu_bidir_ref(x, weight, bias)
    return u, x_proj_rows_ref(u, x_proj_t, out_dtype)


def x_proj_rows_ref(u: torch.Tensor, x_proj_t: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """x_proj on the conv's output (kernels/conv1d/xproj.py `x_proj_rows`): x_dbl = u's token rows @ x_proj_t per
    direction, (2, batch * L, W) in out_dtype, accumulated in fp32 (float64 for float64 inputs) from u as stored.
    u: (2, batch, E, L); x_proj_t: (2, E, W) in u's dtype."""
    compute = torch.promote_types(u.dtype, torch.float32)
    rows = u.transpose(2, 3).reshape(2, -1, u.shape[2]).to(compute)  # (2, batch * L, E)
    return torch.bmm(rows, x_proj_t.to(compute)).to(out_dtype)
