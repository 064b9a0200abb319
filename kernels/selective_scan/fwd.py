"""Selective scan in Triton: one direction (`selective_scan`) and both Vim directions in one launch (`bimamba_scan`).

Same signatures and semantics as `reference.py` (the spec). Design (see shared/spec/kernels.md):

- Grid (E / BLOCK_C, directions, batch). A program owns BLOCK_C channels of one (batch, direction); lanes run over
  channels and each thread keeps its channel's whole state h (N fp32 values) in registers. That layout is the
  compiler's default; A is loaded as N (C,) rows because a 2D load of it lets Triton 3.6 put lanes on the states
  (then every token pays cross-lane sums). Check with `vimbench kernels static` under the Triton that benchmarks.
- Tokens are stepped through one at a time, two per loop trip, descending for the backward direction; each step
  loads that token's (C,) slice of u, delta, z and its (N,) rows of B and C directly: no flipped copies, and no
  reverse associative scan (which has had bug reports). Per (token, channel, state) element: one ex2, two
  multiplies, two FMAs. B and C rows that start 16-element aligned (the model's x_dbl layout,
  vimbench.layout.XDblLayout) load as vectors; fp32 B and C need no unpacking.
- Small grids (batch 1-8 at 224 px) run `_scan_blocks_kernel` instead: blocks of 8-16 tokens, the recurrence as a
  forward in-thread associative scan over each block (its tokens taken in scan order, so the backward direction
  needs no reverse scan either), the sums over the states of the block's outputs together.
- The next trip's loads are issued before this trip's arithmetic: without that, every trip waited a full memory
  round trip. Trips whose tokens all lie inside L run without token masks; the last one or two run masked.
  Channel-last tensors (channel stride 1, as the Vim model lays them out) make each per-token load coalesced.
- a = exp2(Delta * A * log2(e)); masked tokens are the identity (a = 1, b = 0) because Delta and u are zeroed
  after the softplus, not before.
- Directions: `bimamba_scan(combine=False)` writes each direction's gated half 0.5 * y * SiLU(z) to its own
  output (what the bf16 model uses: out_proj adds them). combine=True adds both into one fp32 buffer with relaxed
  atomics; two fp32 additions onto zero do not depend on their order, so the result is deterministic.
- Program ids are widened to int64 before multiplying strides; token indices times the L strides stay 32-bit
  (`runtime.check_token_offsets` checks that they fit). L is not specialized on.
kernels/NOTES.md has each version's H200 timing.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kernels import fastmath
from kernels.launch import BufferSpec, CallMemo, launch
from kernels.runtime import (LaunchConfig, cdiv, check_device, check_token_offsets, interpreted_block_c, sm_count,
                             strides)

LOG2E = fastmath.LOG2E
LN2 = tl.constexpr(0.6931471805599453)
SOFTPLUS_THRESHOLD = tl.constexpr(20.0)
# softplus(x) = max(x, 0) + log1p(e^-|x|) with log1p on (0, 1] as a polynomial (FMA pipe) instead of the MUFU's lg2:
# one MUFU instruction per (token, channel) fewer in every 16-bit scan kernel, whose loops are near the MUFU's
# throughput (kernels/NOTES.md, "Session o"). y q(y), q of degree 7 fitted to log1p(y) / y at Chebyshev nodes on
# [0, 1]: evaluated in fp32 by Horner, relative error <= 3.7e-7 against log1p (the lg2.approx form: ~3e-6 near its
# series switch). VIMBENCH_SOFTPLUS_POLY=0 at import restores the lg2 form (a module constant: Triton keys its
# compiled kernels on it, so it cannot change inside a process).
SOFTPLUS_LOG1P_POLY = tl.constexpr(os.environ.get("VIMBENCH_SOFTPLUS_POLY", "1") != "0")
LOG1P_Q = (0.9999998211860657, -0.49997448921203613, 0.3327617645263672, -0.2449961155653, 0.17757023870944977,
           -0.10785368084907532, 0.044214192777872086, -0.008574675768613815)
_Q0, _Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7 = (tl.constexpr(c) for c in LOG1P_Q)  # (jit code reads constexpr globals)
_SCAN_MEMO = CallMemo("bimamba_scan")  # eager calls replayed by signature (kernels/launch.py)


@triton.jit
def _softplus(x, USE_ASM: tl.constexpr, APPROX_EXP: tl.constexpr = True):
    """softplus(x) = log1p(exp(x)), x itself above 20 (torch's threshold). With APPROX_EXP and SOFTPLUS_LOG1P_POLY:
    max(x, 0) + log1p(e^-|x|), one ex2 and a polynomial (`_softplus_sigmoid`); else log1p by a short series for
    small arguments (where log(1 + w) would lose the low bits of w) and the lg2 above them."""
    if APPROX_EXP and SOFTPLUS_LOG1P_POLY:
        return _softplus_sigmoid(x, USE_ASM, False)[0]
    return _softplus_exp(x, USE_ASM, APPROX_EXP)[0]


@triton.jit
def _log1p_unit(y):
    """log1p(y) for y in [0, 1]: y q(y) by Horner (LOG1P_Q), FMAs only."""
    q = y * _Q7 + _Q6
    q = q * y + _Q5
    q = q * y + _Q4
    q = q * y + _Q3
    q = q * y + _Q2
    q = q * y + _Q1
    q = q * y + _Q0
    return y * q


@triton.jit
def _softplus_sigmoid(x, USE_ASM: tl.constexpr, SLOPE: tl.constexpr):
    """(softplus(x), sigmoid(x) if SLOPE else x) from one ex2: e = e^-|x| in (0, 1] (0 far out, where softplus is
    x or 0), softplus = max(x, 0) + log1p(e), sigmoid = (1 or e) / (1 + e)."""
    e = fastmath.exp(-tl.abs(x), USE_ASM)
    sp = tl.maximum(x, 0.0) + _log1p_unit(e)
    if SLOPE:
        return sp, tl.where(x >= 0, 1.0, e) * fastmath.reciprocal(1.0 + e, USE_ASM)
    return sp, x


@triton.jit
def _softplus_exp(x, USE_ASM: tl.constexpr, APPROX_EXP: tl.constexpr = True):
    """(softplus(x), w) with w = exp(min(x, 20)): the backward's slope sigmoid(x) = w / (1 + w) reuses w.
    APPROX_EXP=False keeps Triton's own exp (lg2 stays the MUFU's with USE_ASM)."""
    w = fastmath.exp(tl.minimum(x, SOFTPLUS_THRESHOLD), USE_ASM and APPROX_EXP)
    series = w * (1.0 - w * (0.5 - w * (0.333333333333 - w * (0.25 - w * 0.2))))
    lp = tl.where(w < 0.0625, series, fastmath.log2(1.0 + w, USE_ASM) * LN2)
    return tl.where(x > SOFTPLUS_THRESHOLD, x, lp), w


@triton.constexpr_function
def _rank_tile(n):
    """Ranks per tile for a fused dt_proj of rank n: a power of two (tile sizes must be), at least 32. A 32-wide
    row loads one value per lane and reaches every lane through shared memory; a 16-wide one (Vim-Ti, R = 12)
    was loaded into every lane's registers, and under Triton 3.6 the scan then took 255 registers (168 with
    32; the unfused scan takes 168). Ranks past R are masked in the sum, so they cost no FMAs."""
    return max(32, 1 << (int(n) - 1).bit_length())


@triton.constexpr_function
def _rank_tile_blocks(n):
    """Ranks per tile of the token-block scan's fused dt_proj (rank n): a power of two (tile sizes must be), at least
    16, so that the tests' small ranks compile the tile of Vim-Ti's R = 12. Ranks past n are loaded as zeros."""
    return max(16, 1 << (int(n) - 1).bit_length())


@triton.jit(do_not_specialize=["L"])
def _scan_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr, dtw_ptr,
    E, L, dir_first, out_scale,
    stride_u_dir, stride_u_b, stride_u_e, stride_u_l: tl.constexpr,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l: tl.constexpr,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_B_dir, stride_B_b, stride_B_n, stride_B_l: tl.constexpr,
    stride_C_dir, stride_C_b, stride_C_n, stride_C_l: tl.constexpr,
    stride_D_dir, stride_bias_dir,
    stride_z_b, stride_z_e, stride_z_l: tl.constexpr,
    stride_out_dir, stride_out_b, stride_out_e, stride_out_l: tl.constexpr,
    stride_dtw_dir, stride_dtw_e, stride_dtw_r,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, MASK_C: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, SAVE_EVERY: tl.constexpr,
    DT_RANK: tl.constexpr = 0, L1_AHEAD: tl.constexpr = 0, UNROLL_TRIPS: tl.constexpr = False,
):
    """One program: BLOCK_C channels (one per lane) of one (direction, batch). Each lane keeps its channel's N
    states in registers and steps through the tokens one at a time, two per loop trip, loading each token's
    (BLOCK_C,) slice of u, delta, z and the (N,) column of B and C directly: no layout conversions. With
    channel-last tensors (stride_*_e == 1, the layout the Vim model uses) those loads are coalesced; with B and C
    rows 16-element aligned (stride_B_n == 1, stride_B_l a multiple of 16) each row is a few vector loads.

    MASK_C: E is not a multiple of BLOCK_C, so channel lanes need masks. Trips whose tokens (and prefetched
    tokens) all lie inside L run without token masks; the last one or two trips run masked.
    SAVE_EVERY: 0, or an even K: also store the fp32 state entering every K-th scan step (the checkpoints the
    backward pass restarts from) to ckpt_ptr, laid out (dirs, batch, cdiv(L, K), N, E) contiguous.
    DT_RANK: 0, or R > 0: dt_proj fused. delta_ptr then holds the low-rank dt (dirs, batch, R, L), stride_dt_e
    being its stride along R, and each token's (C,) delta is sum_r dt_low[r] * W[c, r] with W = dtw_ptr
    (dirs, E, R): the token's R values load like its B and C rows (broadcast over the lanes), the program's
    (R, C) slice of W stays in registers, and R FMAs per channel replace the delta load.
    L1_AHEAD: 0, or D > 0: each main-loop trip also asks L1 for the lines of the two tokens D scan steps past the
    ones it loads (`prefetch.global.L1`, no registers): ptxas sinks the register prefetch of the next trip's
    tokens to the end of the trip (register pressure), so those loads otherwise wait on HBM (kernels/NOTES.md,
    "Nsight Compute on the scan").
    The token strides (stride_*_l) are constexpr and the walk is compiled once per direction (`_walk`): the main
    trips address everything from one multiply-add per pointer (kernels/NOTES.md, "The forward scan's addressing").
    UNROLL_TRIPS: the main loop runs two trips per iteration.
    ATOMIC: 0 (False) store the output; 1 (True) add it into fp32 out with atomics; 2 add the value already in out
    (which an earlier launch of the other direction stored: `bimamba_scan_fwd_save(ordered_sum=True)`) and store."""
    pid_c = tl.program_id(0)
    direction = tl.program_id(1).to(tl.int64)  # index into the direction-stacked inputs (and the output)
    backward = (tl.program_id(1) + dir_first) == 1  # tokens run from L-1 down to 0
    pid_b = tl.program_id(2).to(tl.int64)

    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (C,)
    mask_c = offs_c < E
    c64 = offs_c.to(tl.int64)
    states = tl.arange(0, N_STATE)  # (N,)
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e
    if DT_RANK > 0:
        ranks = tl.arange(0, _rank_tile(DT_RANK))  # (R_PAD,); ranks past R are masked off
        dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + ranks * stride_dt_e
    else:
        dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e
    B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n
    C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e
    out_base = out_ptr + direction * stride_out_dir + pid_b * stride_out_b + c64 * stride_out_e

    A2 = decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE, BLOCK_C)
    D_row, bias_row = channel_rows(D_ptr, bias_ptr, direction, stride_D_dir, stride_bias_dir, c64, mask_c, HAS_D,
                                   HAS_BIAS, BLOCK_C)
    if DT_RANK > 0:
        # (R_PAD, C) slice of W, from R (C,) row loads for the same reason as A; rows past R stay zero.
        W_dt = tl.zeros((_rank_tile(DT_RANK), BLOCK_C), dtype=tl.float32)
        W_rows = dtw_ptr + direction * stride_dtw_dir + c64 * stride_dtw_e
        for r in tl.static_range(DT_RANK):
            w_r = tl.load(W_rows + r * stride_dtw_r, mask=mask_c, other=0.0).to(tl.float32)
            W_dt = tl.where(ranks[:, None] == r, w_r[None, :], W_dt)
    else:
        W_dt = 0.0

    # (C,) pointers to this program's channels in checkpoint slot 0, row 0.
    ckpt_lanes = ckpt_ptr + c64
    if SAVE_EVERY > 0:
        ckpt_lanes += (direction * tl.num_programs(2) + pid_b) * tl.cdiv(L, SAVE_EVERY) * N_STATE * E
    if L1_AHEAD > 0:  # (C,) pointers to the rows every lane reads whole (B, C, fused dt): one line per row
        zero_c = offs_c * 0
        row_lanes = (B_ptr + direction * stride_B_dir + pid_b * stride_B_b + zero_c,
                     C_ptr + direction * stride_C_dir + pid_b * stride_C_b + zero_c,
                     delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + zero_c)
    else:
        row_lanes = (B_base, C_base, dt_base)  # unused
    # Main trips: every token they load (2k + 2, 2k + 3) or prefetch (L1_AHEAD further) lies inside L.
    main_trips = tl.maximum((L - 2 - L1_AHEAD) // 2, 0) if PREFETCH else 0
    # The walk in two copies, one per direction (a uniform branch per program): with the direction known at compile
    # time, and the token strides constexpr, the addresses of a trip's second token and of the L1 prefetches are
    # immediate offsets from the first token's instead of a multiply and a 64-bit add per pointer and token.
    # (A tuple of the constexpr flags would reach `_walk` as tensors under triton 3.6, so they are written out.)
    walk_args = (u_base, dt_base, z_base, B_base, C_base, out_base, ckpt_lanes, row_lanes, A2, D_row, bias_row, W_dt,
                 mask_c, E, L, main_trips, 0, out_scale, tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32))
    if backward:
        _walk(*walk_args, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l, True, N_STATE,
              BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, PREFETCH, SAVE_EVERY, MASK_C, DT_RANK,
              L1_AHEAD, UNROLL_TRIPS)
    else:
        _walk(*walk_args, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l, False, N_STATE,
              BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, PREFETCH, SAVE_EVERY, MASK_C, DT_RANK,
              L1_AHEAD, UNROLL_TRIPS)


@triton.jit
def decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE: tl.constexpr,
                BLOCK_C: tl.constexpr):
    """A * log2(e) as an (N, C) tile (so that exp(Delta * A) = exp2(Delta * A2)) from N (C,) row loads: given a 2D
    load without contiguity, Triton 3.6's coalescing pass puts 16 lanes on the state axis (ties broken towards dim
    0), that layout spreads to the whole state tile, and every token then pays cross-lane sums (128 shuffles per
    loop trip on sm_90); row loads leave the default layout, lanes on channels. The forward kernels' prologue."""
    states = tl.arange(0, N_STATE)
    A2 = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    A_rows = A_ptr + direction * stride_A_dir + c64 * stride_A_e
    for n in tl.static_range(N_STATE):
        a_n = tl.load(A_rows + n * stride_A_n, mask=mask_c, other=0.0) * LOG2E
        A2 = tl.where(states[:, None] == n, a_n[None, :], A2)
    return A2


