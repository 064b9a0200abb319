"""The one-pass scan with its B and C rows staged through shared memory by Triton's software pipeliner.

Why (kernels/NOTES.md, "Session ab"): `fwd._scan_kernel`'s main loop carries the next trip's tokens in registers,
and ptxas sinks those loads to the end of the trip to save registers, so each trip waits on memory (the L1
prefetch four steps ahead covers part of it; Nsight: MUFU pipe 58%, long scoreboard 2 of 5 cycles per
instruction at Vim-Ti 1248 px, batch 64). Here the loop loads the rows it uses in the same iteration and Triton's
pipeliner (`tl.range(num_stages=STAGES)`) turns those loads into cp.async copies into shared memory issued
STAGES - 1 iterations ahead: no registers hold the rows in flight. The 16-bit u, delta and z (2 bytes per lane,
below cp.async's 4) are loaded in the trip that uses them or one trip ahead, optionally prefetched to L1.

Same arguments as `fwd._scan_kernel` (so `fwd._launch` launches either); inference only: no checkpoints
(SAVE_EVERY 0), no fused dt_proj (DT_RANK 0), outputs stored or added with atomics (ATOMIC 0 or 1).
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels import fastmath
from kernels.selective_scan.fwd import _load_lanes, _token_step_at, channel_rows, decay_rates


@triton.jit(do_not_specialize=["L"])
def _scan_staged_kernel(
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
    STAGES: tl.constexpr = 4, CARRY: tl.constexpr = 0, BC_JOINED: tl.constexpr = False, TRIP: tl.constexpr = 2,
):
    """One program: BLOCK_C channels of one (direction, batch), as `fwd._scan_kernel`. Trips of TRIP (2 or 4)
    tokens; the B and C rows of a trip come through shared memory (STAGES pipeline stages), u, delta and z in the
    trip (CARRY 0) or one trip ahead in registers (CARRY 2, trips of 2). L1_AHEAD: 0, or D > 0: each trip also asks
    L1 for the u, delta and z lines of the tokens D scan steps past its own (no registers). PREFETCH and
    UNROLL_TRIPS are accepted for the common signature and ignored.
    BC_JOINED: each token's C row directly follows its B row (C_ptr == B_ptr + N, same strides, stride_B_n == 1:
    the model's x_dbl rows [B | C | dt | pad]); then one (2N,) load per token brings both, which the pipeliner
    copies spread over the lanes (one 4-byte cp.async per lane) instead of from one lane in 16-byte pieces."""
    tl.static_assert(SAVE_EVERY == 0, "the staged scan takes no checkpoints")
    tl.static_assert(DT_RANK == 0, "the staged scan takes no fused dt_proj")
    tl.static_assert(ATOMIC != 2, "the staged scan has no ordered sum")
    pid_c = tl.program_id(0)
    direction = tl.program_id(1).to(tl.int64)
    backward = (tl.program_id(1) + dir_first) == 1
    pid_b = tl.program_id(2).to(tl.int64)

    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < E
    c64 = offs_c.to(tl.int64)
    states = tl.arange(0, N_STATE)
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e
    dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e
    B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n
    C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e
    out_base = out_ptr + direction * stride_out_dir + pid_b * stride_out_b + c64 * stride_out_e
    A2 = decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE, BLOCK_C)
    D_row, bias_row = channel_rows(D_ptr, bias_ptr, direction, stride_D_dir, stride_bias_dir, c64, mask_c, HAS_D,
                                   HAS_BIAS, BLOCK_C)
    if BC_JOINED:
        B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + tl.arange(0, 2 * N_STATE)
    h = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    args = (u_base, dt_base, z_base, B_base, C_base, out_base, A2, D_row, bias_row, mask_c, L, out_scale, h)
    if backward:
        _staged_walk(*args, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l, -1, HAS_D,
                     HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, MASK_C, STAGES, CARRY, BC_JOINED, L1_AHEAD, TRIP)
    else:
        _staged_walk(*args, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l, 1, HAS_D,
                     HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, MASK_C, STAGES, CARRY, BC_JOINED, L1_AHEAD, TRIP)


@triton.jit
def _lanes_at(u_base, dt_base, z_base, t, valid, mask_c, stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr,
              stride_z_l: tl.constexpr, HAS_Z: tl.constexpr, MASKED: tl.constexpr = True):
    """Token t's (C,) u, delta and z in fp32; zeros where `valid` (a scalar) or the lane mask is false. MASKED
    False: t is inside L and every lane is a channel (no predicates, no zero fill)."""
    mask = mask_c & valid
    u = _load_lanes(u_base + t * stride_u_l, mask, MASKED)
    dt = _load_lanes(dt_base + t * stride_dt_l, mask, MASKED)
    if HAS_Z:
        z = _load_lanes(z_base + t * stride_z_l, mask, MASKED)
    else:
        z = u
    return u, dt, z


@triton.jit
def _rows_at(B_base, C_base, t, stride_B_l: tl.constexpr, stride_C_l: tl.constexpr, BC_JOINED: tl.constexpr):
    """Token t's (N,) B and C rows, fp32; BC_JOINED: B_base addresses the (2N,) row [B | C]."""
    return _rows_from(B_base + t * stride_B_l, C_base + t * stride_C_l, BC_JOINED)


