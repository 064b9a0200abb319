"""The Vim mixer from its normalized input to the scan's output, composed of the reference ops: the spec of
`kernels.bimamba_inner.op.bimamba_inner` (same signature), differentiable by plain autograd."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.conv1d.reference import conv1d_silu_bidir_ref
from kernels.selective_scan.reference import bimamba_scan_ref


def x_dbl_slices(n_state: int, dt_rank: int) -> tuple[slice, slice, slice]:
    """Columns of B, C and dt in a token's x_proj output, [B | C | dt | zero pad] (vimbench.layout.XDblLayout's
    order; the pad makes the row a multiple of 16 elements)."""
    return slice(0, n_state), slice(n_state, 2 * n_state), slice(2 * n_state, 2 * n_state + dt_rank)


def bimamba_inner_ref(h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, combine=False,
                      norm=None):
    """in_proj -> both directions' conv1d + SiLU -> x_proj -> dt_proj -> gated bidirectional scan -> out_proj.

    h: (batch, L, d_model), the normalized mixer input. in_proj: (2E, d_model), rows [x | z]. conv_w: (2, E, K),
    conv_b: (2, E). x_proj_t: (2, E, W), columns [B | C | dt | pad] (N, N, R, pad), W >= 2N + R. dt_proj_t:
    (2, R, E). A: (2, E, N) fp32 (negative); D, dt_bias: (2, E) fp32. out_proj: (d_model, E). The GEMMs run in
    the dtype of h and of the projection weights (the caller casts them alike, as autocast would); delta =
    softplus(dt @ dt_proj_t + dt_bias) inside the scan. combine=False adds the two gated halves 0.5 * y_dir * SiLU(z)
    in out_proj (its weight twice along K), combine=True in the scan: the same sum. Returns (batch, L, d_model) in
    h's dtype. norm: (r, weight, eps) that h was normalized from, which the fused op may recompute h from in its
    backward; the reference ignores it (plain autograd keeps h).
    """
    batch, length = h.shape[:2]
    inner, n_state, dt_rank = in_proj.shape[0] // 2, A.shape[-1], dt_proj_t.shape[1]
    cols_b, cols_c, cols_dt = x_dbl_slices(n_state, dt_rank)
    xz = F.linear(h, in_proj)  # (batch, L, 2E)
    x, z = xz[..., :inner].transpose(1, 2), xz[..., inner:].transpose(1, 2)  # (batch, E, L) views
    u = conv1d_silu_bidir_ref(x, conv_w, conv_b)  # (2, batch, E, L)
    x_dbl = torch.bmm(u.transpose(2, 3).reshape(2, batch * length, inner), x_proj_t)  # (2, batch * L, W)
    delta = torch.bmm(x_dbl[..., cols_dt], dt_proj_t)  # (2, batch * L, E)
    delta = delta.view(2, batch, length, inner).transpose(2, 3)
    x_dbl = x_dbl.view(2, batch, length, -1)
    B, C = x_dbl[..., cols_b].transpose(2, 3), x_dbl[..., cols_c].transpose(2, 3)  # (2, batch, N, L)
    y = bimamba_scan_ref(u, delta, A, B, C, D, z, dt_bias, True, combine)
    if combine:
        return F.linear(y.transpose(1, 2), out_proj)
    return F.linear(y.permute(1, 3, 0, 2).reshape(batch, length, 2 * inner), torch.cat([out_proj] * 2, 1))