@triton.jit
def channel_rows(D_ptr, bias_ptr, direction, stride_D_dir, stride_bias_dir, c64, mask_c, HAS_D: tl.constexpr,
                 HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr):
    """A program's (C,) rows of D and of the delta bias for one direction, fp32; zeros where absent (HAS_D,
    HAS_BIAS) and on masked lanes. Every scan kernel's prologue (forward, chunked, backward)."""
    D_row = tl.zeros((BLOCK_C,), dtype=tl.float32)
    bias_row = tl.zeros((BLOCK_C,), dtype=tl.float32)
    if HAS_D:
        D_row = tl.load(D_ptr + direction * stride_D_dir + c64, mask=mask_c, other=0.0)
    if HAS_BIAS:
        bias_row = tl.load(bias_ptr + direction * stride_bias_dir + c64, mask=mask_c, other=0.0)
    return D_row, bias_row


@triton.jit
def _affine_combine(a_prev, b_prev, a_next, b_next):
    """Two recurrence steps h -> a h + b composed, the earlier first: h -> a_next (a_prev h + b_prev) + b_next."""
    return a_prev * a_next, a_next * b_prev + b_next


@triton.jit(do_not_specialize=["L"])
def _scan_blocks_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr, dtw_ptr,
    E, L, dir_first, out_scale,
    stride_u_dir, stride_u_b, stride_u_e, stride_u_l: tl.constexpr,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l: tl.constexpr,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_B_dir, stride_B_b, stride_B_n, stride_B_l: tl.constexpr,
    stride_C_dir, stride_C_b, stride_C_n, stride_C_l: tl.constexpr,
    stride_D_dir, stride_bias_dir,
    stride_z_b, stride_z_e, stride_z_l: tl.constexpr,
    stride_out_dir, stride_out_b, stride_out_e, stride_out_l: tl.constexpr,
    stride_dtw_dir, stride_dtw_e, stride_dtw_r,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, MASK_C: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, SAVE_EVERY: tl.constexpr,
    DT_RANK: tl.constexpr = 0, L1_AHEAD: tl.constexpr = 0, UNROLL_TRIPS: tl.constexpr = False,
    TOKEN_BLOCK: tl.constexpr = 16,
):
    """`_scan_kernel`'s contract (same arguments) for small grids, where one program's walk is the kernel's time:
    the tokens in blocks of TOKEN_BLOCK instead of one at a time. Per block, as (T, N, C) tiles (T in each thread's
    registers, N and C over the lanes: 32 / BLOCK_C lanes share a channel's states): softplus, the decays and the
    inputs of all T tokens at once, the recurrence as an in-thread scan over T (`_affine_combine`, the entering
    state folded into the first token), then the outputs' sums over the states for all T tokens together (T
    independent shuffle trees) and one (T, C) store. The token walk (`_scan_kernel`) pays each token's chain in
    full: softplus, the decay's ex2, the state update, four shuffle levels, the gate and the store, ~240 cycles
    per token at batch 1 with nothing else on the SM to hide it (kernels/NOTES.md, "Small grids"). The next
    block's loads are issued before this block's arithmetic. Inference only: no checkpoints (SAVE_EVERY), no
    ordered sum (ATOMIC 2).
    DT_RANK > 0 (dt_proj fused, as in `_scan_kernel`): each block loads its (R_PAD, T) tile of the low-rank dt
    (`_rank_tile_blocks`) and forms the (T, C) delta as the (R_PAD, T, C) products summed over the ranks, which the
    compiler keeps in each thread (ranks first: a (T, R_PAD, C) form put them over the lanes, and its sum came out
    replicated over the state lanes, so the softplus ran 16 times per thread; kernels/NOTES.md, "Session t"). The
    program's (R_PAD, C) slice of W is loaded once. No delta tensor, no dt_proj GEMM, no dt cast before the scan."""
    tl.static_assert(SAVE_EVERY == 0, "the token-block scan takes no checkpoints")
    tl.static_assert(ATOMIC != 2, "the token-block scan has no ordered sum")
    pid_c = tl.program_id(0)
    direction = tl.program_id(1).to(tl.int64)
    backward = (tl.program_id(1) + dir_first) == 1  # tokens run from L-1 down to 0
    pid_b = tl.program_id(2).to(tl.int64)

    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)  # (C,)
    mask_c = offs_c < E
    c64 = offs_c.to(tl.int64)
    states = tl.arange(0, N_STATE)  # (N,)
    steps = tl.arange(0, TOKEN_BLOCK)  # (T,)
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e
    if DT_RANK > 0:
        ranks = tl.arange(0, _rank_tile_blocks(DT_RANK))  # (R_PAD,); ranks past R load as zeros
        dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + ranks * stride_dt_e
        W_dt = tl.load(dtw_ptr + direction * stride_dtw_dir + c64[None, :] * stride_dtw_e
                       + ranks[:, None] * stride_dtw_r, mask=(ranks[:, None] < DT_RANK) & mask_c[None, :],
                       other=0.0).to(tl.float32)  # (R_PAD, C)
    else:
        dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e
        W_dt = 0.0
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e
    out_base = out_ptr + direction * stride_out_dir + pid_b * stride_out_b + c64 * stride_out_e
    B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n
    C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n

    A2 = decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE, BLOCK_C)
    D_row, bias_row = channel_rows(D_ptr, bias_ptr, direction, stride_D_dir, stride_bias_dir, c64, mask_c, HAS_D,
                                   HAS_BIAS, BLOCK_C)
    APPROX: tl.constexpr = USE_ASM and out_ptr.dtype.element_ty != tl.float32

    h = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    blocks = tl.cdiv(L, TOKEN_BLOCK)
    cur = _load_token_block(0, steps, L, backward, mask_c, u_base, dt_base, z_base, B_base, C_base, stride_u_l,
                            stride_dt_l, stride_z_l, stride_B_l, stride_C_l, HAS_Z, DT_RANK)
    for k in range(blocks):
        nxt = _load_token_block(k + 1, steps, L, backward, mask_c, u_base, dt_base, z_base, B_base, C_base,
                                stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, HAS_Z, DT_RANK)
        u, dt, z, Bt, Ct = cur
        t, valid = _block_tokens(k, steps, L, backward)
        if DT_RANK > 0:  # (R_PAD, T) low-rank rows -> (T, C) delta
            dt = tl.sum(dt[:, :, None] * W_dt[:, None, :], axis=0)
        if HAS_BIAS:
            dt = dt + bias_row[None, :]
        if SOFTPLUS:
            dt = _softplus(dt, USE_ASM, APPROX)
        dt = tl.where(valid[:, None], dt, 0.0)  # tokens past L: the identity step (a = 1, b = 0)
        a = tl.exp2(A2[None, :, :] * dt[:, None, :])  # (T, N, C)
        b = Bt[:, :, None] * (dt * u)[:, None, :]
        b = tl.where(steps[:, None, None] == 0, a * h[None, :, :] + b, b)  # the entering state into step 0
        _, hs = tl.associative_scan((a, b), 0, _affine_combine)  # hs[j]: the state after the block's step j
        y = tl.sum(Ct[:, :, None] * hs, axis=1)  # (T, C): T independent sums over the states
        h = tl.sum(tl.where(steps[:, None, None] == TOKEN_BLOCK - 1, hs, -0.0), axis=0)  # in-thread pick
        if HAS_D:
            y += D_row[None, :] * u
        if HAS_Z:
            y = y * z * fastmath.sigmoid(z, APPROX)
        y = y * out_scale
        out_p = out_base[None, :] + t[:, None] * stride_out_l
        mask = valid[:, None] & mask_c[None, :]
        if ATOMIC == 1:
            tl.atomic_add(out_p, y, mask=mask, sem="relaxed")
        else:
            tl.store(out_p, y.to(out_ptr.dtype.element_ty), mask=mask)
        cur = nxt


