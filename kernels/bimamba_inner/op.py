"""The Vim mixer's training op on backend triton: in_proj -> conv1d + SiLU -> x_proj -> dt_proj -> scan -> out_proj
behind ONE autograd boundary, so that the autograd graph keeps what this op chooses, not what each step would keep.

    vimbench::bimamba_inner(h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, norm_r,
                            norm_w, norm_eps, combine, chunk, softplus_first=False) -> (out, y, x_dbl, checkpoints)

Forward: the launchers of the steps (kernels.conv1d.fwd, kernels.selective_scan.fwd.bimamba_scan_fwd_save) and
cuBLAS GEMMs. combine=False (bf16/fp16): the scan writes its two gated halves over the conv output u (which
nothing needs afterwards: u is recomputed in the backward) and one elementwise add forms their sum y, which
out_proj (K = E) and the backward take. combine=True (fp32): the scan adds them (fp32 atomics) into y.
Outputs: out (batch, L, d_model); y (batch, L, E), the scan's combined output; x_dbl (2, batch * L, W), the
x_proj output [B | C | dt | pad]; checkpoints, the scan's fp32 states every `chunk` tokens. y, x_dbl and
checkpoints are outputs so that autograd can save them; they get no gradient.

Saved for backward (per layer, Vim-Ti 1248 px, batch 8, bf16: kernels/README.md has the table): the weights,
y (37.4 MB: out_proj's weight gradient needs the sum of the halves only, half their bytes), x_dbl (9.3 MB), the
checkpoints (37.7 MB) and h (18.7 MB), or instead of h, when the caller passes the fp32 residual r and the norm
weight that h was normalized from (h = add_rmsnorm(r, None, norm_w, norm_eps)[0], as the Vim block computes it),
r and norm_w: r is the norm's own saved tensor, so that costs no bytes. Not saved: xz = in_proj(h) (74.8 MB),
u = conv(x) (74.8 MB), delta = dt_proj(dt) (74.8 MB), the halves (74.8 MB). The backward runs out_proj's GEMM
backward (dy = dout @ out_proj: the scan's backward always takes the combined form), recomputes h (the norm's
forward), xz (a K = d_model GEMM), u (the conv forward) and delta (a K = W - 2N GEMM: dt and its pad), then runs
the scan backward, the dt_proj and x_proj GEMM backwards, the conv backward and the in_proj GEMM backward, through
the ops' public functions (add_rmsnorm, conv1d_silu_bidir, bimamba_scan_bwd, conv1d_silu_bidir_bwd: their
registered custom ops when traced, so torch.compile traces the backward too; their launchers directly in eager)
and aten GEMMs.

Eager training calls the op's autograd.Function twin (kernels.runtime.eager_autograd: the same implementation,
setup_context and backward) instead of the custom-op dispatcher, whose per-call host cost made a Vim-Ti training
step at 224 px, batch 128 host-bound on the H200; traced calls (torch.compile, fake tensors) go through the op.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from kernels.bimamba_inner.reference import x_dbl_slices
from kernels.conv1d import fwd as conv_fwd
from kernels.conv1d.op import conv1d_silu_bidir, conv1d_silu_bidir_bwd
from kernels.dt_softplus import fwd as dt_softplus_fwd
from kernels.dt_softplus.op import dt_softplus
from kernels.rmsnorm.op import add_rmsnorm
from kernels.runtime import cdiv, eager_autograd, traced
from kernels.selective_scan import fwd as scan_fwd
from kernels.selective_scan.op import CHECKPOINT_CHUNK, bimamba_scan_bwd

Tensor = torch.Tensor


def _split_xz(xz: Tensor, inner: int) -> tuple[Tensor, Tensor]:
    """x and z as (batch, E, L) views of xz (batch, L, 2E): channel stride 1, as the conv and the scan read them."""
    return xz[..., :inner].transpose(1, 2), xz[..., inner:].transpose(1, 2)


def _tokens(u: Tensor) -> Tensor:
    """u (2, batch, E, L) as (2, batch * L, E) GEMM rows: a view when u is laid out (batch, L, 2, E)."""
    return u.transpose(2, 3).reshape(2, -1, u.shape[2])


def _tokens_2e(u: Tensor) -> Tensor:
    """u (2, batch, E, L) as (batch * L, 2E) GEMM rows [u_0 | u_1]: a view when u is laid out (batch, L, 2, E)."""
    return u.permute(1, 3, 0, 2).reshape(-1, 2 * u.shape[2])


def _mm_fp32(a: Tensor, b: Tensor) -> Tensor:
    """a @ b with an fp32 result (16-bit operands on CUDA: fp32 accumulation without a 16-bit rounding)."""
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        return torch.bmm(a[None], b[None], out_dtype=torch.float32)[0]
    return (a @ b).float()


# Weight gradients reduce over every token (K = batch * L rows, ~49k at 1248 px batch 8) into a few hundred outputs:
# cuBLAS ran d_x_proj (E x W = 384 x 48 per direction) as one tile grid of a dozen CTAs, 1.16 ms per layer on the
# H200 (28 ms of a 178 ms Vim-Ti step at 1248 px batch 8). Splitting K into slices of at most this many rows, one
# GEMM batch entry each, and summing the fp32 partials fills the GPU.
WEIGHT_GRAD_SLICE_ROWS = 2048
WEIGHT_GRAD_MIN_SLICE_ROWS = 256
WEIGHT_GRAD_MAX_SLICES = 64


def _k_slices(rows: int) -> int:
    """How many equal slices the weight gradients split their K = rows into: the fewest whose slices have at most
    WEIGHT_GRAD_SLICE_ROWS rows, among the divisors of rows up to WEIGHT_GRAD_MAX_SLICES that leave at least
    WEIGHT_GRAD_MIN_SLICE_ROWS rows per slice; else the largest of those (1 for a prime)."""
    divisors = [s for s in range(1, WEIGHT_GRAD_MAX_SLICES + 1)
                if rows % s == 0 and (s == 1 or rows // s >= WEIGHT_GRAD_MIN_SLICE_ROWS)]
    fitting = [s for s in divisors if rows // s <= WEIGHT_GRAD_SLICE_ROWS]
    return fitting[0] if fitting else divisors[-1]


def _weight_grad(a: Tensor, b: Tensor) -> Tensor:
    """a^T b per direction: a (2, M, P), b (2, M, Q) -> (2, P, Q) in a's dtype, summed over M in K slices
    (`_k_slices`) with fp32 partials for 16-bit operands. Each direction's (M, P) operand may be strided (u's
    layout interleaves the directions), so the slices are views per direction. With P < Q (d_dt_proj: P = R = 12
    rows of E = 384 columns) the GEMMs compute (b^T a) and the sum is transposed back: cuBLAS tiles the output's
    rows by 64, and 12 rows left most of each tile idle (H200, 224 px batch 128: 94 -> 41 us per call, 1248 px
    batch 8: 125 -> 53 us; results/history/smallops-h200-2026-12-03.json)."""
    slices = _k_slices(a.shape[1])
    swap = a.shape[-1] < b.shape[-1]
    out = []
    for a_d, b_d in zip(a, b):
        a_s = a_d.reshape(slices, -1, a_d.shape[-1])  # (S, M/S, P)
        b_s = b_d.reshape(slices, -1, b_d.shape[-1])  # (S, M/S, Q)
        lhs, rhs = (b_s.transpose(1, 2), a_s) if swap else (a_s.transpose(1, 2), b_s)
        low = lhs.dtype in (torch.bfloat16, torch.float16)
        if low and lhs.is_cuda:
            partial = torch.bmm(lhs, rhs, out_dtype=torch.float32)  # no 16-bit rounding of the partial sums
        else:  # fp32/fp64 operands, or CPU (no out_dtype there)
            partial = torch.bmm(lhs, rhs).float() if low else torch.bmm(lhs, rhs)
        total = partial.sum(0)
        out.append(total.t() if swap else total)
    return torch.stack(out).to(a.dtype)


# The scan kernels read B and C from an fp32 copy of x_dbl's B and C columns when x_dbl is 16-bit (the same
# values: a bf16 -> fp32 cast is exact). Each kernel otherwise unpacks every 16-bit B/C value per token and program:
# static check (sm_90, triton 3.6, Vim-Ti 1248 px batch 8, combined bf16), the scan backward's walk loop 810 -> 718
# SASS instructions and its recomputation loop 174 -> 152. The copy is (2, batch * L, 2N) fp32 per scan call,
# transient (12.5 MB at that shape). False: the scans read the 16-bit views of x_dbl.
SCAN_BC_FP32 = True

# The scan backward's outputs in the forms this op consumes (session m): dz as the two directions' terms, stored
# per direction and summed by the in_proj GEMMs (K = 2E) instead of fp32 atomics onto a zero-filled buffer and a
# cast (DZ_HALVES), and dB/dC summed from their per-channel-block partials straight into x_dbl-gradient rows by one
# kernel instead of two fp32 sums, transposes, casts and a wider concatenation (BC_ROWS). False: the old forms.
DZ_HALVES = True
BC_ROWS = True
# The 16-bit forward's two gated halves summed by the scan itself (session m): the directions launch in order and the
# second adds the first's stored half (`bimamba_scan_fwd_save(ordered_sum=True)`), so no halves over u and no
# separate add kernel. Measured on the H200 (results/history/ordsum-h200-2026-12-04m.json, forward + add as CUDA-graph
# replays): slower where the chunk-parallel passes run (Vim-Ti 8 x 6,085: 532 -> 586 us; captured steps at 1248/8
# 98.1 -> 97.2 img/s), faster in the one-pass kernel (128 x 197: 217 -> 208 us) but level in whole steps at 224/128
# (3,268 -> 3,274). Off: halves over u, then torch.add.
ORDERED_SUM = False

# The activation dtypes whose op makes the scan's delta already softplus'd (session an): delta =
# softplus(dt @ dt_proj + dt_bias) by kernels.dt_softplus (fp16 for 16-bit models), in the forward and in the
# backward's recompute, instead of the dt_proj GEMM; the scan's forward passes then run without their softplus and
# bias (`bimamba_scan_fwd_save(delta_softplus=False)`) and its backward takes the slope from Delta
# (`bimamba_scan_bwd(softplus_done=True)`: ddelta is still dL/dpre, for the dt_proj GEMM backward). Estimated
# statically at ~2.5% of a Vim-Ti 1248/8 step (kernels/NOTES.md, "Session am"); () until measured on a GPU;
# (torch.bfloat16, torch.float16) turns it on for 16-bit training (fp32's op tile runs on the FMA pipe).
SOFTPLUS_BEFORE_SCAN_DTYPES: tuple = ()


def _scan_operands(x_dbl: Tensor, dt_proj_t: Tensor, batch: int, length: int, n_state: int,
                   dt_bias: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """From x_dbl (2, batch * L, W): dt_pad (2, batch * L, W - 2N), the dt columns with the row's pad after them,
    and dt_proj_pad (2, W - 2N, E), dt_proj_t with zero rows for the pad; the scan's delta (2, batch, E, L) =
    dt_pad @ dt_proj_pad, and B and C (2, batch, N, L), all but delta and dt_proj_pad views. The pad columns
    enter the GEMM with zero weights (delta is dt @ dt_proj_t exactly) so that K is W - 2N (16 for Vim-Ti)
    instead of R = 12: rows 32-byte aligned, a faster cuBLAS kernel (H200, 224 px batch 128: 27 -> 19 us; the
    backward's d_dt GEMM with N = 16: 23 -> 8 us; results/history/dtpad-h200-2026-12-03.json). B and C are views
    of an fp32 copy of their columns where x_dbl is 16-bit (SCAN_BC_FP32), else of x_dbl.
    dt_bias given (SOFTPLUS_BEFORE_SCAN_DTYPES): delta is softplus(dt @ dt_proj_t + dt_bias) instead, from
    kernels.dt_softplus (laid out (2, batch, L, E) like the GEMM's, in `dt_softplus_fwd.delta_dtype`)."""
    cols_b, cols_c, cols_dt = x_dbl_slices(n_state, dt_proj_t.shape[1])
    dt_pad = x_dbl[..., cols_dt.start:]
    pad = dt_pad.shape[-1] - dt_proj_t.shape[1]
    dt_proj_pad = F.pad(dt_proj_t, (0, 0, 0, pad)) if pad else dt_proj_t
    if dt_bias is None:
        delta = torch.bmm(dt_pad, dt_proj_pad)  # dt_bias: in the scan
    else:
        # the public op: its custom op where the backward is traced (AOT autograd), its launcher otherwise
        delta = dt_softplus(x_dbl[..., cols_dt], dt_proj_t, dt_bias, dt_softplus_fwd.delta_dtype(x_dbl.dtype))
    delta = delta.view(2, batch, length, -1).transpose(2, 3)
    rows = x_dbl.view(2, batch, length, -1)
    if SCAN_BC_FP32 and x_dbl.dtype != torch.float32:
        assert cols_b.stop == cols_c.start  # [B | C] adjacent: one copy of both, rows of 2N fp32
        rows = rows[..., cols_b.start:cols_c.stop].float()
        cols_b, cols_c = slice(0, n_state), slice(n_state, 2 * n_state)
    return dt_pad, dt_proj_pad, delta, rows[..., cols_b].transpose(2, 3), rows[..., cols_c].transpose(2, 3)


def _bimamba_inner_impl(h: Tensor, in_proj: Tensor, conv_w: Tensor, conv_b: Tensor, x_proj_t: Tensor,
                      dt_proj_t: Tensor, A: Tensor, D: Tensor, dt_bias: Tensor, out_proj: Tensor,
                      norm_r: Optional[Tensor], norm_w: Optional[Tensor], norm_eps: float, combine: bool, chunk: int,
                      softplus_first: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, length = h.shape[:2]
    inner = in_proj.shape[0] // 2
    # The caller casts the GEMM operands (the op's contract); an autocast around the call must not recast them.
    with torch.autocast(h.device.type, enabled=False):
        x, z = _split_xz(F.linear(h, in_proj), inner)
        u = conv_fwd.conv1d_silu_bidir(x, conv_w, conv_b)  # (2, batch, E, L), laid out (batch, L, 2, E)
        x_dbl = torch.bmm(_tokens(u), x_proj_t)  # (2, batch * L, W)
        _, _, delta, B, C = _scan_operands(x_dbl, dt_proj_t, batch, length, A.shape[-1],
                                           dt_bias if softplus_first else None)
        ordered = ORDERED_SUM and not combine
        scan_bias = None if softplus_first else dt_bias  # softplus_first: inside delta already
        y, checkpoints = scan_fwd.bimamba_scan_fwd_save(u, delta, A, B, C, D, z, scan_bias, not softplus_first,
                                                        combine, chunk, out=None if combine or ordered else u,
                                                        ordered_sum=ordered)
        del delta
        if combine or ordered:  # (batch, E, L) laid out (batch, L, E)
            y = y.transpose(1, 2)
        else:
            # The halves (2, batch, E, L), laid out (batch, L, 2, E) (no fp32 atomics in the scan): autograd
            # needs their sum, the combined output, anyway; out_proj then runs on it with K = E. (Inference adds
            # them inside a K = 2E GEMM instead; here that GEMM beside the add cost 14 us where the K = E one
            # costs 9, H200, 224 px batch 128: results/history/dtpad-h200-2026-12-03.json.)
            y = torch.add(y[0].transpose(1, 2), y[1].transpose(1, 2))
        out = F.linear(y, out_proj)
    return out, y, x_dbl, checkpoints


_bimamba_inner_op = torch.library.custom_op("vimbench::bimamba_inner", mutates_args=())(_bimamba_inner_impl)


@_bimamba_inner_op.register_fake
def _(h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, norm_r, norm_w, norm_eps, combine,
      chunk, softplus_first=False):
    batch, length = h.shape[:2]
    inner = in_proj.shape[0] // 2
    x_dbl = h.new_empty(2, batch * length, x_proj_t.shape[-1])
    checkpoints = h.new_empty((2, batch, cdiv(length, chunk), A.shape[-1], inner), dtype=torch.float32)
    return h.new_empty(batch, length, out_proj.shape[0]), h.new_empty(batch, length, inner), x_dbl, checkpoints


def _setup_context(ctx, inputs, output):
    (h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, norm_r, norm_w, norm_eps, combine,
     chunk, softplus_first) = inputs
    _, y, x_dbl, checkpoints = output
    keep_h = norm_r is None  # else h is recomputed from the norm's r
    ctx.save_for_backward(h if keep_h else None, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias,
                          out_proj, y, x_dbl, checkpoints, None if keep_h else norm_r, None if keep_h else norm_w)
    ctx.chunk, ctx.norm_eps, ctx.h_dtype = chunk, norm_eps, h.dtype
    ctx.softplus_first = softplus_first
    ctx.set_materialize_grads(False)  # y, x_dbl and checkpoints get no gradient


def _backward(ctx, grad_out, _grad_y, _grad_x_dbl, _grad_checkpoints):
    if grad_out is None:
        return (None,) * 16
    (h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, y, x_dbl, checkpoints, norm_r,
     norm_w) = ctx.saved_tensors
    # out_proj: out = y @ out_proj^T; the scan gets dL/dy, its combined form
    grad_rows = grad_out.reshape(-1, grad_out.shape[-1])  # (batch * L, D)
    d_out_proj = grad_rows.t() @ y.reshape(-1, y.shape[-1])
    grad_y = (grad_out @ out_proj).transpose(1, 2)  # (batch, E, L), laid out (batch, L, E)
    del grad_rows
    # Recompute what the forward did not keep: h (when given r), xz (only as the views x, z), u and delta.
    if h is None:
        h = add_rmsnorm(norm_r, None, norm_w, ctx.norm_eps, ctx.h_dtype)[0]
    batch, length = h.shape[:2]
    inner, n_state = in_proj.shape[0] // 2, A.shape[-1]
    x, z = _split_xz(F.linear(h, in_proj), inner)
    u = conv1d_silu_bidir(x, conv_w, conv_b)
    dt_pad, dt_proj_pad, delta, B, C = _scan_operands(x_dbl, dt_proj_t, batch, length, n_state,
                                                      dt_bias if ctx.softplus_first else None)
    # dB and dC come as x_dbl-gradient rows [dB | dC] in x_dbl's dtype (BC_ROWS), dz as the two directions' terms
    # (DZ_HALVES)
    du, ddelta, dA, dB, dC, dD, dz, ddt_bias = bimamba_scan_bwd(
        grad_y, u, delta, A, B, C, D, z, dt_bias, checkpoints, True, True, ctx.chunk, dz_halves=DZ_HALVES,
        bc_rows_dtype=x_dbl.dtype if BC_ROWS else None, softplus_done=ctx.softplus_first)
    del delta, grad_y
    # dt_proj: delta_pre = dt_pad @ dt_proj_pad per direction (the pad rows' weight gradient is dropped)
    ddelta_rows = _tokens(ddelta)  # (2, batch * L, E)
    d_dt_proj_t = _weight_grad(dt_pad, ddelta_rows)[:, :dt_proj_t.shape[1]]
    d_dt_pad = torch.bmm(ddelta_rows, dt_proj_pad.transpose(1, 2))  # (2, batch * L, W - 2N), zero on the pad
    del ddelta, ddelta_rows
    # x_proj: x_dbl = tokens @ x_proj_t; its gradient in x_dbl's column order [dB | dC | d_dt | 0]
    if dC is None:  # BC_ROWS: dB holds the rows [dB | dC]
        d_x_dbl = torch.cat([dB, d_dt_pad.to(x_dbl.dtype)], -1)
    else:
        rows = lambda g: g.transpose(2, 3).reshape(2, batch * length, n_state).to(x_dbl.dtype)  # noqa: E731
        d_x_dbl = torch.cat([rows(dB), rows(dC), d_dt_pad.to(x_dbl.dtype)], -1)
    del dB, dC, d_dt_pad
    tokens = _tokens(u)
    d_x_proj_t = _weight_grad(tokens, d_x_dbl)  # (2, E, W)
    del u, tokens
    du_rows = _tokens(du)  # a view of du (laid out like u): the x_proj term is added in place by the GEMM
    du_rows.baddbmm_(d_x_dbl, x_proj_t.transpose(1, 2))
    del d_x_dbl, du_rows
    dx, d_conv_w, d_conv_b = conv1d_silu_bidir_bwd(du, x, conv_w, conv_b)
    del du
    # in_proj: xz = h @ in_proj^T with xz = [x | z]; the two halves' GEMMs instead of a concatenated dxz. With
    # DZ_HALVES dz comes as the two directions' terms laid out like u: rows [dz_0 | dz_1] of 2E, summed by the GEMMs.
    dx_rows = dx.transpose(1, 2).reshape(-1, inner)
    h_rows = h.reshape(-1, h.shape[-1])
    w_z = in_proj[inner:]
    if dz.dim() == 4:  # DZ_HALVES
        dz_rows = _tokens_2e(dz)
        dh = torch.addmm(dx_rows @ in_proj[:inner], dz_rows, torch.cat([w_z, w_z])).view(h.shape)
        d_w_z = _mm_fp32(dz_rows.t(), h_rows).view(2, inner, -1).sum(0).to(in_proj.dtype)
    else:
        dz_rows = dz.transpose(1, 2).reshape(-1, inner)
        dh = torch.addmm(dx_rows @ in_proj[:inner], dz_rows, w_z).view(h.shape)
        d_w_z = dz_rows.t() @ h_rows
    d_in_proj = torch.cat([dx_rows.t() @ h_rows, d_w_z])
    return (dh, d_in_proj, d_conv_w, d_conv_b, d_x_proj_t, d_dt_proj_t, dA.to(A.dtype), dD.to(D.dtype),
            ddt_bias.to(dt_bias.dtype), d_out_proj, None, None, None, None, None, None)


_bimamba_inner_op.register_autograd(_backward, setup_context=_setup_context)
_bimamba_inner_eager = eager_autograd("BimambaInnerFunction", _bimamba_inner_impl, _setup_context, _backward)


def bimamba_inner(h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, combine=False,
                  norm=None):
    """The Vim mixer from its normalized input to its output, for training. Contract and shapes:
    `bimamba_inner_ref` (same signature). h, in_proj, x_proj_t, dt_proj_t and out_proj share one dtype (the GEMMs
    run in it; cast them before, as autocast would); conv_w, conv_b in any float dtype; A, D, dt_bias fp32.
    combine=False: the scan writes the two gated halves and one add sums them (no fp32 atomics); combine=True:
    the scan adds them (fp32 atomics). Either way out_proj is a K = E GEMM on the sum and autograd
    keeps only their sum (batch, L, E). norm: None, or (r, weight, eps) with h == add_rmsnorm(r, None, weight, eps,
    h.dtype)[0] (kernels.rmsnorm; r the fp32 residual the norm returned): the backward then recomputes h from r,
    which the norm keeps anyway, instead of saving h. Differentiable in h and the weights (not through norm: it only
    says how to recompute h). Returns (batch, L, d_model) in h's dtype."""
    gemm = {t.dtype for t in (h, in_proj, x_proj_t, dt_proj_t, out_proj)}
    if len(gemm) != 1:
        raise ValueError(f"h, in_proj, x_proj_t, dt_proj_t and out_proj must share one dtype (cast them first); "
                         f"got {h.dtype}, {in_proj.dtype}, {x_proj_t.dtype}, {dt_proj_t.dtype}, {out_proj.dtype}")
    norm_r, norm_w, norm_eps = norm if norm is not None else (None, None, 0.0)
    tensors = (h, in_proj, conv_w, conv_b, x_proj_t, dt_proj_t, A, D, dt_bias, out_proj, norm_r, norm_w)
    args = (*tensors, float(norm_eps), bool(combine), CHECKPOINT_CHUNK, h.dtype in SOFTPLUS_BEFORE_SCAN_DTYPES)
    op = torch.ops.vimbench.bimamba_inner if traced(*tensors) else _bimamba_inner_eager
    return op(*args)[0]


__all__ = ["bimamba_inner"]