@triton.jit
def _rows_from(B_p, C_p, BC_JOINED: tl.constexpr):
    """`_rows_at` from the token's row pointers."""
    if BC_JOINED:
        rows = tl.load(B_p).to(tl.float32)
        Bt, Ct = tl.split(tl.permute(tl.reshape(rows, (2, rows.shape[0] // 2)), (1, 0)))
    else:
        Bt = tl.load(B_p).to(tl.float32)
        Ct = tl.load(C_p).to(tl.float32)
    return Bt, Ct


@triton.jit
def _staged_walk(u_base, dt_base, z_base, B_base, C_base, out_base, A2, D_row, bias_row, mask_c, L, out_scale, h,
                 stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr, stride_z_l: tl.constexpr,
                 stride_B_l: tl.constexpr, stride_C_l: tl.constexpr, stride_out_l: tl.constexpr,
                 SIGN: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                 SOFTPLUS: tl.constexpr, ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, MASK_C: tl.constexpr,
                 STAGES: tl.constexpr, CARRY: tl.constexpr = 0, BC_JOINED: tl.constexpr = False,
                 L1_AHEAD: tl.constexpr = 0, TRIP: tl.constexpr = 2):
    """L scan steps in trips of TRIP (2 or 4) tokens (scan step s at token t_first + SIGN * s), then the last
    L % TRIP steps one at a time. Each trip loads its own B and C rows (the pipeliner stages them through shared
    memory); u, delta and z arrive in the same trip (CARRY 0) or, with TRIP 2, one trip ahead in registers
    (CARRY 2). (Two trips ahead in registers kept the pipeliner of triton 3.6 from staging anything: loads used
    two iterations later.)"""
    tl.static_assert(TRIP == 2 or (TRIP == 4 and CARRY == 0), "trips of 4 tokens load their lanes in the trip")
    t_first = L * 0
    if SIGN < 0:
        t_first = L - 1
    if CARRY != 0:  # scan steps 0 and 1's lanes; a step past L reads zeros (never used)
        a0 = _lanes_at(u_base, dt_base, z_base, t_first, 0 < L, mask_c, stride_u_l, stride_dt_l, stride_z_l, HAS_Z)
        a1 = _lanes_at(u_base, dt_base, z_base, t_first + SIGN, 1 < L, mask_c, stride_u_l, stride_dt_l, stride_z_l,
                       HAS_Z)
    for k in tl.range(0, L // TRIP, num_stages=STAGES):
        t0 = t_first + SIGN * TRIP * k
        # the trip's pointers once; its tokens (and the prefetched ones) at constant offsets from them
        u_p, dt_p, z_p = u_base + t0 * stride_u_l, dt_base + t0 * stride_dt_l, z_base + t0 * stride_z_l
        if L1_AHEAD > 0:
            for j in tl.static_range(TRIP):
                ahead = mask_c & (TRIP * k + L1_AHEAD + j < L)
                fastmath.prefetch_l1(u_p + SIGN * (L1_AHEAD + j) * stride_u_l, USE_ASM, ahead)
                fastmath.prefetch_l1(dt_p + SIGN * (L1_AHEAD + j) * stride_dt_l, USE_ASM, ahead)
                if HAS_Z:
                    fastmath.prefetch_l1(z_p + SIGN * (L1_AHEAD + j) * stride_z_l, USE_ASM, ahead)
        if CARRY == 0:
            B_p, C_p, out_p = B_base + t0 * stride_B_l, C_base + t0 * stride_C_l, out_base + t0 * stride_out_l
            for j in tl.static_range(TRIP):
                Bt, Ct = _rows_from(B_p + SIGN * j * stride_B_l, C_p + SIGN * j * stride_C_l, BC_JOINED)
                lanes = _lanes_at(u_p, dt_p, z_p, SIGN * j, True, mask_c, stride_u_l, stride_dt_l, stride_z_l, HAS_Z,
                                  MASK_C)
                h = _token_step_at(h, out_p + SIGN * j * stride_out_l, mask_c, lanes[0], lanes[1], lanes[2], Bt, Ct,
                                   A2, D_row, bias_row, out_scale, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM,
                                   False, MASK_C)
        else:
            B0, C0 = _rows_at(B_base, C_base, t0, stride_B_l, stride_C_l, BC_JOINED)
            B1, C1 = _rows_at(B_base, C_base, t0 + SIGN, stride_B_l, stride_C_l, BC_JOINED)
            n0 = _lanes_at(u_base, dt_base, z_base, t0 + 2 * SIGN, 2 * k + 2 < L, mask_c, stride_u_l, stride_dt_l,
                           stride_z_l, HAS_Z)
            n1 = _lanes_at(u_base, dt_base, z_base, t0 + 3 * SIGN, 2 * k + 3 < L, mask_c, stride_u_l, stride_dt_l,
                           stride_z_l, HAS_Z)
            out_p = out_base + t0 * stride_out_l
            h = _token_step_at(h, out_p, mask_c, a0[0], a0[1], a0[2], B0, C0, A2, D_row, bias_row, out_scale,
                               HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, False, MASK_C)
            h = _token_step_at(h, out_p + SIGN * stride_out_l, mask_c, a1[0], a1[1], a1[2], B1, C1, A2, D_row,
                               bias_row, out_scale, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, False, MASK_C)
            a0, a1 = n0, n1
    for step in range(L // TRIP * TRIP, L):  # the last L % TRIP steps
        t = t_first + SIGN * step
        Bt, Ct = _rows_at(B_base, C_base, t, stride_B_l, stride_C_l, BC_JOINED)
        lanes = _lanes_at(u_base, dt_base, z_base, t, True, mask_c, stride_u_l, stride_dt_l, stride_z_l, HAS_Z,
                          MASK_C)
        h = _token_step_at(h, out_base + t * stride_out_l, mask_c, lanes[0], lanes[1], lanes[2], Bt, Ct, A2, D_row,
                           bias_row, out_scale, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, False, MASK_C)


def bc_joined(B, C) -> bool:
    """Whether every token's C row directly follows its B row in memory (`_scan_staged_kernel`'s BC_JOINED): same
    dtype and strides, contiguous along N, C starting N elements after B."""
    n = B.shape[-2]
    return (B.dtype == C.dtype and B.stride() == C.stride() and B.stride(-2) == 1
            and C.data_ptr() - B.data_ptr() == n * B.element_size())