@triton.jit
def _block_tokens(k, steps, L, backward):
    """The tokens of block k's steps (T,) (scan order: descending for the backward direction) and which of them
    lie inside L."""
    s = k * steps.shape[0] + steps
    valid = s < L
    t = tl.where(backward, L - 1 - s, s)
    return tl.where(valid, t, 0), valid


@triton.jit
def _load_token_block(k, steps, L, backward, mask_c, u_base, dt_base, z_base, B_base, C_base,
                      stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr, stride_z_l: tl.constexpr,
                      stride_B_l: tl.constexpr, stride_C_l: tl.constexpr, HAS_Z: tl.constexpr,
                      DT_RANK: tl.constexpr = 0):
    """Block k's (T, C) tiles of u, delta, z and (T, N) tiles of B and C, in fp32; zeros past L. With DT_RANK > 0,
    the (R_PAD, T) tile of the low-rank dt instead of delta (zeros past R)."""
    t, valid = _block_tokens(k, steps, L, backward)
    mask = valid[:, None] & mask_c[None, :]
    u = tl.load(u_base[None, :] + t[:, None] * stride_u_l, mask=mask, other=0.0).to(tl.float32)
    if DT_RANK > 0:
        rank_mask = tl.arange(0, dt_base.shape[0]) < DT_RANK
        dt = tl.load(dt_base[:, None] + t[None, :] * stride_dt_l, mask=rank_mask[:, None] & valid[None, :],
                     other=0.0).to(tl.float32)
    else:
        dt = tl.load(dt_base[None, :] + t[:, None] * stride_dt_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_base[None, :] + t[:, None] * stride_z_l, mask=mask, other=0.0).to(tl.float32)
    else:
        z = u
    Bt = tl.load(B_base[None, :] + t[:, None] * stride_B_l, mask=valid[:, None], other=0.0).to(tl.float32)
    Ct = tl.load(C_base[None, :] + t[:, None] * stride_C_l, mask=valid[:, None], other=0.0).to(tl.float32)
    return u, dt, z, Bt, Ct


