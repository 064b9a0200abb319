"""Selective scan in Triton: one direction (`selective_scan`) and both Vim directions in one launch (`bimamba_scan`).

Same signatures and semantics as `reference.py` (the spec). Design (see shared/spec/kernels.md):

- Grid (E / BLOCK_C, directions, batch). A program owns BLOCK_C channels of one (batch, direction); lanes run over
  channels and each thread keeps its channel's whole state h (N fp32 values) in registers.
- Tokens are stepped through one at a time, two per loop trip, descending for the backward direction; each step
  loads that token's (C,) slice of u, delta, z and its (N,) column of B and C directly, so no layout conversion
  is needed. No associative scan (so no reverse scan, which has had bug reports) and no flipped
  copies. Per (token, channel, state) element: one ex2, two multiplies, two FMA-class ops.
- The next trip's loads are issued before this trip's arithmetic: without that, every trip waited a full memory
  round trip and the kernel ran ~2x slower. Channel-last tensors (channel stride 1, as the Vim model lays them
  out) make each per-token load one coalesced access. kernels/NOTES.md has each version's H200 timing.
- a = exp2(Delta * A * log2(e)); masked tokens are the identity (a = 1, b = 0) because Delta and u are zeroed
  after the softplus, not before.
- Both directions add 0.5 * y * SiLU(z) into one fp32 buffer with relaxed atomics. Two fp32 additions onto a zeroed
  buffer do not depend on their order (0 + a + b == 0 + b + a), so the result is deterministic; bf16/fp16 outputs
  are rounded once from that sum.
- Program ids are widened to int64 before multiplying strides; L is not specialized on.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
SOFTPLUS_THRESHOLD = tl.constexpr(20.0)


@triton.jit
def _log2(x, USE_ASM: tl.constexpr):
    # tl.log2 compiles to a long libdevice polynomial; the MUFU's lg2.approx (abs error ~2^-22) is enough here.
    # The interpreter cannot run inline asm, hence the switch.
    if USE_ASM:
        return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
    else:
        return tl.log2(x)


@triton.jit
def _softplus(x, USE_ASM: tl.constexpr):
    """softplus(x) = log1p(exp(x)), x itself above 20 (torch's threshold). log1p by a short series for small
    arguments, where log(1 + w) would lose the low bits of w."""
    w = tl.exp(tl.minimum(x, SOFTPLUS_THRESHOLD))
    series = w * (1.0 - w * (0.5 - w * (0.333333333333 - w * (0.25 - w * 0.2))))
    lp = tl.where(w < 0.0625, series, _log2(1.0 + w, USE_ASM) * LN2)
    return tl.where(x > SOFTPLUS_THRESHOLD, x, lp)


# stride_A_n is not specialized: a contiguous (N, C) load of A would make Triton spread lanes over the states,
# and that layout would propagate to the state tile (cross-lane sums); lanes must run over channels.
@triton.jit(do_not_specialize=["L", "stride_A_n"])
def _scan_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr,
    E, L, dir_first, out_scale,
    stride_u_dir, stride_u_b, stride_u_e, stride_u_l,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_B_dir, stride_B_b, stride_B_n, stride_B_l,
    stride_C_dir, stride_C_b, stride_C_n, stride_C_l,
    stride_D_dir, stride_bias_dir,
    stride_z_b, stride_z_e, stride_z_l,
    stride_out_b, stride_out_e, stride_out_l,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, PREFETCH: tl.constexpr,
):
    """One program: BLOCK_C channels (one per lane) of one (direction, batch). Each lane keeps its channel's N
    states in registers and steps through the tokens one at a time, two per loop trip, loading each token's
    (BLOCK_C,) slice of u, delta, z and the (N,) column of B and C directly: no layout conversions. With
    channel-last tensors (stride_*_e == 1, the layout the Vim model uses) those loads are coalesced."""
    pid_c = tl.program_id(0)
    direction = tl.program_id(1).to(tl.int64)  # index into the direction-stacked inputs
    backward = (tl.program_id(1) + dir_first) == 1  # tokens run from L-1 down to 0
    pid_b = tl.program_id(2).to(tl.int64)

    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (C,)
    mask_c = offs_c < E
    c64 = offs_c.to(tl.int64)
    states = tl.arange(0, N_STATE)  # (N,)
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e
    dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e
    B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n
    C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e
    out_base = out_ptr + pid_b * stride_out_b + c64 * stride_out_e

    # (N, C), pre-scaled so that exp(Delta * A) = exp2(Delta * A2)
    A2 = tl.load(A_ptr + direction * stride_A_dir + c64[None, :] * stride_A_e + states[:, None] * stride_A_n,
                 mask=mask_c[None, :], other=0.0) * LOG2E
    D_row = tl.zeros((BLOCK_C,), dtype=tl.float32)
    bias_row = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_D:
        D_row = tl.load(D_ptr + direction * stride_D_dir + c64, mask=mask_c, other=0.0)
    if HAS_BIAS:
        bias_row = tl.load(bias_ptr + direction * stride_bias_dir + c64, mask=mask_c, other=0.0)

    h = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    # Two tokens per loop trip. The loads of the next trip are issued before this trip's arithmetic, so their
    # latency (hundreds of cycles from HBM) overlaps the recurrence instead of stalling every token.
    args = (u_base, dt_base, z_base, B_base, C_base, L, backward, mask_c,
            stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l)
    u0, dt0, z0, B0, C0 = _load_token(0, *args, HAS_Z)
    u1, dt1, z1, B1, C1 = _load_token(1, *args, HAS_Z)
    for k in range(0, tl.cdiv(L, 2)):
        step = 2 * k
        if PREFETCH:
            nu0, ndt0, nz0, nB0, nC0 = _load_token(step + 2, *args, HAS_Z)
            nu1, ndt1, nz1, nB1, nC1 = _load_token(step + 3, *args, HAS_Z)
        else:
            nu0, ndt0, nz0, nB0, nC0 = u0, dt0, z0, B0, C0
            nu1, ndt1, nz1, nB1, nC1 = u1, dt1, z1, B1, C1
        h = _token_step(h, step, u0, dt0, z0, B0, C0, A2, D_row, bias_row, out_base, stride_out_l, L, backward,
                        mask_c, out_scale, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM)
        h = _token_step(h, step + 1, u1, dt1, z1, B1, C1, A2, D_row, bias_row, out_base, stride_out_l, L,
                        backward, mask_c, out_scale, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM)
        if PREFETCH:
            u0, dt0, z0, B0, C0 = nu0, ndt0, nz0, nB0, nC0
            u1, dt1, z1, B1, C1 = nu1, ndt1, nz1, nB1, nC1
        else:
            u0, dt0, z0, B0, C0 = _load_token(step + 2, *args, HAS_Z)
            u1, dt1, z1, B1, C1 = _load_token(step + 3, *args, HAS_Z)


@triton.jit
def _token_position(step, L, backward, mask_c):
    t = tl.where(backward, L - 1 - step, step)
    valid = step < L
    return t, valid, mask_c & valid


@triton.jit
def _load_token(step, u_base, dt_base, z_base, B_base, C_base, L, backward, mask_c,
                stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, HAS_Z: tl.constexpr):
    """Token `step` (in scan order) of u, delta, z: (C,) each, and of B, C: (N,) each, in fp32; zeros past L."""
    t, valid, mask = _token_position(step, L, backward, mask_c)
    u = tl.load(u_base + t * stride_u_l, mask=mask, other=0.0).to(tl.float32)
    dt = tl.load(dt_base + t * stride_dt_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_base + t * stride_z_l, mask=mask, other=0.0).to(tl.float32)
    else:
        z = u
    Bt = tl.load(B_base + t * stride_B_l, mask=valid, other=0.0).to(tl.float32)
    Ct = tl.load(C_base + t * stride_C_l, mask=valid, other=0.0).to(tl.float32)
    return u, dt, z, Bt, Ct


@triton.jit
def _token_step(h, step, u, dt, z, Bt, Ct, A2, D_row, bias_row, out_base, stride_out_l, L, backward, mask_c,
                out_scale, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr, USE_ASM: tl.constexpr):
    """One token of the recurrence for the (N, C) state h; writes that token's output and returns h."""
    t, valid, mask = _token_position(step, L, backward, mask_c)
    if HAS_BIAS:
        dt = dt + bias_row
    if SOFTPLUS:
        dt = _softplus(dt, USE_ASM)
    dt = tl.where(mask, dt, 0.0)  # after the softplus: masked steps must be the identity (a=1, b=0)
    h = tl.exp2(A2 * dt[None, :]) * h + Bt[:, None] * (dt * u)[None, :]
    y = tl.sum(Ct[:, None] * h, axis=0)  # (C,): the states are in-thread, no shuffles
    if HAS_D:
        y += D_row * u
    if HAS_Z:
        y = y * z * tl.sigmoid(z)
    if ATOMIC:
        tl.atomic_add(out_base + t * stride_out_l, y * out_scale, mask=mask, sem="relaxed")
    else:
        tl.store(out_base + t * stride_out_l, y.to(out_base.dtype.element_ty), mask=mask)
    return h


def _interpreted(kernel) -> bool:
    # Under TRITON_INTERPRET=1, @triton.jit returns an InterpretedFunction (decided at import time).
    return type(kernel).__name__ == "InterpretedFunction"


def _config(device: torch.device, interpreted: bool) -> dict:
    if device.type == "cpu":
        if not interpreted:
            raise RuntimeError("Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before importing "
                               "kernels to run them on CPU")
        # Small tiles so that tests exercise channel masks and several programs.
        return dict(BLOCK_C=8, num_warps=1, PREFETCH=True, interpreted=True)
    return dict(BLOCK_C=32, num_warps=1, PREFETCH=True, interpreted=False)


def _blocks_for(programs_at_32: int) -> int:
    """Channels per program: 32 (one warp, one channel per lane); 16 when 32 would leave most SMs idle
    (batch 1: a B=1, E=384 bidirectional scan is only 24 one-warp programs)."""
    return 16 if programs_at_32 < 264 else 32


def _check(u, delta, A, B, C, n_dir: int | None):
    lead = (n_dir,) if n_dir else ()
    if u.dim() != len(lead) + 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be {'(2, ' if n_dir else '('}batch, E, L); got "
                         f"{tuple(u.shape)} and {tuple(delta.shape)}")
    batch, channels, length = u.shape[-3:]
    n_state = A.shape[-1]
    if tuple(A.shape) != lead + (channels, n_state):
        raise ValueError(f"A must be {lead + (channels, n_state)}; got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != lead + (batch, n_state, length):
            raise ValueError(f"{name} must be {lead + (batch, n_state, length)}; got {tuple(t.shape)}")
    if n_state & (n_state - 1):
        raise ValueError(f"the state size must be a power of two; got {n_state}")


def _launch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out, dir_first, n_dir, out_scale, atomic):
    """u, delta: (dirs, batch, E, L); A: (dirs, E, N); B, C: (dirs, batch, N, L); D, delta_bias: (dirs, E);
    z, out: (batch, E, L). Stacked index i runs backward when i + dir_first == 1."""
    _, batch, channels, length = u.shape
    cfg = _config(u.device, _interpreted(_scan_kernel))
    if not cfg["interpreted"]:
        cfg["BLOCK_C"] = _blocks_for(triton.cdiv(channels, 32) * n_dir * batch)
    if length == 0 or batch == 0 or channels == 0:
        return out
    grid = (triton.cdiv(channels, cfg["BLOCK_C"]), n_dir, batch)
    has_d, has_z, has_bias = D is not None, z is not None, delta_bias is not None
    dummy = A  # any valid pointer for absent optional inputs; never read
    Dt = D if has_d else dummy
    zt = z if has_z else out
    bt = delta_bias if has_bias else dummy
    if has_d and D.stride(-1) != 1:
        Dt = D.contiguous()
    if has_bias and delta_bias.stride(-1) != 1:
        bt = delta_bias.contiguous()
    _scan_kernel[grid](
        u, delta, A, B, C, Dt, zt, bt, out,
        channels, length, dir_first, out_scale,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
        Dt.stride(0) if has_d else 0, bt.stride(0) if has_bias else 0,
        *zt.stride(), *out.stride(),
        N_STATE=A.shape[-1], BLOCK_C=cfg["BLOCK_C"],
        HAS_D=has_d, HAS_Z=has_z, HAS_BIAS=has_bias, SOFTPLUS=bool(delta_softplus), ATOMIC=atomic,
        USE_ASM=not cfg["interpreted"], PREFETCH=cfg["PREFETCH"],
        num_warps=cfg["num_warps"],
    )
    return out


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False):
    """Selective scan, one direction; same contract as `selective_scan_ref`.

    u, delta: (batch, E, L), fp32/fp16/bf16, any strides. A: (E, N) fp32. B, C: (batch, N, L), any strides.
    D, delta_bias: (E,) fp32 or None. z: (batch, E, L) or None. reverse=True runs the recurrence from t = L-1 down
    to 0. Returns (batch, E, L) in u's dtype and memory layout; state and accumulation in fp32.
    """
    _check(u, delta, A, B, C, None)
    out = torch.empty_like(u)  # same layout as u (channel-last stays channel-last)
    A = A.float()
    D = None if D is None else D.float()
    delta_bias = None if delta_bias is None else delta_bias.float()
    return _launch(u[None], delta[None], A[None], B[None], C[None],
                   None if D is None else D[None], z, None if delta_bias is None else delta_bias[None],
                   delta_softplus, out, dir_first=int(bool(reverse)), n_dir=1, out_scale=1.0, atomic=False)


def bimamba_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True):
    """Both Vim directions in one launch, combined and gated: 0.5 * (y_fwd + y_bwd) * SiLU(z).

    Same contract as `bimamba_scan_ref`. Direction-stacked inputs (index 0 forward, 1 backward):
    u, delta (2, batch, E, L) fp32/fp16/bf16; A (2, E, N) fp32; B, C (2, batch, N, L), any strides (views of
    x_dbl are fine); D, delta_bias (2, E) fp32 or None; z (batch, E, L) or None.
    Returns (batch, E, L) in u's dtype, laid out like u[0]. No flipped copies: the backward direction reads tokens from
    the right.
    """
    _check(u, delta, A, B, C, 2)
    out32 = torch.zeros_like(u[0], dtype=torch.float32)  # same layout as u; both directions add into it
    A = A.float()
    D = None if D is None else D.float()
    delta_bias = None if delta_bias is None else delta_bias.float()
    _launch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out32, dir_first=0, n_dir=2, out_scale=0.5,
            atomic=True)
    return out32 if u.dtype == torch.float32 else out32.to(u.dtype)
