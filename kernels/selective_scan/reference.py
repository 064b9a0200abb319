"""Selective scan (Mamba's S6 recurrence) in pure PyTorch: the spec, and the `torch` backend's op.

Math (per batch b, channel d, state n, token t; fp32 state), from ../shared/spec/vim_model.md:
    Delta = softplus(delta + delta_bias)
    h[t]  = exp(Delta[t] * A[d, n]) * h[t-1] + Delta[t] * B[n, t] * u[t]      (h[-1] = 0)
    y[t]  = sum_n C[n, t] * h[t] + D[d] * u[t]
    out   = y * SiLU(z)

`selective_scan_sequential` is that loop written literally (slow; for tests). `selective_scan_ref` computes the
same thing fast enough for 1248 px on a GPU: tokens are processed in blocks (bounded memory), and inside a block
in short chunks where the recurrence is solved in closed form with cumulative sums,
    h[t] = exp(S[t]) * (h_in + sum_{s<=t} exp(-S[s]) * Delta[s] B[s] u[s]),   S[t] = sum_{s<=t} Delta[s] A,
then chunk states are chained sequentially. exp(-S) grows along a chunk, so the chunk is kept short enough that
it cannot overflow fp32 (see `_safe_chunk`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Largest |S| allowed inside one chunk: exp(60) ~ 1e26 stays far from fp32's 3e38.
_MAX_CHUNK_EXPONENT = 60.0
_MAX_CHUNK = 16
# Tokens per block: bounds the (batch, E, block, N) temporaries.
_BLOCK_TOKENS = 512


def _prepare(u, delta, delta_bias, delta_softplus):
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u.float(), delta


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + D.float()[:, None] * u
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(out_dtype)


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                              reverse=False):
    """The recurrence as a literal loop over tokens, in float64. Same signature as `selective_scan_ref`."""
    out_dtype = u.dtype
    u64, d64 = u.double(), delta.double()
    if delta_bias is not None:
        d64 = d64 + delta_bias.double()[:, None]
    if delta_softplus:
        d64 = F.softplus(d64)
    A64, B64, C64 = A.double(), B.double(), C.double()
    batch, channels, length = u.shape
    h = torch.zeros(batch, channels, A.shape[1], dtype=torch.float64, device=u.device)
    y = torch.empty(batch, channels, length, dtype=torch.float64, device=u.device)
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        dt = d64[:, :, t, None]  # (b, E, 1)
        h = torch.exp(dt * A64) * h + dt * B64[:, None, :, t] * u64[:, :, t, None]
        y[:, :, t] = (h * C64[:, None, :, t]).sum(-1)
    if D is not None:
        y = y + D.double()[:, None] * u64
    if z is not None:
        y = y * F.silu(z.double())
    return y.to(out_dtype)


def _safe_chunk(delta: torch.Tensor, A: torch.Tensor) -> int:
    """Longest chunk (power of two, <= 16) over which sum(Delta * |A|) cannot exceed the exponent bound."""
    rate = float(delta.detach().max()) * float((-A.detach()).max().clamp_min(0))
    chunk = _MAX_CHUNK
    while chunk > 1 and chunk * rate > _MAX_CHUNK_EXPONENT:
        chunk //= 2
    return chunk


def _scan_states_block(u, delta, A, B, C, h, chunk):
    """One block of tokens. u, delta: (b, E, t) fp32; B, C: (b, N, t) fp32; h: (b, E, N) state in.

    Returns y (b, E, t) and the state after the block."""
    batch, channels, length = u.shape
    pad = (-length) % chunk
    # Padded steps are the identity of the recurrence: decay exp(0) = 1, input 0.
    if pad:
        u, delta = F.pad(u, (0, pad)), F.pad(delta, (0, pad))
        B, C = F.pad(B, (0, pad)), F.pad(C, (0, pad))
    n_chunks = (length + pad) // chunk
    n_state = A.shape[1]
    dA = (delta.unsqueeze(-1) * A[:, None, :]).view(batch, channels, n_chunks, chunk, n_state)
    Bt = B.transpose(1, 2).reshape(batch, 1, n_chunks, chunk, n_state)
    Ct = C.transpose(1, 2).reshape(batch, 1, n_chunks, chunk, n_state)
    dBu = (delta * u).view(batch, channels, n_chunks, chunk, 1) * Bt
    if chunk == 1:
        local, decay = dBu, torch.exp(dA)
    else:
        S = dA.cumsum(3)
        decay = torch.exp(S)
        local = decay * torch.cumsum(torch.exp(-S) * dBu, 3)
    del dA, dBu
    # Chain chunks: state entering chunk c is h_c; h_{c+1} = local_end_c + decay_end_c * h_c.
    local_end, decay_end = local[:, :, :, -1], decay[:, :, :, -1]  # (b, E, chunks, N)
    entering = []
    for c in range(n_chunks):
        entering.append(h)
        h = local_end[:, :, c] + decay_end[:, :, c] * h
    states = local + decay * torch.stack(entering, 2).unsqueeze(3)
    y = (states * Ct).sum(-1).view(batch, channels, n_chunks * chunk)[:, :, :length]
    return y, h


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False):
    """Selective scan, one direction.

    u, delta: (batch, E, L), fp32/fp16/bf16. A: (E, N) fp32. B, C: (batch, N, L). D, delta_bias: (E,) fp32 or None.
    z: (batch, E, L) or None (then no gating). reverse=True runs the recurrence from t = L-1 down to 0, equal to
    flipping every input along L, scanning and flipping the output back.
    Returns (batch, E, L) in u's dtype; state and accumulation in fp32.
    """
    out_dtype = u.dtype
    uf, dt = _prepare(u, delta, delta_bias, delta_softplus)
    Af, Bf, Cf = A.float(), B.float(), C.float()
    if reverse:
        uf_s, dt_s, Bf, Cf = uf.flip(-1), dt.flip(-1), Bf.flip(-1), Cf.flip(-1)
    else:
        uf_s, dt_s = uf, dt
    batch, channels, length = uf.shape
    chunk = _safe_chunk(dt_s, Af) if length else 1
    h = uf.new_zeros(batch, channels, Af.shape[1])
    pieces = []
    for start in range(0, length, _BLOCK_TOKENS):
        sl = slice(start, start + _BLOCK_TOKENS)
        y_block, h = _scan_states_block(uf_s[..., sl], dt_s[..., sl], Af, Bf[..., sl], Cf[..., sl], h, chunk)
        pieces.append(y_block)
    y = torch.cat(pieces, -1) if pieces else uf.new_zeros(batch, channels, 0)
    if reverse:
        y = y.flip(-1)
    return _finish(y, uf, D, z, out_dtype)


def bimamba_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, combine=True,
                     out=None):
    """Both directions of the Vim mixer core, gated: 0.5 * (y_fwd + y_bwd) * SiLU(z).

    Direction-stacked inputs (index 0 forward, 1 backward): u, delta (2, batch, E, L); A (2, E, N) fp32;
    B, C (2, batch, N, L) (views with any strides are fine); D, delta_bias (2, E) fp32 or None;
    z (batch, E, L) or None. combine=True returns (batch, E, L) in u's dtype. combine=False returns the gated
    halves 0.5 * y_dir * SiLU(z), (2, batch, E, L) in u's dtype, whose sum over dim 0 is the combined output,
    written to `out` if given (u's shape and dtype; may be u or delta itself), else to a new tensor laid out
    like u.
    """
    def pick(t, i):
        return None if t is None else t[i]

    # Each direction in fp32 so the average is rounded once, at the end.
    y_f = selective_scan_ref(u[0].float(), delta[0], A[0], B[0], C[0], pick(D, 0), None, pick(delta_bias, 0),
                             delta_softplus, reverse=False)
    y_b = selective_scan_ref(u[1].float(), delta[1], A[1], B[1], C[1], pick(D, 1), None, pick(delta_bias, 1),
                             delta_softplus, reverse=True)
    gate = 0.5 if z is None else 0.5 * F.silu(z.float())
    if combine:
        return ((y_f + y_b) * gate).to(u.dtype)
    halves = torch.empty_like(u) if out is None else out
    halves[0] = y_f * gate
    halves[1] = y_b * gate
    return halves


def bimamba_scan_bwd_ref(grad_out, u, delta, A, B, C, D=None, z=None, delta_bias=None, checkpoints=None,
                         delta_softplus=True, combine=True, chunk=64, **_launch):
    """Gradients of `bimamba_scan_ref` given grad_out, by autograd through it. Same signature and returns as
    `kernels.selective_scan.bwd.bimamba_scan_bwd`: (du like u, ddelta like delta, dA, dB, dC (2, batch, N, L),
    dD, dz like z, ddelta_bias); dA, dB, dC, dD, ddelta_bias in fp32; None for each absent optional input. The
    checkpoints, chunk and launch keywords (chunks_per_program) are accepted for the signature and unused: the
    reference recomputes every state."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
        out = bimamba_scan_ref(*leaves, delta_softplus=delta_softplus, combine=combine)
        present = [t for t in leaves if t is not None]
        grads = iter(torch.autograd.grad(out, present, grad_out.to(out.dtype)))
    got = [None if t is None else next(grads) for t in leaves]
    for i in (2, 3, 4, 5, 7):  # dA, dB, dC, dD, ddelta_bias: fp32, as the kernel returns them
        if got[i] is not None:
            got[i] = got[i].float()
    return tuple(got)