@triton.jit
def _walk(u_base, dt_base, z_base, B_base, C_base, out_base, ckpt_lanes, row_lanes, A2, D_row, bias_row, W_dt, mask_c,
          E, L, main_trips, step0, out_scale, h,
          stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr, stride_z_l: tl.constexpr, stride_B_l: tl.constexpr,
          stride_C_l: tl.constexpr, stride_out_l: tl.constexpr,
          backward: tl.constexpr, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, HAS_D: tl.constexpr,
          HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr,
          USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, SAVE_EVERY: tl.constexpr, MASK_C: tl.constexpr,
          DT_RANK: tl.constexpr, L1_AHEAD: tl.constexpr, UNROLL_TRIPS: tl.constexpr):
    """The walk over L scan steps from state h and the token pointers' bases, for one direction (`backward`
    constexpr): the first `main_trips` trips without token masks (`_main_trip`: the caller guarantees that the
    tokens they load and prefetch are readable), then the last trips with token masks (`_trip`). `_scan_kernel`
    walks a whole sequence; `chunked._chunk_outputs_kernel` one chunk (its bases shifted to the chunk).
    ckpt_lanes: (C,) pointers to checkpoint slot 0, row 0; step0: the sequence's scan step of this walk's step 0
    (checkpoints are taken at its multiples of SAVE_EVERY). row_lanes: (C,) pointers to the B, C (and fused dt)
    rows of step 0's token, for the L1 prefetch."""
    args = (u_base, dt_base, z_base, B_base, C_base, L, backward, mask_c,
            stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l)
    step_args = (A2, D_row, bias_row, out_base, stride_out_l, L, backward, mask_c, out_scale)
    t0 = _load_token(0, *args, HAS_Z, True, MASK_C, DT_RANK)
    t1 = _load_token(1, *args, HAS_Z, True, MASK_C, DT_RANK)
    SIGN: tl.constexpr = -1 if backward else 1
    t_first = tl.where(backward, L - 1, 0)  # token of scan step 0
    # UNROLL_TRIPS: two trips per iteration (the second loads into the registers the first freed, so the prefetched
    # tokens are not copied into the loop-carried registers), then the odd last main trip
    PER_ITER: tl.constexpr = 2 if UNROLL_TRIPS else 1
    for kk in range(0, main_trips // PER_ITER):
        for half in tl.static_range(PER_ITER):
            h, t0, t1 = _main_trip(h, PER_ITER * kk + half, t0, t1, t_first, step0, u_base, dt_base, z_base, B_base,
                                   C_base, row_lanes, out_base, ckpt_lanes, E, mask_c, A2, D_row, bias_row, out_scale,
                                   W_dt, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l,
                                   SIGN, N_STATE, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, SAVE_EVERY,
                                   MASK_C, DT_RANK, L1_AHEAD)
    if UNROLL_TRIPS:
        if main_trips % 2 == 1:
            h, t0, t1 = _main_trip(h, main_trips - 1, t0, t1, t_first, step0, u_base, dt_base, z_base, B_base,
                                   C_base, row_lanes, out_base, ckpt_lanes, E, mask_c, A2, D_row, bias_row, out_scale,
                                   W_dt, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l,
                                   SIGN, N_STATE, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, SAVE_EVERY,
                                   MASK_C, DT_RANK, L1_AHEAD)
    for k in range(main_trips, tl.cdiv(L, 2)):
        if SAVE_EVERY > 0:
            _save_checkpoint(h, step0 + 2 * k, ckpt_lanes, E, mask_c, N_STATE, SAVE_EVERY)
        h, t0, t1 = _trip(h, 2 * k, t0, t1, args, step_args, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC,
                           USE_ASM, True, MASK_C, PREFETCH, DT_RANK, W_dt)


@triton.jit
def _main_trip(h, k, t0, t1, t_first, step0, u_base, dt_base, z_base, B_base, C_base, row_lanes, out_base, ckpt_lanes,
               E, mask_c, A2, D_row, bias_row, out_scale, W_dt, stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr,
               stride_z_l: tl.constexpr, stride_B_l: tl.constexpr, stride_C_l: tl.constexpr,
               stride_out_l: tl.constexpr, SIGN: tl.constexpr, N_STATE: tl.constexpr, HAS_D: tl.constexpr,
               HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr,
               USE_ASM: tl.constexpr, SAVE_EVERY: tl.constexpr, MASK_C: tl.constexpr, DT_RANK: tl.constexpr,
               L1_AHEAD: tl.constexpr):
    """Main trip k of `_walk` (scan steps 2k, 2k + 1; no token masks): one multiply-add per pointer gives the
    pointers of the first token it loads (step 2k + 2); everything else it addresses (the second token, its two
    outputs, the L1 prefetches) sits a constant number of tokens from them: immediate offsets, the direction
    (SIGN) and the token strides being constexpr."""
    if SAVE_EVERY > 0:
        _save_checkpoint(h, step0 + 2 * k, ckpt_lanes, E, mask_c, N_STATE, SAVE_EVERY)
    t_out = t_first + SIGN * 2 * k  # token of scan step 2k
    t_next = t_out + SIGN * 2  # token of scan step 2k + 2
    ptrs = (u_base + t_next * stride_u_l, dt_base + t_next * stride_dt_l, z_base + t_next * stride_z_l,
            B_base + t_next * stride_B_l, C_base + t_next * stride_C_l, row_lanes[0] + t_next * stride_B_l,
            row_lanes[1] + t_next * stride_C_l, row_lanes[2] + t_next * stride_dt_l)
    if L1_AHEAD > 0:
        for j in tl.static_range(2):
            _prefetch_at(ptrs, SIGN * (L1_AHEAD + j), mask_c, stride_u_l, stride_dt_l, stride_z_l, stride_B_l,
                         stride_C_l, HAS_Z, DT_RANK, MASK_C, USE_ASM)
    return _trip_at(h, ptrs, out_base + t_out * stride_out_l, t0, t1, mask_c, SIGN, stride_u_l, stride_dt_l,
                    stride_z_l, stride_B_l, stride_C_l, stride_out_l, A2, D_row, bias_row, out_scale, HAS_D, HAS_Z,
                    HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, MASK_C, DT_RANK, W_dt)


@triton.jit
def _prefetch_at(ptrs, ahead: tl.constexpr, mask_c, stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr,
                 stride_z_l: tl.constexpr, stride_B_l: tl.constexpr, stride_C_l: tl.constexpr, HAS_Z: tl.constexpr,
                 DT_RANK: tl.constexpr, MASK_C: tl.constexpr, USE_ASM: tl.constexpr):
    """L1 prefetch (`fastmath.prefetch_l1`, no registers) of the u, z, delta (or the fused form's dt row), B and C
    lines of the token `ahead` tokens (in memory order, signed) from the pointers `ptrs` of `_walk`'s main loop;
    lanes past E (MASK_C) issue nothing; the caller keeps it inside L."""
    lane_mask = mask_c if MASK_C else None
    fastmath.prefetch_l1(ptrs[0] + ahead * stride_u_l, USE_ASM, lane_mask)
    if HAS_Z:
        fastmath.prefetch_l1(ptrs[2] + ahead * stride_z_l, USE_ASM, lane_mask)
    if DT_RANK > 0:
        fastmath.prefetch_l1(ptrs[7] + ahead * stride_dt_l, USE_ASM)
    else:
        fastmath.prefetch_l1(ptrs[1] + ahead * stride_dt_l, USE_ASM, lane_mask)
    fastmath.prefetch_l1(ptrs[5] + ahead * stride_B_l, USE_ASM)
    fastmath.prefetch_l1(ptrs[6] + ahead * stride_C_l, USE_ASM)


@triton.jit
def _trip_at(h, ptrs, out_p, t0, t1, mask_c, SIGN: tl.constexpr, stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr,
             stride_z_l: tl.constexpr, stride_B_l: tl.constexpr, stride_C_l: tl.constexpr,
             stride_out_l: tl.constexpr, A2, D_row, bias_row, out_scale, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
             HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr, USE_ASM: tl.constexpr,
             MASK_C: tl.constexpr, DT_RANK: tl.constexpr, W_dt):
    """`_trip` of a main trip (no token masks, loads always ahead) from pointers: `ptrs` address the first token
    to load (u, delta or the low-rank dt row, z, the B and C rows; then the L1-prefetch row pointers), the second
    one sits SIGN tokens from it; out_p addresses the output of the trip's first token."""
    if DT_RANK > 0:
        t0 = (t0[0], _project_dt(t0[1], W_dt, bias_row, HAS_BIAS, DT_RANK), t0[2], t0[3], t0[4])
        t1 = (t1[0], _project_dt(t1[1], W_dt, bias_row, HAS_BIAS, DT_RANK), t1[2], t1[3], t1[4])
    n0 = _load_at(ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], mask_c, True, HAS_Z, False, MASK_C, DT_RANK)
    n1 = _load_at(ptrs[0] + SIGN * stride_u_l, ptrs[1] + SIGN * stride_dt_l, ptrs[2] + SIGN * stride_z_l,
                  ptrs[3] + SIGN * stride_B_l, ptrs[4] + SIGN * stride_C_l, mask_c, True, HAS_Z, False, MASK_C,
                  DT_RANK)
    h = _token_step_at(h, out_p, mask_c, *t0, A2, D_row, bias_row, out_scale, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS,
                       ATOMIC, USE_ASM, False, MASK_C, DT_RANK)
    h = _token_step_at(h, out_p + SIGN * stride_out_l, mask_c, *t1, A2, D_row, bias_row, out_scale, HAS_D, HAS_Z,
                       HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, False, MASK_C, DT_RANK)
    return h, n0, n1


@triton.jit
def _save_checkpoint(h, step, ckpt_lanes, E, mask_c, N_STATE: tl.constexpr, SAVE_EVERY: tl.constexpr):
    """Store the state entering scan step `step` when a checkpoint chunk starts there (SAVE_EVERY is even and
    trips start at even steps, so every chunk start is some trip's first step)."""
    if step % SAVE_EVERY == 0:
        store_rows(ckpt_lanes + (step // SAVE_EVERY) * (N_STATE * E), E, h, mask_c, N_STATE)


@triton.jit
def store_rows(lanes, row_stride, tile, mask_c, N_STATE: tl.constexpr, EVICT: tl.constexpr = None):
    """Store an (N, C) state tile as N (C,) rows, row n at lanes + n * row_stride. One 2D store would make
    Triton's coalescing pass give it a 4-channels-per-thread layout: a shared-memory layout conversion of the
    state and more live registers (Triton 3.6 spilled). Row n is picked in-thread (each lane holds its channel's
    whole state); -0.0 is the additive identity that lets the compiler drop the sum. EVICT: the stores' L2
    eviction policy (None: the default, "evict_first", "evict_last")."""
    states = tl.arange(0, N_STATE)
    for n in tl.static_range(N_STATE):
        row = tl.sum(tl.where(states[:, None] == n, tile, -0.0), axis=0)
        if EVICT is None:
            tl.store(lanes + n * row_stride, row, mask=mask_c)
        else:
            tl.store(lanes + n * row_stride, row, mask=mask_c, eviction_policy=EVICT)


@triton.jit
def load_rows(lanes, row_stride, mask_c, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, EVICT: tl.constexpr = None,
              row_xor=None):
    """The (N, C) fp32 tile that `store_rows` stored (masked lanes read 0), built from N (C,) row loads for the
    same reason. EVICT: the loads' L2 eviction policy. row_xor: None, or (C,) per-lane masks: row n of lane l gets
    stored row n ^ row_xor[l] (the scan backward's XOR state order)."""
    states = tl.arange(0, N_STATE)
    tile = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    for n in tl.static_range(N_STATE):
        if row_xor is None:
            row_ptr = lanes + n * row_stride
        else:
            row_ptr = lanes + (n ^ row_xor) * row_stride
        if EVICT is None:
            row = tl.load(row_ptr, mask=mask_c, other=0.0)
        else:
            row = tl.load(row_ptr, mask=mask_c, other=0.0, eviction_policy=EVICT)
        tile = tl.where(states[:, None] == n, row[None, :], tile)
    return tile


@triton.jit
def _trip(h, step, t0, t1, args, step_args, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
          SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, MASK_T: tl.constexpr,
          MASK_C: tl.constexpr, PREFETCH: tl.constexpr, DT_RANK: tl.constexpr = 0, W_dt=0.0):
    """Tokens `step` and `step + 1` (already loaded as t0, t1). The loads of the next two tokens are issued
    first, so their latency (hundreds of cycles from HBM) overlaps this trip's arithmetic instead of stalling
    every token. Returns the new state and the next trip's tokens.
    With dt_proj fused (DT_RANK > 0, W_dt the (R_PAD, C) weight tile), the two arrived tokens' rows are
    projected to delta before the next loads are issued, so only the two prefetched R-wide rows are live across
    the trip, not four."""
    if DT_RANK > 0:
        bias_row = step_args[2]
        t0 = (t0[0], _project_dt(t0[1], W_dt, bias_row, HAS_BIAS, DT_RANK), t0[2], t0[3], t0[4])
        t1 = (t1[0], _project_dt(t1[1], W_dt, bias_row, HAS_BIAS, DT_RANK), t1[2], t1[3], t1[4])
    if PREFETCH:
        n0 = _load_token(step + 2, *args, HAS_Z, MASK_T, MASK_C, DT_RANK)
        n1 = _load_token(step + 3, *args, HAS_Z, MASK_T, MASK_C, DT_RANK)
    h = _token_step(h, step, *t0, *step_args, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM,
                    MASK_T, MASK_C, DT_RANK)
    h = _token_step(h, step + 1, *t1, *step_args, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM,
                    MASK_T, MASK_C, DT_RANK)
    if not PREFETCH:
        n0 = _load_token(step + 2, *args, HAS_Z, MASK_T, MASK_C, DT_RANK)
        n1 = _load_token(step + 3, *args, HAS_Z, MASK_T, MASK_C, DT_RANK)
    return h, n0, n1


@triton.jit
def _token_position(step, L, backward, mask_c, MASK_T: tl.constexpr):
    """The token index of scan step `step`, whether it is inside L, and the lane mask."""
    t = tl.where(backward, L - 1 - step, step)
    valid = step < L
    if MASK_T:
        mask = mask_c & valid
    else:
        mask = mask_c
    return t, valid, mask


@triton.jit
def _load_lanes(ptr, mask, MASKED: tl.constexpr):
    """A (C,) load in fp32; masked lanes read 0. Unmasked loads skip the predicate and the zero fill."""
    if MASKED:
        return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.load(ptr).to(tl.float32)


@triton.jit
def _load_token(step, u_base, dt_base, z_base, B_base, C_base, L, backward, mask_c,
                stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, HAS_Z: tl.constexpr,
                MASK_T: tl.constexpr, MASK_C: tl.constexpr, DT_RANK: tl.constexpr = 0):
    """Token `step` (in scan order) of u, delta, z: (C,) each, and of B, C: (N,) each, in fp32; zeros past L.
    With DT_RANK > 0, dt is the token's (R_PAD,) low-rank row instead of its (C,) delta."""
    t, valid, mask = _token_position(step, L, backward, mask_c, MASK_T)
    return _load_at(u_base + t * stride_u_l, dt_base + t * stride_dt_l, z_base + t * stride_z_l,
                    B_base + t * stride_B_l, C_base + t * stride_C_l, mask, valid, HAS_Z, MASK_T, MASK_C, DT_RANK)


@triton.jit
def _load_at(u_p, dt_p, z_p, B_p, C_p, mask, valid, HAS_Z: tl.constexpr, MASK_T: tl.constexpr, MASK_C: tl.constexpr,
             DT_RANK: tl.constexpr = 0):
    """`_load_token` from the token's pointers (mask: its lanes; valid: whether it lies inside L)."""
    u = _load_lanes(u_p, mask, MASK_T or MASK_C)
    if DT_RANK > 0:
        rank_mask = tl.arange(0, _rank_tile(DT_RANK)) < DT_RANK
        if MASK_T:
            rank_mask = rank_mask & valid
        dt = tl.load(dt_p, mask=rank_mask, other=0.0).to(tl.float32)
    else:
        dt = _load_lanes(dt_p, mask, MASK_T or MASK_C)
    if HAS_Z:
        z = _load_lanes(z_p, mask, MASK_T or MASK_C)
    else:
        z = u
    Bt = _load_lanes(B_p, valid, MASK_T)
    Ct = _load_lanes(C_p, valid, MASK_T)
    return u, dt, z, Bt, Ct


@triton.jit
def _token_step(h, step, u, dt, z, Bt, Ct, A2, D_row, bias_row, out_base, stride_out_l, L, backward, mask_c,
                out_scale, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, MASK_T: tl.constexpr,
                MASK_C: tl.constexpr, DT_RANK: tl.constexpr = 0):
    """One token of the recurrence for the (N, C) state h; writes that token's output and returns h. dt is the
    token's (C,) delta; with DT_RANK > 0 `_trip` computed it from the low-rank row, bias included."""
    t, valid, mask = _token_position(step, L, backward, mask_c, MASK_T)
    return _token_step_at(h, out_base + t * stride_out_l, mask, u, dt, z, Bt, Ct, A2, D_row, bias_row, out_scale,
                          HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, MASK_T, MASK_C, DT_RANK)


@triton.jit
def _token_step_at(h, out_p, mask, u, dt, z, Bt, Ct, A2, D_row, bias_row, out_scale, HAS_D: tl.constexpr,
                   HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr,
                   USE_ASM: tl.constexpr, MASK_T: tl.constexpr, MASK_C: tl.constexpr, DT_RANK: tl.constexpr = 0):
    """`_token_step` with the token's output pointer and lane mask given."""
    # softplus's exp and the gate's sigmoid as single MUFU instructions (kernels/fastmath.py) where the output is
    # 16-bit. With an fp32 output (the fp32 model's combined scan) they measured 8% slower on the H200 (2.77 ->
    # 2.99 ms at Vim-Ti 1248 px, batch 64; bf16 halves 2.55 -> 2.52: results/history/abfast-h200-2026-12-02.json),
    # so that path keeps Triton's own exp and sigmoid.
    APPROX: tl.constexpr = USE_ASM and out_p.dtype.element_ty != tl.float32
    if HAS_BIAS and DT_RANK == 0:  # a fused dt_proj added it (_trip)
        dt = dt + bias_row
    if SOFTPLUS:
        dt = _softplus(dt, USE_ASM, APPROX)
    if MASK_T:
        dt = tl.where(mask, dt, 0.0)  # after the softplus: masked steps must be the identity (a=1, b=0)
    h = tl.exp2(A2 * dt[None, :]) * h + Bt[:, None] * (dt * u)[None, :]
    y = tl.sum(Ct[:, None] * h, axis=0)  # (C,): the states are in-thread, no shuffles
    if HAS_D:
        y += D_row * u
    if HAS_Z:
        if APPROX and USE_ASM == 2:  # GATE_TANH: SiLU(z) from one MUFU tanh
            y = y * fastmath.silu_tanh(z)
        else:
            y = y * z * fastmath.sigmoid(z, APPROX)
    y = y * out_scale
    if ATOMIC == 2:  # the ordered sum: the other direction's launch stored its term here first
        if MASK_T or MASK_C:
            y += tl.load(out_p, mask=mask, other=0.0).to(tl.float32)
        else:
            y += tl.load(out_p).to(tl.float32)
    if ATOMIC == 1:
        if MASK_T or MASK_C:
            tl.atomic_add(out_p, y, mask=mask, sem="relaxed")
        else:
            tl.atomic_add(out_p, y, sem="relaxed")
    elif MASK_T or MASK_C:
        tl.store(out_p, y.to(out_p.dtype.element_ty), mask=mask)
    else:
        tl.store(out_p, y.to(out_p.dtype.element_ty))
    return h


@triton.jit
def _project_dt(dt_row, W_dt, bias_row, HAS_BIAS: tl.constexpr, DT_RANK: tl.constexpr):
    """(C,) delta = bias + W^T dt_row: the (R_PAD, C) products summed over the ranks, which live in each lane
    (so the row loads broadcast, like B and C rows): no shuffles. Explicit per-rank FMA chains (rank picked by
    masked sums) compiled no shorter: an FADD or FMNMX with the identity stayed per rank."""
    ranks = tl.arange(0, W_dt.shape[0])[:, None]
    delta = tl.sum(tl.where(ranks < DT_RANK, dt_row[:, None] * W_dt, -0.0), axis=0)
    if HAS_BIAS:
        delta += bias_row
    return delta


def _blocks_for(programs_at_32: int) -> int:
    """Channels per program of the scan backward's walk: 32 (one warp, one channel per lane); 16 when 32 would
    leave most SMs idle (batch 1: a B=1, E=384 bidirectional scan is only 24 one-warp programs)."""
    return 16 if programs_at_32 < 264 else 32


def one_pass_block_c(programs_at_32: int) -> int:
    """Channels per one-warp program of the one-pass scan, from the grid it would have at 32: small grids (batch
    1-8 at 224 px) split each channel's N states over 32 / BLOCK_C lanes (states summed by shuffles), so that each
    lane does fewer exponentials per token and more programs share the sequential walk. Measured on the H200
    (2026-12-02, bf16, 197 tokens, kernel time of graph-captured launches, results/history/scan-small-grid-h200-
    2026-12-02.json), us per call at BLOCK_C 2/4/8/16/32: Vim-Ti batch 1 (24 programs at 32) 26.7/28.7/34.5/45.3/
    45.6; batch 4 (96) 40.0/32.6/34.4/44.9/46.0; batch 8 (192) 74.6/44.8/38.7/45.3/46.3; batch 16 (384) -/84.1/49.1/
    51.4/46.7; Vim-B batch 1 (96) 39.9/32.6/34.9/45.3/46.5."""
    if programs_at_32 <= 32:
        return 2
    if programs_at_32 <= 96:
        return 4
    if programs_at_32 < 264:
        return 8
    return 32


# Scan steps ahead of the loads that the one-pass kernel's L1 prefetch reaches (`_scan_kernel`'s L1_AHEAD; 0: off),
# for one-channel-per-lane programs (BLOCK_C = 32), where it was measured: H200, bf16 halves, batch 64, kernel ms
# D = 0 / 4 at 6,085 tokens: delta gated 2.75 / 2.67, dt_proj fused gated 2.96 / 2.77, fused ungated 3.52 / 2.83; at
# 197 tokens 0.186 / 0.154; outputs bitwise equal (results/history/scanpf-h200-2026-12-03.json). The small-grid
# blocks (2-8 channels per program, batch 1-8) and channel counts that need lane masks keep it off: unmeasured
# there (and with masks the fused ungated variant spills 4 bytes under triton 3.6).
DEFAULT_L1_AHEAD = 4
# The main loop two trips per iteration (`_walk`'s UNROLL_TRIPS) and a register cap (ptxas's maxnreg; None: its
# own choice) for one-channel-per-lane programs on the GPU, for inference and for the checkpointing (training)
# forward. Measured on the H200 (results/history/scanaddr-h200-2026-12-04j.json, kernel ms against the kernel before
# the per-direction walk, bf16 halves, batch 64, 6,085 tokens): Vim-Ti 2.521 -> 2.416 one trip per iteration,
# 2.279 two; Vim-S 5.05 -> 4.48, Vim-B 9.82 -> 8.74 (two). Capped at 168 (the registers ptxas takes anyway) the
# same kernels ran 8-20% slower (results/history/scanaddr-call2-h200-2026-12-04j.json). The checkpointing forward
# at 224 px, batch 128 (one pass) lost 7% in every variant (0.197 -> 0.210 ms as graph replays; whole captured
# steps unchanged: 3,078 vs 3,077 img/s); one trip per iteration capped at 168 was the least slow.
UNROLL_TRIPS = True
ONE_PASS_MAXNREG: int | None = None
SAVE_UNROLL_TRIPS = False
SAVE_MAXNREG: int | None = 168
# No cap with a fused dt_proj of a larger rank: Vim-B's (R = 48) needs ~254 registers (capped at 168 it spilled).
MAXNREG_DT_RANK = 24
# The z gate's SiLU by one MUFU tanh (`fastmath.silu_tanh`: z sigmoid(z) = h + h tanh(h), h = z / 2) in the token
# walk of `_scan_kernel` and of the chunk-parallel passes (`_token_step_at`), 16-bit outputs only: 18 MUFU
# instructions per token instead of 19, where the bf16 scan asks the MUFU for more cycles than it issues (8 cycles
# per warp instruction: 152 against 133 issue slots per token and warp). Static (triton 3.6, `scan/halves/bf16`,
# Vim-Ti 1248 px batch 64): main loop 531 -> 523 instructions per 4 tokens, MUFU 76 -> 72, 168 registers, no spill.
# tanh.approx's relative error (~2^-11) makes SiLU's absolute error up to ~|z| 2^-12: below a bf16 output's
# rounding where the gate is large, not for tiny outputs (z << 0). On, the kernels take USE_ASM = 2 (`asm_level`).
# Measured on an H100 (session v, results/history/gatetanh-h100-2026-12-05v.json, bf16 halves, CUDA-graph replays,
# off / on): the scan alone at Vim-Ti 1248 px batch 64 2,233 / 2,237 us, 224 px batch 64 77.1 / 76.9, the
# chunk-parallel passes at 1248 px batch 8 500.7 / 495.9; whole 1248/64 forwards 1.9% slower (eager 666.7 -> 654.1
# img/s, graphs 667.3 -> 655.8, A B B A); the error against float64 and the logits' distance from the fp32 model
# unchanged. So the MUFU does not bind there (Nsight: waits on loads do); off, kept as an experiment knob.
GATE_TANH = False


def asm_level(interpreted: bool):
    """The scan kernels' USE_ASM constexpr: False under the interpreter (no inline asm), else True, or 2 with
    GATE_TANH (the gate's SiLU by one MUFU tanh where the output is 16-bit)."""
    return False if interpreted else (2 if GATE_TANH else True)


# The small-grid scan in blocks of tokens (`_scan_blocks_kernel`), where the one-pass grid picks a small-grid block
# (BLOCK_C < 32), for inference (a fused dt_proj of rank at most TOKEN_BLOCK_MAX_DT_RANK included): at most
# TOKEN_BLOCK tokens per block and TOKEN_BLOCK_X_CHANNELS tokens x channels per program (T = 16 at 2-4 channels per
# warp, 8 at 8); 0: the token walk (`_scan_kernel`) there too. Measured on the H200 (session s,
# results/history/tokenblocks-h200-2026-12-05s.json;
# bf16 halves, kernel us of graph-replayed launches; walk / shipped under capture (chunks of 16) / T = 8 / 16 / 32):
# Vim-Ti 197 tokens batch 1 24.7 / 13.9 / 15.4 / 10.1 / 10.4, batch 2 27.6 / 15.6 / 11.1 / 10.9 / 11.5, batch 4
# 30.0 / 20.2 / 14.6 / 14.9 / 16.7, batch 8 36.5 / 31.7 / 19.1 / 20.3 / 24.1; E = 768 batch 1 27.4 / 15.9 / 11.2 /
# 11.0 / 11.5, batch 4 36.3 / 31.5 / 19.4 / 20.5 / 24.6; E = 1536 batch 1 28.9 / 19.8 / 14.3 / 14.6 / 16.3;
# 577 tokens batch 1 68.1 / 22.0 (chunks of 32) / 40.1 / 24.5 / 25.0; outputs within 3e-5 (rel. L2) of the walk's.
# INTERPRETED_TOKEN_BLOCK: the same under the interpreter (0: off; the tests set it to cross blocks).
TOKEN_BLOCK = 16
TOKEN_BLOCK_X_CHANNELS = 64
# The token-block kernel with dt_proj fused (session t, results/history/dtblocks-h100-2026-12-05t.json, H100, bf16
# halves over u, 197 tokens, kernel us of graph-replayed launches; cast + delta GEMM + token-block scan / the scan
# alone / fused): Vim-Ti (R = 12) batch 1 14.7 / 10.7 / 12.1, batch 2 16.2 / 11.5 / 13.2, batch 8 24.9 / 19.2 / 21.9;
# Vim-S (R = 24) batch 1 16.2 / 11.3 / 13.5; Vim-B (R = 48, a 64-wide rank tile) batch 1 19.6 / 14.5 / 25.8. So up to
# this rank the fused form runs in token blocks; above it the token walk takes the fused dt_proj (eager) and
# captured forwards keep the GEMM (`token_blocks_take_dt_proj`).
TOKEN_BLOCK_MAX_DT_RANK = 32
INTERPRETED_TOKEN_BLOCK = 0
# The one-pass scan with its B and C rows staged through shared memory by Triton's pipeliner
# (`staged._scan_staged_kernel`, session ab): 0 off, else the pipeline's stages, for one-channel-per-lane inference
# without a fused dt_proj. STAGED_CARRY: how u, delta and z arrive (0: loaded in the trip that uses them; 2: one
# trip ahead in registers); STAGED_L1_AHEAD: the L1 prefetch of u, delta and z that many scan steps ahead (0: none).
# An experiment, off: measured in session ac (kernels/NOTES.md, "Session ab" and "Session ac"); the defaults below
# are its fastest variant (Vim-Ti 1248/64 kernel -2.4%, Vim-S +7.6%, whole forwards unchanged).
STAGED_SCAN = 0
STAGED_CARRY = 2
STAGED_L1_AHEAD = 6
STAGED_TRIP = 2  # tokens per loop trip (4: lanes in the trip, CARRY 0)


def scan_launch_config(batch: int, channels: int, n_dir: int, interpreted: bool, dt_rank: int = 0,
                       save_every: int = 0) -> LaunchConfig:
    """The one-pass scan's kernel, grid (channel blocks, directions, batch), tile and warps: the one place that
    chooses them (the launcher and `vimbench kernels static` both call it). One warp; a channel per lane, or per
    32 / BLOCK_C lanes on small grids (`one_pass_block_c`), where inference runs `_scan_blocks_kernel` (TOKEN_BLOCK,
    TOKEN_BLOCK_X_CHANNELS; a fused dt_proj up to TOKEN_BLOCK_MAX_DT_RANK), everything else `_scan_kernel`; under
    the interpreter small tiles, so that tests exercise channel masks and several programs, and no inline asm.
    dt_rank: the fused dt_proj's rank (0: not fused); save_every: the checkpoint interval of the training forward
    (0: inference): they pick the kernel, the main loop's form and the register cap (UNROLL_TRIPS,
    ONE_PASS_MAXNREG, SAVE_UNROLL_TRIPS, SAVE_MAXNREG, MAXNREG_DT_RANK)."""
    gpu_block_c = one_pass_block_c(cdiv(channels, 32) * n_dir * batch)
    block_c = interpreted_block_c(channels) if interpreted else gpu_block_c
    lane_per_channel = block_c == 32 and not interpreted
    if save_every or dt_rank > TOKEN_BLOCK_MAX_DT_RANK:
        token_block = 0  # the token-block kernel takes no checkpoints, and pays for a wide fused dt_proj
    elif interpreted:
        token_block = INTERPRETED_TOKEN_BLOCK
    else:
        token_block = min(TOKEN_BLOCK, TOKEN_BLOCK_X_CHANNELS // block_c) if block_c < 32 else 0
    if STAGED_SCAN and (lane_per_channel or interpreted) and not save_every and not dt_rank:
        return staged_launch_config(batch, channels, n_dir, interpreted, STAGED_SCAN, STAGED_CARRY, STAGED_TRIP,
                                    STAGED_L1_AHEAD)
    if token_block:
        return LaunchConfig(kernel="_scan_blocks_kernel", grid=(cdiv(channels, block_c), n_dir, batch),
                            constexprs=dict(BLOCK_C=block_c, MASK_C=channels % block_c != 0, USE_ASM=not interpreted,
                                            PREFETCH=True, L1_AHEAD=0, UNROLL_TRIPS=False,
                                            TOKEN_BLOCK=token_block),
                            num_warps=1)
    return LaunchConfig(
        kernel="_scan_kernel",
        grid=(cdiv(channels, block_c), n_dir, batch),
        constexprs=dict(BLOCK_C=block_c, MASK_C=channels % block_c != 0, USE_ASM=asm_level(interpreted),
                        PREFETCH=True, L1_AHEAD=DEFAULT_L1_AHEAD if lane_per_channel and channels % 32 == 0 else 0,
                        UNROLL_TRIPS=SAVE_UNROLL_TRIPS if save_every else UNROLL_TRIPS),
        num_warps=1,
        maxnreg=(SAVE_MAXNREG if save_every else ONE_PASS_MAXNREG) if lane_per_channel and dt_rank <= MAXNREG_DT_RANK
        else None,
    )


def staged_launch_config(batch: int, channels: int, n_dir: int, interpreted: bool, stages: int, carry: int,
                         trip: int, l1_ahead: int) -> LaunchConfig:
    """`staged._scan_staged_kernel`'s launch (the experiment behind STAGED_SCAN; `scan_launch_config` picks it with
    the module's knobs, the static check with its leading variant's): grid and channel block as the one-pass
    kernel's, `stages` pipeline stages. BC_JOINED is decided per call from the tensors (`_launch`)."""
    block_c = interpreted_block_c(channels) if interpreted else one_pass_block_c(cdiv(channels, 32) * n_dir * batch)
    return LaunchConfig(kernel="_scan_staged_kernel", grid=(cdiv(channels, block_c), n_dir, batch),
                        constexprs=dict(BLOCK_C=block_c, MASK_C=channels % block_c != 0,
                                        USE_ASM=asm_level(interpreted), PREFETCH=True, STAGES=stages, CARRY=carry,
                                        L1_AHEAD=0 if interpreted else l1_ahead, TRIP=trip, UNROLL_TRIPS=False),
                        num_warps=1, num_stages=stages)


def token_blocks_take_dt_proj(batch: int, channels: int, length: int, dt_rank: int, interpreted: bool) -> bool:
    """Whether a bimamba scan (both directions) of this size with dt_proj fused runs the token-block kernel in one
    pass, captured into a CUDA graph or not: a small-grid block (`scan_launch_config`) and a sequence short enough
    that capture keeps it unchunked (chunked.TOKEN_BLOCKS_MAX_CAPTURED_LENGTH; the chunk-parallel passes would
    compute delta first). The Vim mixer fuses dt_proj there in captured and traced forwards too
    (vimbench.models.vim, FUSE_DT_IN_TOKEN_BLOCKS)."""
    from kernels.selective_scan import chunked

    kernel = scan_launch_config(batch, channels, 2, interpreted, dt_rank).kernel
    return kernel == "_scan_blocks_kernel" and length <= chunked.TOKEN_BLOCKS_MAX_CAPTURED_LENGTH


def eager_scan_takes_dt_proj(batch: int, channels: int, length: int, dt_rank: int, n_state: int,
                             device: torch.device, gpu_sms: int | None = None) -> bool:
    """Whether an eager bimamba scan of this size (not captured, split automatic) applies a fused dt_proj itself in
    one pass: False where it runs the chunk-parallel passes, which compute the (2, batch, E, L) delta first, in
    fp32, with a torch matmul inside the call (twice the bytes of the mixer's own 16-bit delta GEMM, and device
    work that keeps the call from being replayed: kernels/launch.py CallMemo). The Vim mixer hands the scan
    dt_proj only where this holds (vimbench.models.vim, `fuses_dt_proj`). gpu_sms: answer for a GPU with that
    many SMs whatever `device` is (memory estimates on the meta device: vimbench.bench.live_memory)."""
    from kernels.selective_scan import chunked

    if length < chunked.MIN_CHUNKED_LENGTH:  # (the automatic eager choice never chunks these: the hot path)
        return True
    interpreted = device.type != "cuda" and gpu_sms is None
    sms = gpu_sms if gpu_sms is not None else sm_count(device)
    token_blocks = scan_launch_config(batch, channels, 2, interpreted, dt_rank).kernel == "_scan_blocks_kernel"
    return chunked.chunked_scan_launch_config(batch, channels, length, 2, n_state, interpreted, sms,
                                              token_blocks=token_blocks) is None


def _check(u, delta, A, B, C, n_dir: int | None, dt_proj=None):
    lead = (n_dir,) if n_dir else ()
    if dt_proj is None and (u.dim() != len(lead) + 3 or delta.shape != u.shape):
        raise ValueError(f"u and delta must both be {'(2, ' if n_dir else '('}batch, E, L); got "
                         f"{tuple(u.shape)} and {tuple(delta.shape)}")
    if dt_proj is not None:
        if u.dim() != len(lead) + 3:
            raise ValueError(f"u must be {'(2, ' if n_dir else '('}batch, E, L); got {tuple(u.shape)}")
        batch, channels, length = u.shape[-3:]
        rank = dt_proj.shape[-1]
        if tuple(dt_proj.shape) != lead + (channels, rank) or rank < 1:
            raise ValueError(f"dt_proj must be {lead + (channels, 'R')} with R >= 1; got {tuple(dt_proj.shape)}")
        if tuple(delta.shape) != lead + (batch, rank, length):
            raise ValueError(f"with dt_proj, delta is the low-rank dt {lead + (batch, rank, length)}; got "
                             f"{tuple(delta.shape)}")
    batch, channels, length = u.shape[-3:]
    n_state = A.shape[-1]
    if tuple(A.shape) != lead + (channels, n_state):
        raise ValueError(f"A must be {lead + (channels, n_state)}; got {tuple(A.shape)}")
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != lead + (batch, n_state, length):
            raise ValueError(f"{name} must be {lead + (batch, n_state, length)}; got {tuple(t.shape)}")
    if n_state & (n_state - 1):
        raise ValueError(f"the state size must be a power of two; got {n_state}")
    check_token_offsets(length, u=u, delta=delta, B=B, C=C)


def _launch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out, dir_first, n_dir, out_scale, atomic,
            checkpoints=None, save_every=0, split=None, dt_proj=None):
    """u, delta: (dirs, batch, E, L); A: (dirs, E, N); B, C: (dirs, batch, N, L); D, delta_bias: (dirs, E);
    z: (batch, E, L); out: (batch, E, L) shared by the directions, or (dirs, batch, E, L), one per direction.
    Stacked index i runs backward when i + dir_first == 1. checkpoints: with save_every = K > 0, a contiguous fp32
    (dirs, batch, cdiv(L, K), N, E) tensor that receives the state entering every K-th scan step.
    split: the chunk-parallel path's choice (chunked.chunked_scan_launch_config): None automatic, 0 one pass,
    an even T chunks of T tokens.
    dt_proj: None, or (dirs, E, R) (any float dtype, any strides): then delta is the low-rank (dirs, batch, R, L)
    and the one-pass kernel computes delta = dt_proj @ delta per token itself; the chunk-parallel passes do not,
    so there delta is computed first (fp32, channel-last)."""
    # chunked.py builds on this module's jit helpers, hence the import here.
    from kernels.selective_scan import chunked

    _, batch, channels, length = u.shape
    interpreted = check_device(u, _scan_kernel)
    cfg = scan_launch_config(batch, channels, n_dir, interpreted, 0 if dt_proj is None else dt_proj.shape[-1],
                             save_every)
    if length == 0 or batch == 0 or channels == 0:
        return out
    check_token_offsets(length, z=z, out=out)
    captured = not interpreted and torch.cuda.is_current_stream_capturing()
    plan = chunked.chunked_scan_launch_config(batch, channels, length, n_dir, A.shape[-1], interpreted,
                                              sm_count(u.device), split, save_every, captured,
                                              token_blocks=cfg.kernel == "_scan_blocks_kernel")
    if plan is not None and dt_proj is not None:
        # (dirs, batch, L, R) @ (dirs, 1, R, E) -> (dirs, batch, L, E), seen as (dirs, batch, E, L): channel-last
        delta = torch.matmul(delta.transpose(2, 3).float(), dt_proj.float().transpose(1, 2)[:, None])
        delta, dt_proj = delta.transpose(2, 3), None
    has_d, has_z, has_bias = D is not None, z is not None, delta_bias is not None
    dummy = A  # any valid pointer for absent optional inputs; never read
    Dt = D if has_d else dummy
    zt = z if has_z else u[0]
    bt = delta_bias if has_bias else dummy
    if has_d and D.stride(-1) != 1:
        Dt = D.contiguous()
    if has_bias and delta_bias.stride(-1) != 1:
        bt = delta_bias.contiguous()
    out_strides = out.stride() if out.dim() == 4 else (0, *out.stride())
    stacked = ("dir", "b", "e", "l")
    scan_args = dict(
        u_ptr=u, delta_ptr=delta, A_ptr=A, B_ptr=B, C_ptr=C, D_ptr=Dt, z_ptr=zt, bias_ptr=bt, out_ptr=out,
        ckpt_ptr=checkpoints if save_every else dummy,
        E=channels, L=length, dir_first=dir_first, out_scale=out_scale,
        **strides("stride_u", stacked, u.stride()), **strides("stride_dt", stacked, delta.stride()),
        **strides("stride_A", ("dir", "e", "n"), A.stride()),
        **strides("stride_B", ("dir", "b", "n", "l"), B.stride()),
        **strides("stride_C", ("dir", "b", "n", "l"), C.stride()),
        stride_D_dir=Dt.stride(0) if has_d else 0, stride_bias_dir=bt.stride(0) if has_bias else 0,
        **strides("stride_z", ("b", "e", "l"), zt.stride()), **strides("stride_out", stacked, out_strides),
        N_STATE=A.shape[-1], HAS_D=has_d, HAS_Z=has_z, HAS_BIAS=has_bias, SOFTPLUS=bool(delta_softplus),
        ATOMIC=atomic, SAVE_EVERY=save_every,
    )
    if plan is not None:
        chunked.launch_chunked(plan, scan_args, n_dir, batch)
    else:
        if cfg.kernel == "_scan_staged_kernel":
            from kernels.selective_scan import staged
            kernel = staged._scan_staged_kernel
            scan_args["BC_JOINED"] = staged.bc_joined(B, C)
        else:
            kernel = _scan_blocks_kernel if cfg.kernel == "_scan_blocks_kernel" else _scan_kernel
        launch(kernel, cfg.grid,
            **scan_args, dtw_ptr=dt_proj if dt_proj is not None else dummy,
            **strides("stride_dtw", ("dir", "e", "r"), dt_proj.stride() if dt_proj is not None else (0, 0, 0)),
            DT_RANK=0 if dt_proj is None else dt_proj.shape[-1], **cfg.constexprs, **cfg.launch_options())
    return out


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, reverse=False,
                   split=None):
    """Selective scan, one direction; same contract as `selective_scan_ref`.

    u, delta: (batch, E, L), fp32/fp16/bf16, any strides. A: (E, N) fp32. B, C: (batch, N, L), any strides.
    D, delta_bias: (E,) fp32 or None. z: (batch, E, L) or None. reverse=True runs the recurrence from t = L-1 down
    to 0. Returns (batch, E, L) in u's dtype and memory layout; state and accumulation in fp32.
    split: None (chunk-parallel when the one-pass grid underfills the GPU, chunked.chunked_scan_launch_config),
    0 (force one pass) or an even T (force chunks of T tokens); the result is the same to fp32 rounding.
    """
    _check(u, delta, A, B, C, None)
    out = torch.empty_like(u)  # same layout as u (channel-last stays channel-last)
    A = A.float()
    D = None if D is None else D.float()
    delta_bias = None if delta_bias is None else delta_bias.float()
    return _launch(u[None], delta[None], A[None], B[None], C[None],
                   None if D is None else D[None], z, None if delta_bias is None else delta_bias[None],
                   delta_softplus, out, dir_first=int(bool(reverse)), n_dir=1, out_scale=1.0, atomic=False,
                   split=split)


def bimamba_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, combine=True, out=None,
                 dt_proj=None, split=None):
    """Both Vim directions in one launch, gated: 0.5 * (y_fwd + y_bwd) * SiLU(z).

    Same contract as `bimamba_scan_ref`. Direction-stacked inputs (index 0 forward, 1 backward):
    u, delta (2, batch, E, L) fp32/fp16/bf16; A (2, E, N) fp32; B, C (2, batch, N, L), any strides (views of
    x_dbl are fine; rows whose B and C each start 16-element aligned, stride 1 along N, load as vectors);
    D, delta_bias (2, E) fp32 or None; z (batch, E, L) or None. No flipped copies: the backward direction reads
    tokens from the right.

    combine=True: returns (batch, E, L) in u's dtype, laid out like u[0]. The directions add into one fp32
    buffer with atomics, which is then rounded once.
    combine=False: returns the gated halves 0.5 * y_dir * SiLU(z), (2, batch, E, L) in u's dtype, whose sum over
    dim 0 is the combined output: no zero fill, no atomics, no cast pass. Written to `out` if given (u's shape and
    dtype), else to a new tensor laid out like u. `out` may be u or delta itself: every element is read by the
    lane that later overwrites it, before it does, and by no other lane, so the scan can reuse their memory.

    dt_proj: None, or the (2, E, R) dt_proj weights (any float dtype): then delta is the low-rank dt
    (2, batch, R, L) (any strides: the model passes a view of x_dbl's dt columns) and the scan computes
    delta[d, b, :, l] = dt_proj[d] @ delta[d, b, :, l] per token itself, in fp32; no (2, batch, E, L) delta
    tensor exists (except where the chunk-parallel path runs: it computes delta first). Inference only
    (kernels/NOTES.md: "dt_proj fused into the inference scan").
    split: as in `selective_scan` (the chunk-parallel path).
    """
    if combine and out is not None:
        raise ValueError("out= is only taken with combine=False")
    # Where the output buffer exists before the launch (given, or the combined form's zero-filled fp32 sum), the
    # call is replayed when its signature was seen before (kernels/launch.py CallMemo): the eager host path.
    target = out if not combine else torch.zeros_like(u[0], dtype=torch.float32) if u.dim() == 4 else None
    if target is None:
        return _bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out, dt_proj, split)
    tensors = (u, delta, A, B, C, D, z, delta_bias, target, dt_proj)
    storage = target.untyped_storage().data_ptr()
    sig = _SCAN_MEMO.signature(tensors, bool(delta_softplus), combine, split,
                               storage == u.untyped_storage().data_ptr(), storage == delta.untyped_storage().data_ptr())
    if not _SCAN_MEMO.replay(sig, tensors):
        with _SCAN_MEMO.record(sig, tensors, scratch=True):  # (the chunk-parallel passes' link states)
            _bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, target, dt_proj, split)
    return target if not combine or u.dtype == torch.float32 else target.to(u.dtype)


def _bimamba_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine, out, dt_proj, split):
    """`bimamba_scan`'s launch; combine=True: out None (a new fp32 sum), or the zero-filled fp32 sum to add into,
    which is returned as it is."""
    _check(u, delta, A, B, C, 2, dt_proj)
    A = A.float()
    D = None if D is None else D.float()
    delta_bias = None if delta_bias is None else delta_bias.float()
    if not combine:
        halves = _halves_out(u, delta, out, delta_is_low_rank=dt_proj is not None)
        return _launch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, halves, dir_first=0, n_dir=2,
                       out_scale=0.5, atomic=False, split=split, dt_proj=dt_proj)
    out32 = torch.zeros_like(u[0], dtype=torch.float32) if out is None else out  # both directions add into it
    _launch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out32, dir_first=0, n_dir=2, out_scale=0.5,
            atomic=True, split=split, dt_proj=dt_proj)
    return out32


def bimamba_scan_fwd_save(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, combine=True,
                          chunk=64, out=None, split=None, ordered_sum=False):
    """`bimamba_scan` for training: also returns the fp32 state checkpoints that `bwd.bimamba_scan_bwd` restarts
    from. Returns (out, checkpoints); out exactly as `bimamba_scan(..., combine, out)` returns it; checkpoints
    (2, batch, cdiv(L, chunk), N, E) fp32 contiguous, [dir, b, k] = the state entering scan step k * chunk of
    that direction (token k * chunk for the forward direction, L - 1 - k * chunk for the backward one; slot 0
    holds the zero initial state). chunk: even, 2..1024 (64..256 on the GPU: memory B*2*E*N*cdiv(L, chunk)*4
    bytes against the backward's recomputation per chunk). split: as in `selective_scan`; any even T gives the
    same checkpoints (the automatic T is a multiple of chunk).
    ordered_sum=True (with combine=False): returns the combined output (batch, E, L) in u's dtype, laid out
    (batch, L, E) (out_proj's rows), without the halves: the directions run as two launches in order, the forward
    one storing its gated half, the backward one adding it to its own in fp32 and storing the sum (one rounding
    of each: no fp32 buffer, atomics or separate add)."""
    if not ordered_sum:
        # The outputs exist before the launch (checkpoints, and out: given, new, or the combined form's zero-filled
        # fp32 sum): the call is replayed when its signature was seen before (kernels/launch.py CallMemo), as
        # `bimamba_scan`'s; the recording keeps the layouts of the buffers it allocated.
        inputs = (u, delta, A, B, C, D, z, delta_bias, out)
        sig = _SCAN_MEMO.signature(inputs, "save", bool(delta_softplus), combine, chunk, split)
        specs = _SCAN_MEMO.extra(sig)
        if specs is not None:
            made = tuple(None if spec is None else spec.make(u.device) for spec in specs)
            if _SCAN_MEMO.replay(sig, inputs + made):
                return _saved_output(out if made[0] is None else made[0], combine, u), made[1]
    chunk = int(chunk)
    if chunk < 2 or chunk % 2 or chunk > 1024:
        raise ValueError(f"chunk must be an even number of tokens in 2..1024; got {chunk}")
    _check(u, delta, A, B, C, 2)
    _, batch, channels, length = u.shape
    checkpoints = torch.empty(2, batch, cdiv(length, chunk), A.shape[-1], channels, dtype=torch.float32,
                              device=u.device)
    if not ordered_sum:
        if combine and out is not None:
            raise ValueError("out= is only taken with combine=False")
        target = torch.zeros_like(u[0], dtype=torch.float32) if combine else _halves_out(u, delta, out)
        made = (None if target is out else target, checkpoints)
        specs = (None if made[0] is None else BufferSpec.of(target, zero=combine), BufferSpec.of(checkpoints))
        with _SCAN_MEMO.record(sig, inputs + made, extra=specs, scratch=True):
            _launch(u, delta, A.float(), B, C, None if D is None else D.float(), z,
                    None if delta_bias is None else delta_bias.float(), delta_softplus, target, dir_first=0,
                    n_dir=2, out_scale=0.5, atomic=combine, checkpoints=checkpoints, save_every=chunk, split=split)
        return _saved_output(target, combine, u), checkpoints
    if combine or out is not None:
        raise ValueError("ordered_sum=True takes combine=False and no out=")
    A = A.float()
    D = None if D is None else D.float()
    delta_bias = None if delta_bias is None else delta_bias.float()
    y = torch.empty(batch, length, channels, dtype=u.dtype, device=u.device).transpose(1, 2)
    pick = lambda t, d: None if t is None else t[d:d + 1]  # noqa: E731
    for d in range(2):  # the forward direction stores, then the backward one adds (ATOMIC=2)
        _launch(u[d:d + 1], delta[d:d + 1], A[d:d + 1], B[d:d + 1], C[d:d + 1], pick(D, d), z,
                pick(delta_bias, d), delta_softplus, y, dir_first=d, n_dir=1, out_scale=0.5,
                atomic=2 if d else False, checkpoints=checkpoints[d:d + 1], save_every=chunk, split=split)
    return y, checkpoints


def _saved_output(target, combine: bool, u):
    """`bimamba_scan_fwd_save`'s output from its target: the combined form's fp32 sum rounded to u's dtype."""
    return target.to(u.dtype) if combine and u.dtype != torch.float32 else target


def _halves_out(u, delta, out, delta_is_low_rank=False):
    """The output of combine=False: a new tensor laid out like u, or `out` after checking it. A low-rank delta
    (dt_proj fused) is read by every lane of a program, so out may not overwrite it."""
    if out is None:
        return torch.empty_like(u)
    if out.shape != u.shape or out.dtype != u.dtype or out.device != u.device:
        raise ValueError(f"out must be {tuple(u.shape)} {u.dtype} on {u.device}; got {tuple(out.shape)} "
                         f"{out.dtype} on {out.device}")
    if delta_is_low_rank and out.untyped_storage().data_ptr() == delta.untyped_storage().data_ptr():
        raise ValueError("out shares memory with the low-rank delta that every lane reads; pass u or a separate "
                         "tensor")
    for name, t in (("u", u), ("delta", delta)):
        if out.untyped_storage().data_ptr() == t.untyped_storage().data_ptr() and \
                (out.data_ptr() != t.data_ptr() or out.stride() != t.stride()):
            raise ValueError(f"out shares memory with {name} but is not {name} itself; pass {name} or a separate "
                             "tensor")
    return out
