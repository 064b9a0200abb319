"""Backward pass of the bidirectional selective scan in Triton (`bimamba_scan_bwd`), from saved state checkpoints.

API (what an autograd wrapper calls; both functions take the direction-stacked inputs of `bimamba_scan`):

    out, checkpoints = fwd.bimamba_scan_fwd_save(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True,
                                                 combine=True, chunk=64)
    du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = bimamba_scan_bwd(grad_out, u, delta, A, B, C, D, z, delta_bias,
                                                                   checkpoints, delta_softplus, combine, chunk,
                                                                   chunks_per_program=None)

Saved-tensor contract: the backward needs the forward's inputs u, delta, A, B, C, D, z, delta_bias (the same
tensors, or equal values in any strides) and `checkpoints`, with the same delta_softplus, combine and chunk. It
does not need the forward's output: y is recomputed. checkpoints is fp32, contiguous,
(2, batch, cdiv(L, chunk), N, E): [dir, b, k] is the state entering scan step k * chunk of that direction (slot 0 is
the zero initial state). Memory per scan call (per layer): 2 * batch * E * N * cdiv(L, chunk) * 4 bytes, e.g.
Vim-Ti (E=384, N=16) at 1248 px (L=6085), batch 8, chunk 64: 37.7 MB, against 2.4 GB for all states.

Shapes: grad_out is (batch, E, L) for combine=True (the gradient of 0.5 * (y_fwd + y_bwd) * SiLU(z)), or
(2, batch, E, L) for combine=False (the gradients of the two gated halves 0.5 * y_dir * SiLU(z)); any strides,
any float dtype. Returned: du like u, ddelta like delta (dtype, and layout when u/delta are dense);
dA (2, E, N) fp32; dB, dC (2, batch, N, L) fp32 (views with stride 1 along N); dD, ddelta_bias (2, E) fp32 or
None when D/delta_bias is None; dz in z's dtype, laid out like u[0], or None when z is None.

Design (one program = BLOCK_C channels, one per lane, of one (direction, batch, chunk group), like the forward):
- Chunk-parallel over L. The adjoint l_s = dL/dh_s obeys l_s = C_s dy_s + a_{s+1} l_{s+1} (gradients:
  ../shared/spec/training.md), a linear recurrence run backwards, and dy_s = g_s * SiLU(z_s) needs no state.
  The scan steps are split into groups of `chunks_per_program` checkpoint chunks (scan_bwd_launch_config).
  Pass A (`_scan_bwd_group_carry_kernel`, every group but the first, in parallel): from a zero carry at the
  group's end, walk its steps backwards with carry = a_s (C_s dy_s + carry); store the carry leaving its first
  step (mu, (N, C)) and sum(Delta) over the group. The true carry leaving group j is
  mu_j + exp(A * sum_j Delta) * (the true carry entering it from group j + 1).
  Pass B (`_scan_bwd_kernel`, every group in parallel): fold the later groups' (mu, sum Delta) in reverse order
  into the carry entering the group (groups - 1 - g tile loads), then walk the group's chunks last to first as
  the sequential kernel did. With one group (batch * channels already fill the GPU, or forced) pass A does not
  run and the walk is the sequential kernel.
- Per chunk: reload its checkpoint, recompute the chunk's states forward, writing the state entering each step
  to a per-program fp32 scratch (chunk, N, BLOCK_C), then walk the chunk backwards carrying the adjoint l (N, C)
  in registers. A barrier separates the two passes (and the next chunk's overwrite). Where the walk runs capped
  without prefetch (PAIRS, the default there), only every other step's state is written and the walk rebuilds an
  odd step's from the even one before it: half the scratch traffic (kernels/NOTES.md); that walk also asks L1
  for its input lines 2 steps ahead and its scratch tile 4 steps ahead (L1_AHEAD, SCRATCH_AHEAD).
  Elsewhere both passes issue the next step's loads before the current step's arithmetic (PREFETCH, as in the
  forward).
  The scratch is transient: (programs of one walk launch) * chunk * N * BLOCK_C * 4 bytes per call, half that
  with PAIRS (Vim-Ti at 1248 px, batch 8, checkpoints every 128 tokens: 3,072 programs, 0.40 GB); (N, C) tiles
  move as N (C,) rows (fwd.store_rows says why), except the scratch's with VEC_SCRATCH (per-lane groups of 4
  states, 16-byte accesses; by default in the combined 16-bit walk). The walk can run in several launches over
  ranges of the channel blocks, one after the other, sharing the scratch and the dB/dC partials
  (`scan_bwd_launch_config`'s channel_splits: less memory, slower; one launch by default).
- du, ddelta (through softplus: * sigmoid(delta + bias); with softplus_done, delta being softplus(pre + bias)
  already, * (1 - e^-delta), the same slope) are stored per token; dz gets both directions'
  contributions by relaxed fp32 atomics onto zero (two additions: order-independent, so deterministic), or with
  dz_halves=True each direction stores its own term in z's dtype (the caller sums the two).
- dA, dD, ddelta_bias accumulate in registers and are written once per program (per-(batch, group) partials
  summed by torch). dB_s, dC_s (sums over channels) are reduced over the program's lanes (on the GPU by a
  reduce-scatter of warp shuffles, SCATTER_SUMS; in the combined 16-bit walk from the XOR state order, lane l
  holding state r ^ `_state_xor(l)` in row r, so that its first levels need no selects) and written as
  per-channel-block partials (a launch's channel blocks, 2, batch, L, N), summed by torch after each launch: no
  per-element atomics, deterministic.
- Masked channels have Delta = u = 0 and a zero upstream gradient, so their adjoint stays 0 and adds nothing.
- Program ids are widened to int64 before multiplying strides (the per-program row bases); token indices stay 32-bit
  (t * stride along L: `runtime.check_token_offsets` raises where that would not fit), which took the walk's loop
  body from 919 to 741 SASS instructions on sm_90 (int64 step arithmetic cost ~8 per pointer). L is not
  specialized on. The token strides are constexpr (a launch compiles per layout) and the walk (`_bwd_walk`) is
  compiled once per direction: each pointer one multiply-add by a constant (kernels/NOTES.md, "The scan
  backward's walk per direction").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels import fastmath
from kernels.launch import BufferSpec, CallMemo, launch
from kernels.runtime import (INT32_LIMIT, LaunchConfig, cdiv, check_device, check_token_offsets, interpreted_block_c,
                             sm_count, sum_partials)
from kernels.selective_scan.fwd import (LN2, LOG2E, SOFTPLUS_LOG1P_POLY, _blocks_for, _check, _load_lanes,
                                        _softplus_exp, _softplus_sigmoid, channel_rows, decay_rates, load_rows,
                                        store_rows)


@triton.jit
def _channel_mask(offs_c, E, BLOCK_C: tl.constexpr, MASK_C: tl.constexpr):
    """The program's channel lanes inside E; with MASK_C False (E a multiple of BLOCK_C) a constant all-true mask,
    which Triton folds away: the masked loads become plain loads without the predicate and the zero fill (static,
    triton 3.6: pass A 257 -> 239 SASS instructions per two steps, the walk 718 -> 678 per step; UNMASKED_WALK)."""
    if MASK_C:
        return offs_c < E
    else:
        return tl.full((BLOCK_C,), 1, tl.int1)


@triton.jit(do_not_specialize=["L", "chunks_per_program", "c_block0"])
def _scan_bwd_kernel(
    g_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, ckpt_ptr, scratch_ptr,
    mu_ptr, dsum_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    E, L, g_scale, chunks_per_program, c_block0,
    stride_g_dir, stride_g_b, stride_g_e, stride_g_l: tl.constexpr,
    stride_u_dir, stride_u_b, stride_u_e, stride_u_l: tl.constexpr,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l: tl.constexpr,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_B_dir, stride_B_b, stride_B_n, stride_B_l: tl.constexpr,
    stride_C_dir, stride_C_b, stride_C_n, stride_C_l: tl.constexpr,
    stride_D_dir, stride_bias_dir,
    stride_z_b, stride_z_e, stride_z_l: tl.constexpr,
    stride_du_dir, stride_du_b, stride_du_e, stride_du_l: tl.constexpr,
    stride_ddt_dir, stride_ddt_b, stride_ddt_e, stride_ddt_l: tl.constexpr,
    stride_dz_dir: tl.constexpr, stride_dz_b, stride_dz_e, stride_dz_l: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr, SEG: tl.constexpr,
    SUB_TILES: tl.constexpr, SCATTER_SUMS: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, L1_AHEAD: tl.constexpr = 0, PAIRS: tl.constexpr = False,
    SCRATCH_AHEAD: tl.constexpr = 0, SCRATCH_EVICT: tl.constexpr = None, OUT_EVICT: tl.constexpr = None,
    MASK_C: tl.constexpr = True, DZ_HALVES: tl.constexpr = False, CARRY_H: tl.constexpr = False,
    PAIR_TRIPS: tl.constexpr = False, VEC_SCRATCH: tl.constexpr = False,
):
    """One program: BLOCK_C channels of one (direction, batch, chunk group); grid (channel blocks of this launch,
    2 * groups, batch), axis 1 = 2 * group + direction; axis 0 counts channel blocks from c_block0 (a launch may
    cover a range of them: `ScanBwdLaunch.channel_splits`); direction 1 runs its tokens from L-1 down to 0. A group is
    `chunks_per_program` consecutive checkpoint chunks (in scan order), walked last to first from the adjoint
    carried in from the groups after it: folded here from the later groups' local carries (mu_ptr,
    (2, batch, groups, N, E)) and Delta sums (dsum_ptr, (2, batch, groups, E)) that
    `_scan_bwd_group_carry_kernel` wrote; with one group nothing is read and the carry starts at zero.
    Partial outputs (contiguous, laid out by the launcher): dB/dC (this launch's channel blocks, 2, batch, L, N),
    dA (batch * groups, 2, E, N), dD/dbias (batch * groups, 2, E); scratch (this launch's programs, tiles, N,
    BLOCK_C).
    L1_AHEAD: 0, or D > 0: the recomputation and the walk also ask L1 (`prefetch.global.L1`, no registers) for the
    lines of the step D steps ahead in their order (u, delta, the gradient, z, B/C rows): the forward
    scan's remedy for its long-scoreboard stalls (kernels/NOTES.md; here -9% on long one-wave walks, see
    DEFAULT_L1_AHEAD).
    PAIRS (with SUB = 0, PREFETCH off): the recomputation stores only the state entering every even step (half the
    scratch written and read), and the walk rebuilds an odd step's entering state by one recurrence step from the
    even one before it (one more exp and two FMAs per state element there; that step's inputs are read again
    right after, for the even step, from L1).
    SCRATCH_AHEAD: 0, or D > 0: each walk step also asks L1 for the scratch tile the step D steps further on reads
    (one `prefetch.global.L1` per step: lane l names the tile's row l % N, one 128-byte line each).
    SCRATCH_EVICT / OUT_EVICT: L2 eviction policies of the scratch's stores and loads and of the per-token
    gradient stores (du, ddelta, the dB/dC rows): None (the default policy), "evict_first", "evict_last".
    MASK_C: E is not a multiple of BLOCK_C, so channel lanes need masks (False: none, `_channel_mask`).
    DZ_HALVES: each direction stores its own term of dz (dz_ptr (2, batch, E, L), stride_dz_dir) instead of adding
    it into one fp32 dz with atomics (stride_dz_dir 0; constexpr, so that the atomic form compiles as before).
    CARRY_H: the state leaving a step is taken from the step after it (walked just before: its entering state) or,
    for a segment's last step, from the recomputation's end state, instead of being recomputed from the entering
    state (DEFAULT_CARRY_H).
    PAIR_TRIPS (with PAIRS): the walk two steps per loop trip, an odd step and the even step before it, the leaving
    state carried as with CARRY_H (DEFAULT_PAIR_TRIPS).
    VEC_SCRATCH: the scratch's state tiles as per-lane groups of 4 states (`_load_state_tile`; N = 16).
    SCATTER_SUMS: False, dB/dC summed over the channels by tl.sum; True, by a reduce-scatter over the lanes
    (`_scattered_lane_sums`; BLOCK_C = 32, N = 16); 2, the same from the XOR state order: every (N, C) tile the walk
    holds (A, the states, the adjoint, dA, the B and C rows) has lane l's state r ^ _state_xor(l) in row r, so that
    the reduce-scatter's first two levels need no selects (B and C with unit state stride)."""
    pid_c = tl.program_id(0).to(tl.int64)
    direction = (tl.program_id(1) % 2).to(tl.int64)
    group = (tl.program_id(1) // 2).to(tl.int64)
    backward = (tl.program_id(1) % 2) == 1
    pid_b = tl.program_id(2).to(tl.int64)
    n_dirs = 2
    n_groups = tl.num_programs(1) // 2
    n_batch = tl.num_programs(2)
    n_cblocks = tl.num_programs(0)

    offs_c = (c_block0 + pid_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = _channel_mask(offs_c, E, BLOCK_C, MASK_C)
    c64 = offs_c.to(tl.int64)
    states = tl.arange(0, N_STATE)
    tile_mask = mask_c[None, :]

    g_base = g_ptr + direction * stride_g_dir + pid_b * stride_g_b + c64 * stride_g_e
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e
    dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e
    lanes = tl.arange(0, BLOCK_C)
    zero_c = offs_c * 0  # (C,) pointers to the B and C rows (the L1 prefetch: one line per warp and row)
    if SCATTER_SUMS == 2:  # the XOR state order (`_state_xor`); B and C rows move as per-lane groups of 4 states
        order = states[:, None] ^ _state_xor(lanes)[None, :]
        B_base = _state_groups(B_ptr + direction * stride_B_dir + pid_b * stride_B_b + zero_c)
        C_base = _state_groups(C_ptr + direction * stride_C_dir + pid_b * stride_C_b + zero_c)
    else:  # (N,) pointers: every lane reads the same row
        order = states[:, None]
        B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n
        C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e
    BC_lanes = (B_ptr + direction * stride_B_dir + pid_b * stride_B_b + zero_c,
                C_ptr + direction * stride_C_dir + pid_b * stride_C_b + zero_c)
    du_base = du_ptr + direction * stride_du_dir + pid_b * stride_du_b + c64 * stride_du_e
    ddt_base = ddelta_ptr + direction * stride_ddt_dir + pid_b * stride_ddt_b + c64 * stride_ddt_e
    dz_base = dz_ptr + direction * stride_dz_dir + pid_b * stride_dz_b + c64 * stride_dz_e
    # (N,) row of token t in the dB/dC partials: [pid_c, direction, pid_b, t, :]
    dBC_off = ((pid_c * n_dirs + direction) * n_batch + pid_b) * L * N_STATE + states
    # SCATTER_SUMS (BLOCK_C = 32 = N_STATE * 2, one warp): the same rows stored from the lanes, state l // 2
    even_lane = (lanes % 2) == 0
    dBC_row = ((pid_c * n_dirs + direction) * n_batch + pid_b) * L * N_STATE + lanes // 2
    n_chunks = tl.cdiv(L, CHUNK)
    # (C,) pointers to row 0 of this program's channels in checkpoint slot 0 and in scratch step 0; (N, C) tiles
    # move as N (C,) rows (fwd.store_rows says why).
    ckpt_lanes = ckpt_ptr + (direction * n_batch + pid_b) * n_chunks * N_STATE * E + c64
    part = pid_b * n_groups + group  # this program's slot in the dA/dD/dbias partials
    program = (part * n_dirs + direction) * n_cblocks + pid_c
    # per program: SUB_TILES + SEG state tiles, or SUB_TILES + cdiv(SEG, 2) with PAIRS (`scan_bwd_launch_config`)
    tiles = SUB_TILES + ((SEG + 1) // 2 if PAIRS else SEG)
    if VEC_SCRATCH:  # (C, 4): lane l's 4 states of group 0 at 4 l + k (`_load_state_tile`)
        scratch_lanes = scratch_ptr + program * (tiles * N_STATE * BLOCK_C) + \
            (4 * tl.arange(0, BLOCK_C))[:, None] + tl.arange(0, 4)[None, :]
    else:
        scratch_lanes = scratch_ptr + program * (tiles * N_STATE * BLOCK_C) + tl.arange(0, BLOCK_C)
    # SCRATCH_AHEAD: lane l's line in a state tile (row l % N)
    tile_line_lanes = scratch_ptr + program * (tiles * N_STATE * BLOCK_C) + SUB_TILES * (N_STATE * BLOCK_C) + \
        (tl.arange(0, BLOCK_C) % N_STATE) * BLOCK_C

    # A pre-scaled so that exp(Delta * A) = exp2(Delta * A2); N (C,) row loads keep lanes on channels (fwd.py).
    A_rows = A_ptr + direction * stride_A_dir + c64 * stride_A_e
    A2 = _load_state_rows(A_rows, stride_A_n, mask_c, lanes, N_STATE, BLOCK_C, SCATTER_SUMS) * LOG2E
    D_row, bias_row = channel_rows(D_ptr, bias_ptr, direction, stride_D_dir, stride_bias_dir, c64, mask_c, HAS_D,
                                   HAS_BIAS, BLOCK_C)

    # The carry a_{s+1} * l_{s+1} entering the group's last step: the later groups' local carries folded in
    # reverse scan order, kappa_{j-1} = mu_j + exp(A * sum_j Delta) * kappa_j from kappa_{groups-1} = 0.
    carry = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    seq = (direction * n_batch + pid_b) * n_groups  # slot of group 0 of this (direction, batch)
    for jg in range(0, n_groups - 1 - group):
        j = n_groups - 1 - jg
        mu = _load_state_rows(mu_ptr + (seq + j) * (N_STATE * E) + c64, E, mask_c, lanes, N_STATE, BLOCK_C,
                              SCATTER_SUMS)
        dsum = tl.load(dsum_ptr + (seq + j) * E + c64, mask=mask_c, other=0.0)
        carry = mu + tl.exp2(A2 * dsum[None, :]) * carry
    dA_acc = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
    # Token indices in 32 bits (the launcher checks that (L - 1) * every token stride fits): per step, each
    # pointer is then one 32 x 32 -> 64-bit multiply-add, where int64 indices cost ~8 instructions per pointer.
    first_chunk = (tl.program_id(1) // 2) * chunks_per_program
    last_chunk = tl.minimum(first_chunk + chunks_per_program, n_chunks)
    # The walk in two copies, one per direction (a uniform branch per program). (Tuples of constexprs would reach
    # the callee as tensors under triton 3.6, so the flags are written out.)
    walk_args = (first_chunk, last_chunk, L, E, ckpt_lanes, scratch_lanes, tile_line_lanes, A2, D_row, bias_row,
                 g_scale, carry, dA_acc, dD_acc, dbias_acc, mask_c, u_base, dt_base, g_base, z_base, B_base, C_base,
                 BC_lanes, du_base, ddt_base, dz_base, dB_ptr, dC_ptr, dBC_row, dBC_off, lanes, even_lane)
    if backward:
        dA_acc, dD_acc, dbias_acc = _bwd_walk(
            *walk_args, stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l, stride_du_l,
            stride_ddt_l, stride_dz_l, True, N_STATE, BLOCK_C, CHUNK, SUB, SEG, SUB_TILES, SCATTER_SUMS, HAS_D, HAS_Z,
            HAS_BIAS, SOFTPLUS, USE_ASM, PREFETCH, L1_AHEAD, PAIRS, SCRATCH_AHEAD, SCRATCH_EVICT, OUT_EVICT,
            DZ_HALVES, CARRY_H, PAIR_TRIPS)
    else:
        dA_acc, dD_acc, dbias_acc = _bwd_walk(
            *walk_args, stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l, stride_du_l,
            stride_ddt_l, stride_dz_l, False, N_STATE, BLOCK_C, CHUNK, SUB, SEG, SUB_TILES, SCATTER_SUMS, HAS_D,
            HAS_Z, HAS_BIAS, SOFTPLUS, USE_ASM, PREFETCH, L1_AHEAD, PAIRS, SCRATCH_AHEAD, SCRATCH_EVICT, OUT_EVICT,
            DZ_HALVES, CARRY_H, PAIR_TRIPS)

    dA_tile = dA_ptr + ((part * n_dirs + direction) * E + c64[None, :]) * N_STATE + order
    tl.store(dA_tile, dA_acc, mask=tile_mask)
    row_off = (part * n_dirs + direction) * E + c64
    if HAS_D:
        tl.store(dD_ptr + row_off, dD_acc, mask=mask_c)
    if HAS_BIAS:
        tl.store(dbias_ptr + row_off, dbias_acc, mask=mask_c)


@triton.jit
def _bwd_walk(first_chunk, last_chunk, L, E, ckpt_lanes, scratch_lanes, tile_line_lanes, A2, D_row, bias_row, g_scale,
              carry, dA_acc, dD_acc, dbias_acc, mask_c, u_base, dt_base, g_base, z_base, B_base, C_base, BC_lanes,
              du_base, ddt_base, dz_base, dB_ptr, dC_ptr, dBC_row, dBC_off, lanes, even_lane,
              stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr, stride_g_l: tl.constexpr, stride_z_l: tl.constexpr,
              stride_B_l: tl.constexpr, stride_C_l: tl.constexpr, stride_du_l: tl.constexpr,
              stride_ddt_l: tl.constexpr, stride_dz_l: tl.constexpr,
              backward: tl.constexpr, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
              SUB: tl.constexpr, SEG: tl.constexpr, SUB_TILES: tl.constexpr, SCATTER_SUMS: tl.constexpr,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, L1_AHEAD: tl.constexpr, PAIRS: tl.constexpr,
              SCRATCH_AHEAD: tl.constexpr, SCRATCH_EVICT: tl.constexpr, OUT_EVICT: tl.constexpr,
              DZ_HALVES: tl.constexpr, CARRY_H: tl.constexpr, PAIR_TRIPS: tl.constexpr = False):
    """`_scan_bwd_kernel`'s walk over its chunks (last to first), for one direction (`backward` constexpr: the
    kernel holds it once per direction, a uniform branch per program) with the token strides constexpr: each
    token's pointers are then one multiply-add by a constant, and a pair's two tokens sit a constant offset apart.
    Returns dA_acc, dD_acc, dbias_acc updated."""
    # Scratch per program: with SUB > 0 first the sub-checkpoints (the state entering every SUB-th step of the
    # chunk), then SEG state tiles: the segment being walked back.
    states_lanes = scratch_lanes + SUB_TILES * (N_STATE * BLOCK_C)
    for k in range(0, last_chunk - first_chunk):
        chunk = last_chunk - 1 - k
        start = chunk * CHUNK
        n_in = tl.minimum(L - start, CHUNK)
        ck_lanes = ckpt_lanes + chunk.to(tl.int64) * (N_STATE * E)
        if SUB > 0:  # forward over the chunk from its checkpoint, keeping every SUB-th state
            h = _load_state_rows(ck_lanes, E, mask_c, lanes, N_STATE, BLOCK_C, SCATTER_SUMS)
            h = _recompute(h, start, n_in, A2, bias_row, L, backward, mask_c, u_base, dt_base, B_base,
                           stride_u_l, stride_dt_l, stride_B_l, scratch_lanes, SUB, N_STATE, BLOCK_C, HAS_BIAS,
                           SOFTPLUS, USE_ASM, PREFETCH, L1_AHEAD, BC_lanes[0], SCRATCH_EVICT)
            tl.debug_barrier()  # the sub-checkpoints are read below by whichever thread the layout gives them
        for q in range(0, tl.cdiv(n_in, SEG)):
            seg = tl.cdiv(n_in, SEG) - 1 - q
            seg_start = start + seg * SEG
            n_seg = tl.minimum(n_in - seg * SEG, SEG)
            if SUB > 0:
                h = _load_state_tile(scratch_lanes + seg * (N_STATE * BLOCK_C), mask_c, N_STATE, BLOCK_C, None,
                                     USE_ASM)
            else:
                h = _load_state_rows(ck_lanes, E, mask_c, lanes, N_STATE, BLOCK_C, SCATTER_SUMS)
            # Forward over the segment: states[j] = the state entering step seg_start + j (PAIRS: states[j // 2]
            # for even j only).
            h = _recompute(h, seg_start, n_seg, A2, bias_row, L, backward, mask_c, u_base, dt_base, B_base,
                           stride_u_l, stride_dt_l, stride_B_l, states_lanes, 2 if PAIRS else 1, N_STATE, BLOCK_C,
                           HAS_BIAS, SOFTPLUS, USE_ASM, PREFETCH, L1_AHEAD, BC_lanes[0], SCRATCH_EVICT)
            tl.debug_barrier()  # the states are read below by whichever thread the layout gives each element
            tok_args = (seg_start, L, backward, mask_c, u_base, dt_base, g_base, z_base, B_base, C_base,
                        states_lanes, stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l)
            in_args = (seg_start, L, backward, mask_c, u_base, dt_base, g_base, z_base, B_base, C_base, stride_u_l,
                       stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l)
            out_args = (A2, D_row, g_scale, du_base, ddt_base, dz_base, dB_ptr, dC_ptr, dBC_row, dBC_off, lanes,
                        even_lane, mask_c, stride_du_l, stride_ddt_l, stride_dz_l)
            # (the constexpr flags are written out at each call: in a tuple they would reach the callee as
            # tensors under triton 3.6)
            hint_args = (seg_start, L, backward, mask_c, u_base, dt_base, g_base, z_base, BC_lanes, tile_line_lanes,
                         stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l)
            if PAIRS and PAIR_TRIPS:
                # Two steps per trip, an odd step j and the even step j - 1 before it in scan order; the state
                # leaving a step is the one entering the step after it (carried in h), so each step's states come
                # from the scratch tile j // 2 that both share: the even step's as stored, the odd step's one
                # recurrence step on from it (the odd step's inputs are L1-warm: read again for the even step).
                if n_seg % 2 == 1:  # the segment's last step is even: walked alone first
                    _walk_hints(n_seg - 1, *hint_args, N_STATE, BLOCK_C, HAS_Z, USE_ASM, L1_AHEAD,
                                SCRATCH_AHEAD, PAIRS)
                    t, u, dt, g, z, Bt, Ct, h_prev = _bwd_token(n_seg - 1, *tok_args, N_STATE, BLOCK_C, HAS_Z,
                                                                (n_seg - 1) // 2, SCRATCH_EVICT, USE_ASM)
                    carry, dA_acc, dD_acc, dbias_acc = _step_back(
                        t, u, dt, g, z, Bt, Ct, h_prev, h, carry, dA_acc, dD_acc, dbias_acc, bias_row, *out_args,
                        N_STATE, BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SCATTER_SUMS, USE_ASM, OUT_EVICT, DZ_HALVES)
                    h = h_prev
                for p in range(0, n_seg // 2):
                    j = (n_seg // 2 - p) * 2 - 1
                    _walk_hints(j, *hint_args, N_STATE, BLOCK_C, HAS_Z, USE_ASM, L1_AHEAD, SCRATCH_AHEAD,
                                PAIRS)
                    h_odd = _odd_entering_state(j, seg_start, L, backward, mask_c, u_base, dt_base, B_base,
                                                states_lanes, A2, bias_row, stride_u_l, stride_dt_l, stride_B_l,
                                                N_STATE, BLOCK_C, HAS_BIAS, SOFTPLUS, USE_ASM, SCRATCH_EVICT)
                    t, u, dt, g, z, Bt, Ct = _walk_inputs(j, *in_args, HAS_Z)
                    carry, dA_acc, dD_acc, dbias_acc = _step_back(
                        t, u, dt, g, z, Bt, Ct, h_odd, h, carry, dA_acc, dD_acc, dbias_acc, bias_row, *out_args,
                        N_STATE, BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SCATTER_SUMS, USE_ASM, OUT_EVICT, DZ_HALVES)
                    _walk_hints(j - 1, *hint_args, N_STATE, BLOCK_C, HAS_Z, USE_ASM, L1_AHEAD, SCRATCH_AHEAD,
                                PAIRS)
                    t, u, dt, g, z, Bt, Ct, h = _bwd_token(j - 1, *tok_args, N_STATE, BLOCK_C, HAS_Z, j // 2,
                                                           SCRATCH_EVICT, USE_ASM)
                    carry, dA_acc, dD_acc, dbias_acc = _step_back(
                        t, u, dt, g, z, Bt, Ct, h, h_odd, carry, dA_acc, dD_acc, dbias_acc, bias_row, *out_args,
                        N_STATE, BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SCATTER_SUMS, USE_ASM, OUT_EVICT, DZ_HALVES)
            else:
                if PREFETCH and not PAIRS:
                    nxt = _bwd_token(n_seg - 1, *tok_args, N_STATE, BLOCK_C, HAS_Z, n_seg - 1, SCRATCH_EVICT, USE_ASM)
                for jj in range(0, n_seg):
                    j = n_seg - 1 - jj
                    _walk_hints(j, *hint_args, N_STATE, BLOCK_C, HAS_Z, USE_ASM, L1_AHEAD, SCRATCH_AHEAD,
                                PAIRS)
                    if PAIRS:
                        # An even step's entering state is stored; an odd step's is one recurrence step from the
                        # even one before it (that step's inputs are L1-warm: read again right after for the even
                        # step).
                        if j % 2 == 1:
                            h_prev = _odd_entering_state(j, seg_start, L, backward, mask_c, u_base, dt_base,
                                                         B_base, states_lanes, A2, bias_row, stride_u_l, stride_dt_l,
                                                         stride_B_l, N_STATE, BLOCK_C, HAS_BIAS, SOFTPLUS, USE_ASM,
                                                         SCRATCH_EVICT)
                            t, u, dt, g, z, Bt, Ct = _walk_inputs(j, *in_args, HAS_Z)
                        else:
                            t, u, dt, g, z, Bt, Ct, h_prev = _bwd_token(j, *tok_args, N_STATE, BLOCK_C, HAS_Z,
                                                                        j // 2, SCRATCH_EVICT, USE_ASM)
                    else:
                        if PREFETCH:  # issue step j-1's loads (step 0's again at j = 0) before step j's arithmetic
                            cur = nxt
                            prev = tl.where(j > 0, j - 1, 0)
                            nxt = _bwd_token(prev, *tok_args, N_STATE, BLOCK_C, HAS_Z, prev, SCRATCH_EVICT, USE_ASM)
                        else:
                            cur = _bwd_token(j, *tok_args, N_STATE, BLOCK_C, HAS_Z, j, SCRATCH_EVICT, USE_ASM)
                        t, u, dt, g, z, Bt, Ct, h_prev = cur
                    if CARRY_H:  # h: the state leaving step j, which step j + 1 entered (or the segment's end)
                        h_out = h
                        h = h_prev
                    else:
                        h_out = None
                    carry, dA_acc, dD_acc, dbias_acc = _step_back(
                        t, u, dt, g, z, Bt, Ct, h_prev, h_out, carry, dA_acc, dD_acc, dbias_acc, bias_row, *out_args,
                        N_STATE, BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, SCATTER_SUMS, USE_ASM, OUT_EVICT, DZ_HALVES)
            tl.debug_barrier()  # the next segment overwrites the states
    return dA_acc, dD_acc, dbias_acc


@triton.jit
def _odd_entering_state(j, seg_start, L, backward, mask_c, u_base, dt_base, B_base, states_lanes, A2, bias_row,
                        stride_u_l, stride_dt_l, stride_B_l, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr,
                        HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr, EVICT: tl.constexpr):
    """The pairs walk's state entering odd step seg_start + j: one recurrence step from the stored state entering
    step j - 1 (scratch tile j // 2; EVICT: its loads' L2 eviction policy) with that step's inputs."""
    u0, dt0, B0 = _fwd_token(j - 1, seg_start, L, backward, mask_c, u_base, dt_base, B_base, stride_u_l, stride_dt_l,
                             stride_B_l)
    d0, _ = _delta(dt0, bias_row, mask_c, HAS_BIAS, SOFTPLUS, USE_ASM)
    h0 = _load_state_tile(states_lanes + (j // 2) * (N_STATE * BLOCK_C), mask_c, N_STATE, BLOCK_C, EVICT, USE_ASM)
    return tl.exp2(A2 * d0[None, :]) * h0 + _state_col(B0) * (d0 * u0)[None, :]


@triton.jit
def _walk_hints(j, seg_start, L, backward, mask_c, u_base, dt_base, g_base, z_base, BC_lanes, tile_line_lanes,
                stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l, N_STATE: tl.constexpr,
                BLOCK_C: tl.constexpr, HAS_Z: tl.constexpr, USE_ASM: tl.constexpr, L1_AHEAD: tl.constexpr,
                SCRATCH_AHEAD: tl.constexpr, PAIRS: tl.constexpr):
    """The walk's cache hints at step seg_start + j: an L1 prefetch of the inputs of the step L1_AHEAD steps on,
    and of the scratch tile the step SCRATCH_AHEAD steps on reads (0: none)."""
    if L1_AHEAD > 0:
        _prefetch_walk_step(seg_start + tl.maximum(j - L1_AHEAD, 0), L, backward, mask_c, u_base, dt_base, g_base,
                            z_base, BC_lanes, stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l,
                            stride_C_l, HAS_Z, USE_ASM)
    if SCRATCH_AHEAD > 0:
        ahead = tl.maximum(j - SCRATCH_AHEAD, 0)
        fastmath.prefetch_l1(tile_line_lanes + ((ahead // 2) if PAIRS else ahead) * (N_STATE * BLOCK_C), USE_ASM)


@triton.jit
def _step_back(t, u, dt, g, z, Bt, Ct, h_prev, h_out, carry, dA_acc, dD_acc, dbias_acc, bias_row, A2, D_row, g_scale,
               du_base, ddt_base, dz_base, dB_ptr, dC_ptr, dBC_row, dBC_off, lanes, even_lane, mask_c, stride_du_l,
               stride_ddt_l, stride_dz_l, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, HAS_D: tl.constexpr,
               HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SCATTER_SUMS: tl.constexpr,
               USE_ASM: tl.constexpr, EVICT: tl.constexpr, DZ_HALVES: tl.constexpr):
    """One walk step at token t from its inputs and entering state h_prev: Delta and exp(Delta A), the leaving
    state (h_out, or None: a h_prev + B Delta u), then `_walk_step`. Returns (carry, dA_acc, dD_acc, dbias_acc)."""
    d, d_slope = _delta(dt, bias_row, mask_c, HAS_BIAS, SOFTPLUS, USE_ASM)
    a = tl.exp2(A2 * d[None, :])
    if h_out is None:
        h_out = a * h_prev + _state_col(Bt) * (d * u)[None, :]
    return _walk_step(t, u, g * g_scale, z, Bt, Ct, h_prev, h_out, a, d, d_slope, carry, dA_acc, dD_acc, dbias_acc,
                      A2, D_row, g_scale, du_base, ddt_base, dz_base, dB_ptr, dC_ptr, dBC_row, dBC_off, lanes,
                      even_lane, mask_c, stride_du_l, stride_ddt_l, stride_dz_l, N_STATE, BLOCK_C, HAS_D, HAS_Z,
                      SCATTER_SUMS, USE_ASM, EVICT, DZ_HALVES)


@triton.jit(do_not_specialize=["L", "chunks_per_program"])
def _scan_bwd_group_carry_kernel(
    g_ptr, delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, mu_ptr, dsum_ptr,
    E, L, g_scale, chunks_per_program,
    stride_g_dir, stride_g_b, stride_g_e, stride_g_l: tl.constexpr,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l: tl.constexpr,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_C_dir, stride_C_b, stride_C_n, stride_C_l: tl.constexpr,
    stride_bias_dir,
    stride_z_b, stride_z_e, stride_z_l: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, CHUNK: tl.constexpr,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr,
    PREFETCH: tl.constexpr, L1_AHEAD: tl.constexpr = 0, MASK_C: tl.constexpr = True,
):
    """Pass A of the chunk-parallel backward. One program: BLOCK_C channels of one (direction, batch, group
    g >= 1); grid (channel blocks, 2 * (groups - 1), batch), axis 1 = 2 * (g - 1) + direction. Walks the group's
    steps last to first with the adjoint recurrence from a zero carry at its end,
        l_s = C_s dy_s + carry,  carry = a_s l_s,   dy_s = g_s * g_scale * SiLU(z_s)  (g_s * g_scale without z),
    which needs no states (y only enters dz), and stores the carry leaving its first step (mu, (N, C) into
    (2, batch, groups, N, E)) and sum(Delta) over its steps ((C,) into (2, batch, groups, E)): the true carry
    leaving the group is mu + exp(A * sum Delta) * (the true carry entering it), which `_scan_bwd_kernel`
    folds. Group 0 needs neither (no group before it reads them). The walk (`_carry_walk`) is compiled once per
    direction with the token strides constexpr. PREFETCH: two steps per loop trip, the next two steps' loads
    issued before this trip's arithmetic (their pointers constant offsets from one multiply-add each); else one
    step per trip, loaded when it runs. L1_AHEAD > 0 (one step per trip only): each step also asks L1 for the
    delta, gradient, z and C lines of the step that many steps on."""
    pid_c = tl.program_id(0).to(tl.int64)
    direction = (tl.program_id(1) % 2).to(tl.int64)
    group = (tl.program_id(1) // 2 + 1).to(tl.int64)
    backward = (tl.program_id(1) % 2) == 1
    pid_b = tl.program_id(2).to(tl.int64)
    n_groups = tl.num_programs(1) // 2 + 1
    n_batch = tl.num_programs(2)

    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = _channel_mask(offs_c, E, BLOCK_C, MASK_C)
    c64 = offs_c.to(tl.int64)
    states = tl.arange(0, N_STATE)
    g_base = g_ptr + direction * stride_g_dir + pid_b * stride_g_b + c64 * stride_g_e
    dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e
    C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e

    A2 = decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE, BLOCK_C)
    _, bias_row = channel_rows(bias_ptr, bias_ptr, direction, 0, stride_bias_dir, c64, mask_c, False, HAS_BIAS,
                               BLOCK_C)  # no D here

    start = (tl.program_id(1) // 2 + 1) * chunks_per_program * CHUNK  # 32-bit token indices, as in the walk
    n_in = tl.minimum(L - start, chunks_per_program * CHUNK)
    C_lanes = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + c64 * 0  # the C row's line, for L1_AHEAD
    walk_args = (start, n_in, L, mask_c, dt_base, g_base, z_base, C_base, C_lanes, A2, bias_row, g_scale)
    if backward:
        carry, dsum = _carry_walk(*walk_args, stride_dt_l, stride_g_l, stride_z_l, stride_C_l, True, N_STATE,
                                  BLOCK_C, HAS_Z, HAS_BIAS, SOFTPLUS, USE_ASM, PREFETCH, L1_AHEAD)
    else:
        carry, dsum = _carry_walk(*walk_args, stride_dt_l, stride_g_l, stride_z_l, stride_C_l, False, N_STATE,
                                  BLOCK_C, HAS_Z, HAS_BIAS, SOFTPLUS, USE_ASM, PREFETCH, L1_AHEAD)
    slot = (direction * n_batch + pid_b) * n_groups + group
    store_rows(mu_ptr + slot * (N_STATE * E) + c64, E, carry, mask_c, N_STATE)
    tl.store(dsum_ptr + slot * E + c64, dsum, mask=mask_c)


@triton.jit
def _carry_walk(start, n_in, L, mask_c, dt_base, g_base, z_base, C_base, C_lanes, A2, bias_row, g_scale,
                stride_dt_l: tl.constexpr, stride_g_l: tl.constexpr, stride_z_l: tl.constexpr,
                stride_C_l: tl.constexpr, backward: tl.constexpr, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr,
                HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr,
                PREFETCH: tl.constexpr, L1_AHEAD: tl.constexpr):
    """Pass A's walk over steps start + n_in - 1 down to start, for one direction; returns (carry, sum of Delta).
    With PREFETCH, two steps per trip: the steps after the group's first that the last trip's prefetch loads
    (start - 1, start - 2) are real tokens (pass A never runs group 0, so start >= 2) and go unused."""
    carry = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_C,), dtype=tl.float32)
    SIGN: tl.constexpr = -1 if backward else 1  # token step per scan step
    if PREFETCH:
        top = start + n_in - 1
        t_top = tl.where(backward, L - 1 - top, top)  # token of the walk's first step
        nxt0 = _carry_load_at(t_top, mask_c, dt_base, g_base, z_base, C_base, stride_dt_l, stride_g_l, stride_z_l,
                              stride_C_l, HAS_Z)
        nxt1 = _carry_load_at(t_top - SIGN, mask_c, dt_base, g_base, z_base, C_base, stride_dt_l, stride_g_l,
                              stride_z_l, stride_C_l, HAS_Z)
        for p in range(0, n_in // 2):
            cur0, cur1 = nxt0, nxt1
            t = t_top - SIGN * (2 * p + 2)  # the next trip's first token; its second one SIGN further down
            nxt0 = _carry_load_at(t, mask_c, dt_base, g_base, z_base, C_base, stride_dt_l, stride_g_l,
                                  stride_z_l, stride_C_l, HAS_Z)
            nxt1 = _carry_load_at(t - SIGN, mask_c, dt_base, g_base, z_base, C_base, stride_dt_l, stride_g_l,
                                  stride_z_l, stride_C_l, HAS_Z)
            carry, dsum = _carry_step(carry, dsum, *cur0, A2, bias_row, g_scale, mask_c, HAS_Z, HAS_BIAS,
                                      SOFTPLUS, USE_ASM)
            carry, dsum = _carry_step(carry, dsum, *cur1, A2, bias_row, g_scale, mask_c, HAS_Z, HAS_BIAS,
                                      SOFTPLUS, USE_ASM)
        if n_in % 2 == 1:  # the group's first step
            carry, dsum = _carry_step(carry, dsum, *nxt0, A2, bias_row, g_scale, mask_c, HAS_Z, HAS_BIAS, SOFTPLUS,
                                      USE_ASM)
    else:
        for jj in range(0, n_in):
            step = start + n_in - 1 - jj
            if L1_AHEAD > 0:
                ahead = tl.maximum(step - L1_AHEAD, start)
                t_ahead = tl.where(backward, L - 1 - ahead, ahead)
                fastmath.prefetch_l1(dt_base + t_ahead * stride_dt_l, USE_ASM, mask_c)
                fastmath.prefetch_l1(g_base + t_ahead * stride_g_l, USE_ASM, mask_c)
                if HAS_Z:
                    fastmath.prefetch_l1(z_base + t_ahead * stride_z_l, USE_ASM, mask_c)
                fastmath.prefetch_l1(C_lanes + t_ahead * stride_C_l, USE_ASM)
            cur = _carry_load_at(tl.where(backward, L - 1 - step, step), mask_c, dt_base, g_base, z_base, C_base,
                                 stride_dt_l, stride_g_l, stride_z_l, stride_C_l, HAS_Z)
            carry, dsum = _carry_step(carry, dsum, *cur, A2, bias_row, g_scale, mask_c, HAS_Z, HAS_BIAS, SOFTPLUS,
                                      USE_ASM)
    return carry, dsum


@triton.jit
def _carry_step(carry, dsum, dt, g, z, Ct, A2, bias_row, g_scale, mask_c, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr):
    """One step of pass A: carry = a_s (C_s dy_s + carry), Delta added to the sum."""
    d, _ = _delta(dt, bias_row, mask_c, HAS_BIAS, SOFTPLUS, USE_ASM)
    dy = g * g_scale
    if HAS_Z:
        dy = dy * z * fastmath.sigmoid(z, USE_ASM)
    carry = tl.exp2(A2 * d[None, :]) * (Ct[:, None] * dy[None, :] + carry)
    return carry, dsum + d


@triton.jit
def _carry_load_at(t, mask_c, dt_base, g_base, z_base, C_base, stride_dt_l: tl.constexpr,
                   stride_g_l: tl.constexpr, stride_z_l: tl.constexpr, stride_C_l: tl.constexpr,
                   HAS_Z: tl.constexpr):
    """What pass A reads for token t: delta, the upstream gradient, z (C,) in fp32 (z = g when absent, unused)
    and the (N,) C row."""
    dt = _load_lanes(dt_base + t * stride_dt_l, mask_c, True)
    g = _load_lanes(g_base + t * stride_g_l, mask_c, True)
    if HAS_Z:
        z = _load_lanes(z_base + t * stride_z_l, mask_c, True)
    else:
        z = g
    Ct = tl.load(C_base + t * stride_C_l).to(tl.float32)
    return dt, g, z, Ct


@triton.jit
def _recompute(h, start, n, A2, bias_row, L, backward, mask_c, u_base, dt_base, B_base, stride_u_l, stride_dt_l,
               stride_B_l, out_lanes, EVERY: tl.constexpr, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr,
               HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr, PREFETCH: tl.constexpr,
               L1_AHEAD: tl.constexpr = 0, B_lanes=None, EVICT: tl.constexpr = None):
    """Step the state h entering scan step `start` through n steps; the state entering step start + j is stored
    to tile j // EVERY at out_lanes when EVERY divides j. Returns the state after the n steps. L1_AHEAD > 0: an L1
    prefetch of step j + L1_AHEAD's u, delta and B row in each step (B_lanes: (C,) pointers to the B row; lanes
    past E issue nothing). EVICT: the stores' L2 eviction policy."""
    fwd_args = (start, L, backward, mask_c, u_base, dt_base, B_base, stride_u_l, stride_dt_l, stride_B_l)
    if PREFETCH:
        nxt_f = _fwd_token(0, *fwd_args)
    for j in range(0, n):
        if L1_AHEAD > 0:
            _prefetch_fwd_step(start + tl.minimum(j + L1_AHEAD, n - 1), L, backward, mask_c, u_base, dt_base, B_lanes,
                               stride_u_l, stride_dt_l, stride_B_l, USE_ASM)
        if j % EVERY == 0:
            _store_state_tile(out_lanes + (j // EVERY) * (N_STATE * BLOCK_C), h, mask_c, N_STATE, BLOCK_C, EVICT)
        if PREFETCH:  # issue step j+1's loads (step j's again at the end) before step j's arithmetic
            u, dt, Bt = nxt_f
            nxt_f = _fwd_token(tl.where(j + 1 < n, j + 1, j), *fwd_args)
        else:
            u, dt, Bt = _fwd_token(j, *fwd_args)
        d, _ = _delta(dt, bias_row, mask_c, HAS_BIAS, SOFTPLUS, USE_ASM)
        h = tl.exp2(A2 * d[None, :]) * h + _state_col(Bt) * (d * u)[None, :]
    return h


@triton.jit
def _shfl_xor(x, MASK: tl.constexpr, USE_ASM: tl.constexpr = True):
    """x from the lane whose index differs from this lane's in the bits of MASK (a butterfly shuffle). Without
    USE_ASM (the interpreter) the lanes are x's last axis (BLOCK_C = 32: lane = channel in the block) and the
    shuffle is a gather along it, so that the reduce-scatters below run, and are tested, on the CPU too."""
    if not USE_ASM:
        if len(x.shape) == 1:
            return tl.gather(x, tl.arange(0, x.shape[0]) ^ MASK, 0)
        else:
            return tl.gather(x, tl.broadcast_to((tl.arange(0, x.shape[1]) ^ MASK)[None, :], x.shape), 1)
    elif MASK == 16:
        return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 16, 0x1f, 0xffffffff;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    elif MASK == 8:
        return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 8, 0x1f, 0xffffffff;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    elif MASK == 4:
        return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 4, 0x1f, 0xffffffff;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    elif MASK == 2:
        return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 2, 0x1f, 0xffffffff;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        return tl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 1, 0x1f, 0xffffffff;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _row_halves(t, M: tl.constexpr, BLOCK_C: tl.constexpr):
    """t (2M, C) in-thread per lane as its first and last M rows (register picks: -0.0 is the additive identity
    that lets the compiler drop the sums)."""
    t3 = tl.reshape(t, (2, M, BLOCK_C))
    half = tl.arange(0, 2)[:, None, None]
    return tl.sum(tl.where(half == 0, t3, -0.0), axis=0), tl.sum(tl.where(half == 1, t3, -0.0), axis=0)


@triton.jit
def _halve(t, lane, M: tl.constexpr, MASK: tl.constexpr, BLOCK_C: tl.constexpr, USE_ASM: tl.constexpr):
    """One reduce-scatter level: t (2M, C) in-thread per lane; the lane keeps the half of its rows picked by its
    MASK bit (high rows when set), sends the other half to the lane across that bit and adds what it receives:
    M shuffles for 2M values (and 2M selects: which half is kept depends on the lane)."""
    lo, hi = _row_halves(t, M, BLOCK_C)
    high = ((lane & MASK) != 0)[None, :]
    return tl.where(high, hi, lo) + _shfl_xor(tl.where(high, lo, hi), MASK, USE_ASM)


@triton.jit
def _halve_first(t, M: tl.constexpr, MASK: tl.constexpr, BLOCK_C: tl.constexpr, USE_ASM: tl.constexpr):
    """A reduce-scatter level where every lane keeps its first M rows and sends the last M to the lane across the
    MASK bit: `_halve` without its selects, for tiles in the XOR state order (`_state_xor`), where the rows a lane
    keeps come first in every lane and the rows it sends line up with its partner's kept ones."""
    first, last = _row_halves(t, M, BLOCK_C)
    return first + _shfl_xor(last, MASK, USE_ASM)


@triton.jit
def _scattered_lane_sums(tile, lane, BLOCK_C: tl.constexpr, USE_ASM: tl.constexpr, ORDER: tl.constexpr = 1):
    """The sums over the 32 lanes of a (16, 32) tile (lane = channel, all 16 rows in-thread): lane l returns state
    l // 2's sum. Recursive halving, 8 + 4 + 2 + 1 + 1 = 16 shuffles and adds, against tl.sum's 5 per row (80).
    ORDER 1: row n of every lane is state n; ORDER 2: the XOR state order (`_state_xor`), whose first two levels
    (lane bits 4 and 3: state bits 3 and 2) need no selects; the last two split state bits 1 and 0, which the
    order leaves in place, as before."""
    if ORDER == 2:
        t = _halve_first(tile, 8, 16, BLOCK_C, USE_ASM)
        t = _halve_first(t, 4, 8, BLOCK_C, USE_ASM)
    else:
        t = _halve(tile, lane, 8, 16, BLOCK_C, USE_ASM)
        t = _halve(t, lane, 4, 8, BLOCK_C, USE_ASM)
    t = _halve(t, lane, 2, 4, BLOCK_C, USE_ASM)
    t = _halve(t, lane, 1, 2, BLOCK_C, USE_ASM)
    r = tl.sum(t, axis=0)
    return r + _shfl_xor(r, 1, USE_ASM)


@triton.jit
def _state_xor(lanes):
    """The XOR state order's per-lane mask (SCATTER_SUMS == 2): register row r of lane l holds state
    r ^ _state_xor(l), i.e. lane bit 4 flips state bit 3 and lane bit 3 flips state bit 2. Rows move in groups
    of 4 (state bits 1 and 0 stay), so a B or C row still loads as four 16-byte pieces per lane."""
    return (lanes >> 1) & 12


@triton.jit
def _load_state_rows(row_lanes, row_stride, mask_c, lanes, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr,
                     SCATTER_SUMS: tl.constexpr):
    """An (N, C) per-state tile stored as N rows row_stride apart (a checkpoint, a group carry: (N, E) rows) in
    the walk's state order."""
    if SCATTER_SUMS == 2:
        return load_rows(row_lanes, row_stride, mask_c, N_STATE, BLOCK_C, row_xor=_state_xor(lanes))
    else:
        return load_rows(row_lanes, row_stride, mask_c, N_STATE, BLOCK_C)


@triton.jit
def _state_groups(row_lanes):
    """(C, 4) pointers into the XOR state order's B or C rows (row_lanes (C,): lane l's row, unit state stride):
    lane l's first register group, states 4 g + k with g = _state_xor(l) / 4 (`_state_row` reads the others)."""
    g = _state_xor(tl.arange(0, row_lanes.shape[0])) >> 2
    return row_lanes[:, None] + (g * 4)[:, None] + tl.arange(0, 4)[None, :]


@triton.jit
def _state_row(ptr):
    """A per-state operand of one token in fp32: ptr (N,) pointers (the same row in every lane) -> (N,); or the XOR
    order's (C, 4) group pointers (`_state_groups`, N = 16) -> the (16, C) tile of each lane's states in its
    order: register group q of lane l is stored group q ^ g, one 16-byte load each. Each group is its own (C, 4)
    load, so that Triton's coalescing keeps the 4 states in-thread and the lanes on the channels (the state tile's
    own mapping; a single (C, 4, 4) load got lanes across groups under triton 3.8)."""
    if len(ptr.shape) == 1:
        return tl.load(ptr).to(tl.float32)
    else:
        g = _state_xor(tl.arange(0, ptr.shape[0])) >> 2
        g0 = tl.load(ptr).to(tl.float32)
        g1 = tl.load(ptr + (((1 ^ g) - g) * 4)[:, None]).to(tl.float32)
        g2 = tl.load(ptr + (((2 ^ g) - g) * 4)[:, None]).to(tl.float32)
        g3 = tl.load(ptr + (((3 ^ g) - g) * 4)[:, None]).to(tl.float32)
        return _groups_to_tile(g0, g1, g2, g3)


@triton.jit
def _load_state_tile(lanes, mask_c, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, EVICT: tl.constexpr = None,
                     USE_ASM: tl.constexpr = False):
    """A scratch state tile (N, C) in register order, in fp32 whatever the scratch's dtype (fp32, or bf16 with
    `scratch_bf16`): lanes (C,) pointers to row 0 (N rows of C, as `load_rows`), or with VEC_SCRATCH (C, 4) pointers
    to lane l's states 0-3 (4 l + k): groups of 4 states per lane contiguous, group q at q * 4 C, so that each group
    is one 16-byte load per lane (8 bytes in bf16) and 512 contiguous bytes per warp (4 loads per tile instead of
    16; N = 16). USE_ASM: bf16 groups widened by `fastmath.widen_bf16` (one instruction per value) at BLOCK_C 32."""
    if len(lanes.shape) == 1:
        return load_rows(lanes, BLOCK_C, mask_c, N_STATE, BLOCK_C, EVICT)
    else:
        m = mask_c[:, None]
        g0 = tl.load(lanes, mask=m, other=0.0, eviction_policy="" if EVICT is None else EVICT)
        g1 = tl.load(lanes + 4 * BLOCK_C, mask=m, other=0.0, eviction_policy="" if EVICT is None else EVICT)
        g2 = tl.load(lanes + 8 * BLOCK_C, mask=m, other=0.0, eviction_policy="" if EVICT is None else EVICT)
        g3 = tl.load(lanes + 12 * BLOCK_C, mask=m, other=0.0, eviction_policy="" if EVICT is None else EVICT)
        ASM: tl.constexpr = USE_ASM and BLOCK_C == 32  # 4 states per thread: pairs for widen_bf16's pack of 2
        return _groups_to_tile(fastmath.widen_bf16(g0, ASM), fastmath.widen_bf16(g1, ASM),
                               fastmath.widen_bf16(g2, ASM), fastmath.widen_bf16(g3, ASM))


@triton.jit
def _store_state_tile(lanes, tile, mask_c, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, EVICT: tl.constexpr = None):
    """Store an (N, C) fp32 state tile where `_load_state_tile` reads it (lanes: (C,) row pointers or (C, 4) groups),
    rounded to the scratch's dtype by the stores."""
    if len(lanes.shape) == 1:
        store_rows(lanes, BLOCK_C, tile, mask_c, N_STATE, EVICT)
    else:
        m = mask_c[:, None]
        # the inverse of `_groups_to_tile`: [l, 4 q + k] -> [l, k, q % 2, q // 2], then split q
        parts = tl.permute(tl.reshape(tl.trans(tile), (BLOCK_C, 2, 2, 4)), (0, 3, 2, 1))
        low, high = tl.split(parts)
        g0, g1 = tl.split(low)
        g2, g3 = tl.split(high)
        tl.store(lanes, g0, mask=m, eviction_policy="" if EVICT is None else EVICT)
        tl.store(lanes + 4 * BLOCK_C, g1, mask=m, eviction_policy="" if EVICT is None else EVICT)
        tl.store(lanes + 8 * BLOCK_C, g2, mask=m, eviction_policy="" if EVICT is None else EVICT)
        tl.store(lanes + 12 * BLOCK_C, g3, mask=m, eviction_policy="" if EVICT is None else EVICT)


@triton.jit
def _groups_to_tile(g0, g1, g2, g3):
    """Four (C, 4) groups of each lane's states (group q: states 4 q + k) as the (16, C) state tile: joins,
    a permute and a reshape that only relabel registers (the lanes stay on the channels)."""
    groups = tl.join(tl.join(g0, g1), tl.join(g2, g3))  # (C, 4, 2, 2): [l, k, q % 2, q // 2]
    rows = tl.reshape(tl.permute(groups, (0, 3, 2, 1)), (g0.shape[0], 16))  # [l, 4 q + k]
    return tl.trans(rows)


@triton.jit
def _state_col(v):
    """A per-state operand as an (N, C)-broadcastable tile: an (N,) row (the same in every lane) as (N, 1); an
    (N, C) tile (the XOR state order's per-lane rows) as it is."""
    if len(v.shape) == 1:
        return v[:, None]
    else:
        return v


@triton.jit
def _fwd_token(j, start, L, backward, mask_c, u_base, dt_base, B_base, stride_u_l, stride_dt_l, stride_B_l):
    """What the recomputation reads for step start + j of its chunk: u, delta (C,) and the B row (N,), fp32."""
    step = start + j
    t = tl.where(backward, L - 1 - step, step)
    u = _load_lanes(u_base + t * stride_u_l, mask_c, True)
    dt = _load_lanes(dt_base + t * stride_dt_l, mask_c, True)
    Bt = _state_row(B_base + t * stride_B_l)
    return u, dt, Bt


@triton.jit
def _prefetch_fwd_step(step, L, backward, mask_c, u_base, dt_base, B_lanes, stride_u_l, stride_dt_l, stride_B_l,
                       USE_ASM: tl.constexpr):
    """L1 prefetch of what `_fwd_token` reads for scan step `step`: u, delta (lanes past E issue nothing) and the
    B row (B_lanes: (C,) pointers to it)."""
    t = tl.where(backward, L - 1 - step, step)
    fastmath.prefetch_l1(u_base + t * stride_u_l, USE_ASM, mask_c)
    fastmath.prefetch_l1(dt_base + t * stride_dt_l, USE_ASM, mask_c)
    fastmath.prefetch_l1(B_lanes + t * stride_B_l, USE_ASM)


@triton.jit
def _prefetch_walk_step(step, L, backward, mask_c, u_base, dt_base, g_base, z_base, BC_lanes, stride_u_l,
                        stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l, HAS_Z: tl.constexpr,
                        USE_ASM: tl.constexpr):
    """L1 prefetch of what `_bwd_token` reads for scan step `step` from the inputs: `_prefetch_fwd_step`'s lines,
    the upstream gradient and z (lanes past E issue nothing) and the C row (BC_lanes: (C,) pointers to the B and C
    rows). Not the N scratch rows of the state (16 more instructions per step; with them the capped walk spilled
    under triton 3.6)."""
    _prefetch_fwd_step(step, L, backward, mask_c, u_base, dt_base, BC_lanes[0], stride_u_l, stride_dt_l, stride_B_l,
                       USE_ASM)
    t = tl.where(backward, L - 1 - step, step)
    fastmath.prefetch_l1(g_base + t * stride_g_l, USE_ASM, mask_c)
    if HAS_Z:
        fastmath.prefetch_l1(z_base + t * stride_z_l, USE_ASM, mask_c)
    fastmath.prefetch_l1(BC_lanes[1] + t * stride_C_l, USE_ASM)


@triton.jit
def _walk_inputs(j, start, L, backward, mask_c, u_base, dt_base, g_base, z_base, B_base, C_base, stride_u_l,
                 stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l, HAS_Z: tl.constexpr):
    """What the backward walk reads from the inputs for step start + j of its chunk: the token index t; u, delta,
    the upstream gradient and z (C,) in fp32 (z = u when absent); the (N,) B and C rows."""
    step = start + j
    t = tl.where(backward, L - 1 - step, step)
    u = _load_lanes(u_base + t * stride_u_l, mask_c, True)
    dt = _load_lanes(dt_base + t * stride_dt_l, mask_c, True)
    g = _load_lanes(g_base + t * stride_g_l, mask_c, True)
    if HAS_Z:
        z = _load_lanes(z_base + t * stride_z_l, mask_c, True)
    else:
        z = u
    Bt = _state_row(B_base + t * stride_B_l)
    Ct = _state_row(C_base + t * stride_C_l)
    return t, u, dt, g, z, Bt, Ct


@triton.jit
def _bwd_token(j, start, L, backward, mask_c, u_base, dt_base, g_base, z_base, B_base, C_base, scratch_lanes,
               stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l, stride_C_l, N_STATE: tl.constexpr,
               BLOCK_C: tl.constexpr, HAS_Z: tl.constexpr, tile, EVICT: tl.constexpr, USE_ASM: tl.constexpr):
    """`_walk_inputs` of step start + j, and the state entering the step (N, C): scratch tile `tile` (EVICT: its
    loads' L2 eviction policy)."""
    t, u, dt, g, z, Bt, Ct = _walk_inputs(j, start, L, backward, mask_c, u_base, dt_base, g_base, z_base, B_base,
                                          C_base, stride_u_l, stride_dt_l, stride_g_l, stride_z_l, stride_B_l,
                                          stride_C_l, HAS_Z)
    h_prev = _load_state_tile(scratch_lanes + tile * (N_STATE * BLOCK_C), mask_c, N_STATE, BLOCK_C, EVICT, USE_ASM)
    return t, u, dt, g, z, Bt, Ct, h_prev


@triton.jit
def _walk_step(t, u, g, z, Bt, Ct, h_prev, h, a, d, d_slope, carry, dA_acc, dD_acc, dbias_acc, A2, D_row, g_scale,
               du_base, ddt_base, dz_base, dB_ptr, dC_ptr, dBC_row, dBC_off, lanes, even_lane, mask_c, stride_du_l,
               stride_ddt_l, stride_dz_l, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, HAS_D: tl.constexpr,
               HAS_Z: tl.constexpr, SCATTER_SUMS: tl.constexpr, USE_ASM: tl.constexpr, EVICT: tl.constexpr,
               DZ_HALVES: tl.constexpr):
    """One step of the walk at token t: h_prev / h the states entering / leaving it, a = exp(Delta A), d = Delta,
    d_slope = dDelta/d(dt), g the scaled upstream gradient, carry = a_{s+1} l_{s+1}. Stores du, ddelta, the dB/dC
    partial rows (EVICT: these stores' L2 eviction policy) and this direction's dz term (DZ_HALVES: a store into
    its own half, else an atomic add); returns (carry for the step before,
    dA_acc, dD_acc, dbias_acc) updated."""
    du_in = d * u
    if HAS_Z:
        y = tl.sum(_state_col(Ct) * h, axis=0)
        if HAS_D:
            y += D_row * u
        sz = fastmath.sigmoid(z, USE_ASM)
        if DZ_HALVES:
            tl.store(dz_base + t * stride_dz_l, (g * y * sz * (1.0 + z * (1.0 - sz))).to(dz_base.dtype.element_ty),
                     mask=mask_c, eviction_policy=EVICT)
        else:
            tl.atomic_add(dz_base + t * stride_dz_l, g * y * sz * (1.0 + z * (1.0 - sz)), mask=mask_c, sem="relaxed")
        dy = g * z * sz
    else:
        dy = g
    lam = _state_col(Ct) * dy[None, :] + carry  # l_s = dL/dh_s
    lam_B = tl.sum(lam * _state_col(Bt), axis=0)
    lam_ah = lam * a * h_prev
    dd = lam_B * u + tl.sum(lam_ah * A2, axis=0) * LN2
    du = lam_B * d
    if HAS_D:
        du += D_row * dy
        dD_acc += dy * u
    ddt = dd * d_slope
    dbias_acc += ddt
    dA_acc += lam_ah * d[None, :]
    tl.store(du_base + t * stride_du_l, du.to(du_base.dtype.element_ty), mask=mask_c, eviction_policy=EVICT)
    tl.store(ddt_base + t * stride_ddt_l, ddt.to(ddt_base.dtype.element_ty), mask=mask_c, eviction_policy=EVICT)
    if SCATTER_SUMS:  # lane l stores state l // 2 (even lanes); SCATTER_SUMS == 2: the tiles are in the XOR order
        row = dBC_row + t * N_STATE
        dC_sums = _scattered_lane_sums(h * dy[None, :], lanes, BLOCK_C, USE_ASM, SCATTER_SUMS)
        tl.store(dC_ptr + row, dC_sums, mask=even_lane, eviction_policy=EVICT)
        dB_sums = _scattered_lane_sums(lam * du_in[None, :], lanes, BLOCK_C, USE_ASM, SCATTER_SUMS)
        tl.store(dB_ptr + row, dB_sums, mask=even_lane, eviction_policy=EVICT)
    else:
        row = dBC_off + t * N_STATE
        tl.store(dC_ptr + row, tl.sum(h * dy[None, :], axis=1), eviction_policy=EVICT)
        tl.store(dB_ptr + row, tl.sum(lam * du_in[None, :], axis=1), eviction_policy=EVICT)
    return a * lam, dA_acc, dD_acc, dbias_acc


@triton.jit
def _bc_rows_kernel(dBp_ptr, dCp_ptr, out_ptr, parts, rows, stride_out_row,
                    N_STATE: tl.constexpr, BLOCK_R: tl.constexpr):
    """dB and dC as GEMM rows: out[r, :N] = sum_p dBp[p, r, :], out[r, N:2N] = sum_p dCp[p, r, :] in out's dtype
    (fp32 sums in partial order: deterministic). dBp, dCp: (parts, rows, N) fp32 contiguous; out rows of
    stride_out_row elements (x_dbl's gradient, [dB | dC | d_dt | pad]), stride 1 along the row. One program:
    BLOCK_R rows."""
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    n = tl.arange(0, N_STATE)
    mask = (r < rows)[:, None]
    offs = r[:, None] * N_STATE + n[None, :]
    acc_b = tl.zeros((BLOCK_R, N_STATE), dtype=tl.float32)
    acc_c = tl.zeros((BLOCK_R, N_STATE), dtype=tl.float32)
    for p in range(0, parts):
        acc_b += tl.load(dBp_ptr + p * rows * N_STATE + offs, mask=mask, other=0.0)
        acc_c += tl.load(dCp_ptr + p * rows * N_STATE + offs, mask=mask, other=0.0)
    out = out_ptr + r[:, None] * stride_out_row + n[None, :]
    tl.store(out, acc_b.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(out + N_STATE, acc_c.to(out_ptr.dtype.element_ty), mask=mask)


BC_ROWS_BLOCK = 64


def _bc_rows(dBp: torch.Tensor, dCp: torch.Tensor, out: torch.Tensor) -> None:
    """`_bc_rows_kernel`: the dB/dC partials (parts, 2, batch, L, N) summed into out (2, batch * L, >= 2N)."""
    parts, n_state = dBp.shape[0], dBp.shape[-1]
    rows = dBp[0].numel() // n_state
    launch(_bc_rows_kernel, (cdiv(rows, BC_ROWS_BLOCK),), dBp, dCp, out, parts, rows, out.stride(1),
           N_STATE=n_state, BLOCK_R=BC_ROWS_BLOCK, num_warps=4)


@triton.jit
def _delta(dt, bias_row, mask_c, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr):
    """Delta = softplus(dt + bias) (or dt + bias), 0 on masked lanes, and dDelta/d(dt). SOFTPLUS == 2
    (`bimamba_scan_bwd(softplus_done=True)`): dt is Delta already, softplus(pre + bias) made before the scan; the
    bias is not added again and the slope is that of the pre-activation, sigmoid(pre) = 1 - e^-Delta."""
    if HAS_BIAS and SOFTPLUS != 2:
        dt = dt + bias_row
    if SOFTPLUS == 2:
        d, slope = dt, _slope_of_softplus_value(dt, USE_ASM)
    elif SOFTPLUS and SOFTPLUS_LOG1P_POLY:
        d, slope = _softplus_sigmoid(dt, USE_ASM, True)  # sigmoid(dt) from softplus's exp
    elif SOFTPLUS:
        d, w = _softplus_exp(dt, USE_ASM)
        slope = w * fastmath.reciprocal(1.0 + w, USE_ASM)  # sigmoid(dt) from softplus's exp (1 above 20)
    else:
        d = dt
        slope = tl.full(dt.shape, 1.0, tl.float32)
    return tl.where(mask_c, d, 0.0), slope


@triton.jit
def _slope_of_softplus_value(d, USE_ASM: tl.constexpr):
    """sigmoid(x) from d = softplus(x) >= 0: 1 - e^-d, one exponential; below 1/16, where 1 - e^-d would lose
    digits to cancellation, its series to d^4 (truncation < 1.3e-7 relative there)."""
    series = d * (1.0 - d * (0.5 - d * (0.16666667 - d * 0.041666668)))
    return tl.where(d < 0.0625, series, 1.0 - fastmath.exp(-d, USE_ASM))


# Programs the chunk-parallel split aims for on the GPU, and the one-group grid below which it splits at all.
# Measured on the H200 (2026-12-02, bf16, Vim-Ti, results/history/scan-bwd-groups-h200-2026-12-02.json, scatter
# sums on): batch 8 x 6,085 tokens (192 programs per group) 3.10 ms with 5 groups (the first target, 1,024
# programs), 2.58 ms with 16 (3,072 programs), 2.61 with 32, 3.01 with 12; batch 32 x 1,025 (768 programs) 1.84 ms
# unsplit, 1.81-2.05 split; batch 128 x 197: unsplit best (1.18 vs 1.39-1.43 ms).
TARGET_PROGRAMS = 3072
SPLIT_BELOW_PROGRAMS = 512
# The walk's two-level recompute (scan_bwd_launch_config's sub_chunk): 0 = off, one chunk-long scratch.
DEFAULT_SUB_CHUNK = 0
# dB/dC by a reduce-scatter of shuffles (scan_bwd_launch_config's scatter_sums). Measured on the H200 (2026-12-02,
# results/history/scan-bwd-variants-h200-2026-12-02.json, bf16, Vim-Ti): 3.48 -> 3.10 ms at batch 8 x 6,085
# tokens, 1.36 -> 1.18 ms at 128 x 197, gradients equal within 8e-8 (rel. L2), deterministic.
DEFAULT_SCATTER_SUMS = True
# The walk's states in the XOR order (scan_bwd_launch_config's scatter_xor; `_state_xor`, `_halve_first`): lane l
# holds state r ^ _state_xor(l) in register row r, so that the reduce-scatter's first two levels keep their first
# half in every lane instead of selecting by lane (48 FSEL fewer per step on paper), for per-lane B/C row addresses
# (four 16-byte pieces each, as before). With DEFAULT_VEC_SCRATCH, measured (session r, H100, 2026-12-05,
# results/history/statexor-h100-2026-12-05r.json, bf16, Vim-Ti, combined form): the kernel 1.841 -> 1.814 ms at
# 8 x 6,085 tokens and 0.814 -> 0.802 ms at 128 x 197 (the XOR order alone: 1.829 / 0.810), captured training
# steps +1.4% at 1248/8 and +0.9% at 224/128 (A B B A), gradients as the natural order's (rel. max 2e-3: bf16's
# rounding of du, dz). On by default for the combined output (the training op's form) in 16-bit only: the
# gated-halves walk with atomic dz spills inside its loop with this order under triton 3.6, and fp32 was not
# measured.
DEFAULT_SCATTER_XOR = True
# The walk's scratch state tiles as per-lane groups of 4 contiguous states (scan_bwd_launch_config's vec_scratch;
# `_load_state_tile`, `_store_state_tile`): one 16-byte access per group, lanes 16 bytes apart (512 contiguous bytes
# per warp), 4 loads or stores per tile instead of 16 row accesses. Measured with the XOR order (above): on by
# default for the combined output only, like it.
DEFAULT_VEC_SCRATCH = True
# The walk's scratch in bf16 instead of fp32 (scan_bwd_launch_config's scratch_bf16; 16-bit operands only): the
# recomputed states are rounded to bf16 where they are stored (the recompute carries its fp32 state on, so each stored
# state is rounded once, never compounded), half the scratch's bytes and L2 footprint. Only dC, dA, ddelta and dz (the
# recomputed y) read the stored states (the adjoint needs none); their extra error is one bf16 rounding of h per term.
# Measured (session x, H100, commit 4c524e6, results/history/scratchbf16-h100-2026-12-06x.json; the training op's
# combined bf16 walk alone, CUDA-graph replays A B B A): 8 x 6,085 1,801.9 -> 1,661.0 us (-7.8%), 128 x 197 801.0 ->
# 725.8 (-9.4%); distance from the fp32 reference at 128 x 197 (relative L2): dA 1.4e-6 -> 5.2e-4, dC 4.6e-7 -> 1.6e-3,
# ddelta_bias 6.0e-7 -> 6.6e-4, ddelta 1.66e-3 -> 1.70e-3, dz 1.66e-3 -> 1.70e-3, du, dB, dD unchanged: within the bf16
# outputs' own rounding (du 1.7e-3). Whole captured Vim-Ti bf16 training steps (session y, H100, A B B A,
# results/history/scratchbf16-steps-h100-2026-12-06y.json): 1248 px batch 8 94.1 -> 97.9 img/s, 224 px batch 128
# 3,067 -> 3,227. On by default for the combined output (the training op's form), like the vector scratch; the
# gated-halves walk (the op-by-op boundary) was not measured and keeps fp32.
DEFAULT_SCRATCH_BF16 = True
# The walk's load pipeline and register cap (scan_bwd_launch_config's prefetch, maxnreg). Static check (sm_90, triton
# 3.8, Vim-Ti bf16 halves): with PREFETCH (the next step's loads issued before this step's arithmetic) the walk takes
# 255 registers, 8 one-warp programs per SM; without it 232, and capped at 168 no spill at all (1,704 instructions vs
# 1,824): 12 programs per SM, 1.5x the warps to hide the latency the prefetch hid. That pays only where the grid has
# more programs than one wave of the prefetching walk holds. Measured on the H200 (2026-12-03, bf16, Vim-Ti,
# results/history/bwdprefetch-h200-2026-12-03.json), kernel ms prefetch / off + cap 168: batch 128 x 197 (3,072
# programs) 1.38 / 1.26, 8 x 6,085 (3,072 after the split) 2.73 / 2.71, 32 x 1,025 (768 programs, under one wave)
# 2.16 / 2.42; whole captured training steps 224/128 2,475 -> 2,667 img/s, 1248/8 72.4 -> 77.5.
# None (auto): prefetch unless the walk has more than PREFETCH_PROGRAMS_PER_SM x SMs programs, then off + the cap.
DEFAULT_PREFETCH: bool | None = None
# The walk from every other stored state (`_scan_bwd_kernel`'s PAIRS: half the scratch written and read), where the
# walk runs without prefetch and sub-chunks. Measured on the H200 (2026-12-03, session f, combined bf16, Vim-Ti,
# kernel ms, two alternated passes, gradients bitwise equal; results/history/bwdpairs-h200-2026-12-03f.json): capped
# at 168 registers 8 x 6,085 2.57 -> 2.41, 128 x 197 1.30 -> 1.11; capped at 184 slower (2.83, 1.38). None (auto):
# on wherever it applies (the capped walk, on the GPU); True / False force it where it applies.
DEFAULT_PAIRS: bool | None = None
DEFAULT_WALK_MAXNREG: int | None = None
PREFETCH_PROGRAMS_PER_SM = 8
CAPPED_WALK_MAXNREG = 168
# The walk's L1 prefetch distance in steps (`_scan_bwd_kernel` L1_AHEAD; 0: off). Measured on the H200 (2026-12-03,
# commit 65ec140, combined bf16, Vim-Ti, kernel ms, two alternated passes, gradients bitwise equal;
# results/history/bwdpf-h200-2026-12-03.json), distance 0 / 2 / 4 / 8: batch 32 x 1,025 (one group, the prefetching
# walk) 2.06 / 1.88 / 1.97 / 2.02; 8 x 6,085 (16 groups of 384 steps, the capped walk) 2.65 / 2.60 / 2.66 / 2.78;
# 128 x 197 (197 steps per program) 1.37 / 1.38 / 1.40 / 1.44 (the capped walk then ran without pairs; the pairs
# walk, shipped since, left L1_AHEAD out of its walk until session h: see DEFAULT_SCRATCH_AHEAD for its measurement).
# None (auto): L1_AHEAD_STEPS for 16-bit operands in the prefetching walk (one wave, no register cap) where every
# program but the last walks at least L1_MIN_STEPS scan steps, and in the capped pairs walk; else 0 (fp32 is
# unmeasured).
DEFAULT_L1_AHEAD: int | None = None
L1_AHEAD_STEPS = 2
L1_MIN_STEPS = 256
# The walk over the channel blocks in several launches, one after the other (`scan_bwd_launch_config`'s
# channel_splits): each launch's programs fit the GPU at once, and its scratch and dB/dC partials are sized for
# that launch and reused by the next (at Vim-Ti 1248 px, batch 8: 3,072 capped-walk programs, 1,584 resident on
# the H200; 0.20 -> 0.10 GB of scratch, 0.15 -> 0.07 GB of partials). A memory-for-speed trade, measured on the
# H200 (2026-12-03, session g, combined bf16, Vim-Ti; results/history/splitab-h200-2026-12-03g.json), two launches
# vs one: kernel 2.373 -> 2.457 ms at 8 x 6,085 (the call's own peak 611 -> 444 MiB), 1.197 -> 1.224 ms at
# 128 x 197 (408 -> 275 MiB); whole captured training steps A B B A: 1248/8 83.1 -> 82.1 img/s with the step's
# peak 4.04 -> 3.87 GiB (issue 10's goal: <= 4.0), 224/128 2,929 -> 2,881 img/s, 2.36 -> 2.23 GiB (DeiT-Ti sdpa:
# 2.33). None (auto): in the capped walk on the GPU, as many launches as the grid has waves of resident programs
# (REGISTERS_PER_SM / (32 x the register cap) per SM); else one launch. 1: the faster single launch.
# Since checkpoints every 128 tokens lowered the peaks (session i), the default is the single launch again, measured
# on the H200 (2026-12-04, session l, results/history/splitsteps-h200-2026-12-04l.json, whole captured Vim-Ti bf16
# steps, auto auto-vs-one one auto): 1248/8 94.85 -> 96.15 img/s, peak 3.545 -> 3.803 GiB (issue 10's goal <= 4.0;
# DeiT-Ti sdpa 4.37); 224/128 3,107 -> 3,174 img/s, peak 2.049 -> 2.272 GiB (DeiT-Ti sdpa 2.33).
DEFAULT_CHANNEL_SPLITS: int | None = 1
REGISTERS_PER_SM = 65536
# The walk's L1 prefetch of the scratch tile `scratch_ahead` steps on (`_scan_bwd_kernel` SCRATCH_AHEAD; 0: off),
# and L2 eviction hints (`evict_hints`: the scratch's stores and loads evict_last, the per-token gradient stores
# evict_first). Measured on the H200 (2026-12-03, session h, combined bf16, Vim-Ti, kernel ms, two alternated passes,
# gradients bitwise equal; results/history/scratchpf-h200-2026-12-03h.json), the capped pairs walk at 8 x 6,085 /
# 128 x 197: shipped 2.461 / 1.204, scratch_ahead 2 / 4 / 8 alone 2.54-2.51-2.54 / 1.26-1.27, evict hints 2.441 /
# 1.244, scratch_ahead 4 with l1_ahead 2 2.406 / 1.180; a second call: shipped 2.397 / 1.156, l1_ahead 2 alone
# 2.354 / 1.133, with scratch_ahead 4 2.393 / 1.114, l1_ahead 4 slower. Whole captured Vim-Ti training steps A B B A:
# scratch_ahead 4 + l1_ahead 2: 1248/8 82.1 -> 84.4 img/s, 224/128 2,880 -> 2,982; l1_ahead 2 alone 84.1 / 2,966.
# None (auto): SCRATCH_AHEAD_STEPS in the capped pairs walk (with L1_AHEAD_STEPS there too), else 0; hints off.
DEFAULT_SCRATCH_AHEAD: int | None = None
SCRATCH_AHEAD_STEPS = 4
# Pass A's (`_scan_bwd_group_carry_kernel`) L1 prefetch distance in steps (0: off). Measured on the H200
# (2026-12-03, session h, whole calls at 8 x 6,085, combined bf16, gradients bitwise equal;
# results/history/carrypf-h200-2026-12-03h.json), distance 0 / 2 / 4 / 8: 2.321 / 2.351 / 2.336 / 2.343 ms: no gain
# (pass A already prefetches into registers, at 72 registers). Off.
CARRY_L1_AHEAD = 0
# Pass A two steps per trip with the next two steps' loads issued first (its PREFETCH; before session k it took the
# walk's flag, off in the capped walk, so at 1248 px batch 8 every step waited on its own loads); 130 registers
# (72 with one step per trip). Measured on the H200 (results/history/carryab-h200-2026-12-04k.json, whole scan
# backward calls at batch 8 x 6,085, bf16, CUDA-graph replays, us): before (pass A with runtime direction and
# strides) 2,026, per-direction pass A one step per trip 1,900, two steps with prefetch 1,892; Vim-S 3,935 / 3,627
# / 3,604; fp32 2,653 / 2,698 / 2,686. Captured Vim-Ti steps at 1248 px batch 8: 93.4 -> 95.3 img/s.
CARRY_PREFETCH = True
DEFAULT_EVICT_HINTS = False
# The walk's leaving state carried from the step after it (`_scan_bwd_kernel`'s CARRY_H; session o, static only):
# the walk goes backwards in scan order, so the state leaving step j is the state entering step j + 1, which the
# previous trip loaded from the scratch (or rebuilt, PAIRS), and the segment's last step leaves the state that the
# recomputation returns. The walk then drops h = a h_prev + B Delta u (16 FMUL + 16 FFMA per step) for copies of
# the entering state into the carried one (MOV). Static (sm_90, triton 3.6, Vim-Ti 1248/8, SASS per walk trip; the
# pairs loop holds both branches, so "executed" is its odd plus its even path): the capped pairs walk, combined bf16
# (the training op's) 709 -> 701 in the loop, 1,188 -> 1,159 executed per two steps (-2.4%), and its spill (18 STL
# / 20 LDL, 2 LDL in the loop) gone; halves bf16 1,192 -> 1,188, spill unchanged; the prefetching walk 517 -> 531
# and fp32 500 -> 501 (more copies than multiplies saved). Loading the odd and even steps' tile and inputs outside
# the pairs branch shrank the loop to 628 but not the executed paths (1,156) and spilled outside it: not kept. The
# same values: the carried state is the one the recomputation stored (bitwise under the interpreter). None (auto):
# on in the capped 16-bit pairs walk and under the interpreter (the tests' default walk), else off. Where the pairs
# walk takes two steps per trip (DEFAULT_PAIR_TRIPS below) it carries the state anyway and this flag is not read.
# Measured on the H200 (results/history/carryh-h200-2026-12-05o.json, the training op's walk, gradients bitwise
# equal): 1,745 -> 1,731 us at 8 x 6,085 (-0.8%), 770 -> 760 at 128 x 197 (-1.3%). Kept on.
DEFAULT_CARRY_H: bool | None = None
# The pairs walk two steps per loop trip (`_scan_bwd_kernel`'s PAIR_TRIPS; session o): an odd step and the even step
# before it in scan order, the leaving state carried (as CARRY_H), so that no branch on the step's parity and no copy
# of the carried state remain. Static (triton 3.6, the capped pairs walk of the training op's form at Vim-Ti 1248/8):
# 1,188 SASS instructions executed per two steps recomputing the state, 1,159 carrying it one step per trip, 1,002
# two per trip, no spill in the loop. Measured on the H200 slower all the same (2026-12-05, commit 8592cb6,
# results/history/carryh-h200-2026-12-05o.json; CUDA-graph replays, us, mean of two alternated passes, gradients
# bitwise equal): 8 x 6,085 recomputed 1,745 / carried 1,731 / two per trip 1,906; 128 x 197 770 / 760 / 851; whole
# captured steps 1248/8 100.5 -> 97.1 img/s, 224/128 3,271 -> 3,166. Fewer instructions did not buy time: the
# two-step body serializes more of each step's dependency chain at ~3 warps per scheduler. Off (kept as an option).
DEFAULT_PAIR_TRIPS = False
# Channel masks where E is a multiple of BLOCK_C (the kernels' MASK_C: without them the loads skip the predicate and
# the zero fill). Pass A runs without them there (static, triton 3.6, Vim-Ti 1248/8: 257 -> 239 instructions per
# two steps, no spill). The walk: 40 fewer instructions per step (718 -> 678), but its spill grows 56 -> 112 B
# (3.6; 104 -> 144 B under 3.8), the added reloads outside its inner loops. Measured slower on the H200 (session m,
# results/history/bcmask-h200-2026-12-04m.json: 1,865 -> 1,917 us at Vim-Ti 8 x 6,085), so the walk keeps its masks
# on the GPU (the interpreter runs it unmasked, so tests cover both forms).
UNMASKED_WALK = False


@dataclass(frozen=True)
class ScanBwdLaunch:
    """How `bimamba_scan_bwd` launches: `walk` (`_scan_bwd_kernel`, grid (channel blocks, 2 * groups, batch)),
    `carry` (`_scan_bwd_group_carry_kernel`, grid (channel blocks, 2 * (groups - 1), batch); None with one
    group), and the split of L: `groups` programs per (channel block, direction, batch), each walking
    `chunks_per_program` checkpoint chunks (the last group may hold fewer). `scratch_tiles`: (N, BLOCK_C) fp32
    tiles of scratch per walk program (SUB_TILES sub-checkpoints + SEG states; cdiv(SEG, 2) states with PAIRS).
    `channel_splits`: the walk runs as that many launches in order, each over `blocks_per_launch` consecutive
    channel blocks (the last over the rest); `walk.grid[0]` is all the channel blocks."""
    walk: LaunchConfig
    carry: LaunchConfig | None
    chunks_per_program: int
    groups: int
    scratch_tiles: int
    channel_splits: int = 1
    scratch_dtype: torch.dtype = torch.float32

    @property
    def blocks_per_launch(self) -> int:
        return cdiv(self.walk.grid[0], self.channel_splits)


def scan_bwd_launch_config(batch: int, channels: int, length: int, chunk: int, interpreted: bool,
                           chunks_per_program: int | None = None, sub_chunk: int | None = None,
                           scatter_sums: bool | None = None, n_state: int = 16,
                           block_c: int | None = None, prefetch: bool | None = None,
                           maxnreg: int | None = None, sm_count: int = 132, fp32: bool = False,
                           l1_ahead: int | None = None, pairs: bool | None = None,
                           channel_splits: int | None = None, scratch_ahead: int | None = None,
                           evict_hints: bool | None = None, carry_h: bool | None = None,
                           pair_trips: bool | None = None, scatter_xor: bool | None = None,
                           unit_state_stride: bool = True, vec_scratch: bool | None = None,
                           combine: bool = True, scratch_bf16: bool | None = None) -> ScanBwdLaunch:
    """The backward's grids, tiles, warps and split of L into chunk groups: the one place that chooses them (the
    launcher and `vimbench kernels static` both call it). One warp, a channel per lane, as the forward.
    chunks_per_program: checkpoint chunks per program along L; None picks: on the GPU enough groups that the
    walk has ~TARGET_PROGRAMS programs (one group, the sequential walk, where one group's grid already has
    SPLIT_BELOW_PROGRAMS programs: Vim-Ti from batch 11); under the interpreter 2, so that tests with a few
    chunks cross groups.
    A value >= cdiv(length, chunk) is one group (the single sequential walk, no pass A).
    sub_chunk: 0 (or >= chunk): recompute each checkpoint chunk once into a chunk-long scratch (2 exps per state
    element); S in 1..chunk-1: a two-level recompute, sub-checkpoints every S steps, then S steps at a time
    (3 exps per element, scratch cdiv(chunk, S) + S tiles instead of chunk: it can stay in L2). None picks
    (DEFAULT_SUB_CHUNK; the interpreter 3, so that tests cross sub-chunks and end in a partial one).
    scatter_sums: reduce dB/dC over the lanes by a reduce-scatter of inline-asm shuffles (`_scattered_lane_sums`,
    32 shuffles per token instead of 160); only where its lane mapping holds (BLOCK_C = 32, one warp,
    n_state = 16), else tl.sum; None: DEFAULT_SCATTER_SUMS on the GPU, off under the interpreter (True there runs
    the shuffles as gathers along the channel axis: the same sums, for the tests).
    scatter_xor: with the reduce-scatter, the walk holds its states in the XOR order (`_state_xor`), whose first
    two reduce-scatter levels need no selects (SCATTER_SUMS = 2); None: DEFAULT_SCATTER_XOR for the combined
    output (`combine`) in 16-bit, else off (measured there only). Only where B and C have unit state stride
    (`unit_state_stride`: their rows load as per-lane groups of 4 contiguous states).
    block_c: channels per one-warp program, 8, 16 or 32 (an experiment knob: 16 leaves two lanes per channel and
    fewer registers per lane, so more programs per SM); None picks (32 on the GPU unless the grid is tiny;
    `runtime.interpreted_block_c` under the interpreter).
    prefetch: both passes issue the next step's loads before this step's arithmetic; None: DEFAULT_PREFETCH, and
    where that is None too, automatic: for 16-bit operands (not `fp32`), on unless the walk's grid has more
    programs than PREFETCH_PROGRAMS_PER_SM x sm_count (more than one wave of the prefetching walk), then off with
    maxnreg CAPPED_WALK_MAXNREG; on for fp32 (capped at 168 its walk spills 16 B; unmeasured) and under the
    interpreter.
    maxnreg: the walk's register cap for ptxas (more programs per SM; with prefetch off, 168 compiles without
    spills for bf16); None: DEFAULT_WALK_MAXNREG, else the automatic choice above, else ptxas's. Ignored under
    the interpreter. sm_count: the GPU's streaming multiprocessors (132: the H200). l1_ahead: the walk's
    L1_AHEAD (an L1 prefetch that many steps ahead); None: DEFAULT_L1_AHEAD, and where that is None too,
    automatic: L1_AHEAD_STEPS in the prefetching walk for 16-bit operands where a program walks at least
    L1_MIN_STEPS steps and in the capped pairs walk (16-bit), else 0; always 0 under the interpreter. pairs: the
    walk from every other stored state (`_scan_bwd_kernel`'s PAIRS; only without prefetch and sub-chunks, else
    ignored); None: DEFAULT_PAIRS, and where that is None too, on except under the interpreter (whose walk
    prefetches anyway; tests force it).
    channel_splits: run the walk as this many launches over consecutive ranges of channel blocks (scratch and
    dB/dC partials sized for one launch); None: DEFAULT_CHANNEL_SPLITS, and where that is None too, automatic: in
    the capped walk on the GPU the grid's waves of resident programs, else 1; at most the channel blocks.
    scratch_ahead: the walk's SCRATCH_AHEAD (an L1 prefetch of the scratch tile read that many steps on); None:
    DEFAULT_SCRATCH_AHEAD, and where that is None too, SCRATCH_AHEAD_STEPS in the capped pairs walk (16-bit), else
    0; always 0 under the interpreter. evict_hints: L2 eviction hints on the scratch (evict_last) and
    the per-token gradient stores (evict_first); None: DEFAULT_EVICT_HINTS. carry_h: the walk takes each step's
    leaving state from the step after it instead of recomputing it (`_scan_bwd_kernel`'s CARRY_H); None:
    DEFAULT_CARRY_H, and where that is None too, on in the capped 16-bit pairs walk and under the interpreter.
    pair_trips: the pairs walk two steps per loop trip, the leaving state carried (`_scan_bwd_kernel`'s
    PAIR_TRIPS; only with pairs, else ignored; measured slower, an experiment knob); None: DEFAULT_PAIR_TRIPS.
    vec_scratch: the walk's scratch state tiles as per-lane groups of 4 states (`_load_state_tile`: 4 16-byte
    loads or stores per tile and lane instead of 16 4-byte ones; N = 16 only); None: DEFAULT_VEC_SCRATCH where
    scatter_xor's default applies.
    scratch_bf16: the walk's scratch in bf16 (ScanBwdLaunch.scratch_dtype; fp32 operands keep an fp32 scratch);
    None: DEFAULT_SCRATCH_BF16 for the combined output.
    combine: the combined output (the training op's form) or the gated halves; picks the defaults above.
    Returns the launches; the walk's SCATTER_SUMS constexpr is False (tl.sum), True (the reduce-scatter) or 2 (the
    reduce-scatter from the XOR state order)."""
    n_chunks = max(1, cdiv(length, chunk))
    if block_c is not None:
        if block_c not in (8, 16, 32):
            raise ValueError(f"block_c must be 8, 16 or 32; got {block_c}")
    elif interpreted:
        block_c = interpreted_block_c(channels)
    else:
        per_group_32 = cdiv(channels, 32) * 2 * batch
        block_c = _blocks_for(per_group_32 * _groups_for(per_group_32, n_chunks, chunks_per_program))
    per_group = cdiv(channels, block_c) * 2 * batch
    if chunks_per_program is None and interpreted:
        chunks_per_program = 2
    groups = _groups_for(per_group, n_chunks, chunks_per_program)
    cpp = cdiv(n_chunks, groups)
    groups = cdiv(n_chunks, cpp)
    if sub_chunk is None:
        sub_chunk = 3 if interpreted else DEFAULT_SUB_CHUNK
    sub_chunk = int(sub_chunk)
    if sub_chunk < 0:
        raise ValueError(f"sub_chunk must be >= 0; got {sub_chunk}")
    sub = sub_chunk if 0 < sub_chunk < chunk else 0
    seg, sub_tiles = (sub, cdiv(chunk, sub)) if sub else (chunk, 0)
    if scatter_sums is None:
        scatter_sums = DEFAULT_SCATTER_SUMS and not interpreted
    scatter = bool(scatter_sums) and block_c == 32 and n_state == 16
    if scatter_xor is None:
        scatter_xor = DEFAULT_SCATTER_XOR and combine and not fp32
    if scatter and unit_state_stride and bool(scatter_xor):
        scatter = 2
    walk_programs = cdiv(channels, block_c) * 2 * groups * batch
    prefetch = DEFAULT_PREFETCH if prefetch is None else prefetch
    if prefetch is None:  # auto: more programs than one prefetching wave -> no prefetch, capped registers
        prefetch = interpreted or fp32 or walk_programs <= PREFETCH_PROGRAMS_PER_SM * sm_count
        if maxnreg is None and DEFAULT_WALK_MAXNREG is None and not prefetch:
            maxnreg = CAPPED_WALK_MAXNREG
    prefetch = bool(prefetch)
    maxnreg = DEFAULT_WALK_MAXNREG if maxnreg is None else int(maxnreg)
    if maxnreg is not None and not 32 <= maxnreg <= 255:
        raise ValueError(f"maxnreg must be in 32..255; got {maxnreg}")
    pairs = DEFAULT_PAIRS if pairs is None else pairs
    pairs = (not interpreted if pairs is None else bool(pairs)) and not prefetch and not sub
    capped_pairs = pairs and maxnreg is not None and not fp32  # the measured walk of the L1 prefetches below
    l1_ahead = DEFAULT_L1_AHEAD if l1_ahead is None else l1_ahead
    if l1_ahead is None:  # auto: on where each program walks long enough, and in the capped pairs walk
        long_walk = min(cpp * chunk, length) >= L1_MIN_STEPS
        one_wave = prefetch and not fp32 and maxnreg is None and long_walk
        l1_ahead = L1_AHEAD_STEPS if one_wave or capped_pairs else 0
    l1_ahead = int(l1_ahead)
    if l1_ahead < 0:
        raise ValueError(f"l1_ahead must be >= 0; got {l1_ahead}")
    scratch_ahead = DEFAULT_SCRATCH_AHEAD if scratch_ahead is None else scratch_ahead
    if scratch_ahead is None:
        scratch_ahead = SCRATCH_AHEAD_STEPS if capped_pairs else 0
    scratch_ahead = int(scratch_ahead)
    if scratch_ahead < 0:
        raise ValueError(f"scratch_ahead must be >= 0; got {scratch_ahead}")
    hints = bool(DEFAULT_EVICT_HINTS if evict_hints is None else evict_hints)
    carry_h = DEFAULT_CARRY_H if carry_h is None else carry_h
    carry_h = (capped_pairs or interpreted) if carry_h is None else bool(carry_h)
    pair_trips = bool(DEFAULT_PAIR_TRIPS if pair_trips is None else pair_trips) and pairs
    if vec_scratch is None:
        vec_scratch = DEFAULT_VEC_SCRATCH and combine and not fp32
    vec_scratch = bool(vec_scratch) and n_state == 16
    masked = channels % block_c != 0
    constexprs = dict(BLOCK_C=block_c, CHUNK=chunk, USE_ASM=not interpreted, PREFETCH=prefetch, MASK_C=masked)
    n_cblocks = cdiv(channels, block_c)
    splits = DEFAULT_CHANNEL_SPLITS if channel_splits is None else channel_splits
    if splits is None:  # auto: one launch per wave of resident programs, in the capped walk
        capped = not interpreted and not prefetch and maxnreg is not None
        resident = sm_count * (REGISTERS_PER_SM // (32 * maxnreg)) if capped else 0
        splits = cdiv(walk_programs, resident) if capped else 1
    splits = int(splits)
    if splits < 1:
        raise ValueError(f"channel_splits must be >= 1; got {splits}")
    splits = cdiv(n_cblocks, cdiv(n_cblocks, min(splits, n_cblocks)))  # no empty launch
    walk = LaunchConfig(kernel="_scan_bwd_kernel", grid=(n_cblocks, 2 * groups, batch),
                        constexprs=dict(constexprs, SUB=sub, SEG=seg, SUB_TILES=sub_tiles,
                                        SCATTER_SUMS=scatter, L1_AHEAD=0 if interpreted else l1_ahead,
                                        PAIRS=pairs, SCRATCH_AHEAD=0 if interpreted else scratch_ahead,
                                        SCRATCH_EVICT="evict_last" if hints else None,
                                        OUT_EVICT="evict_first" if hints else None,
                                        MASK_C=masked or not (UNMASKED_WALK or interpreted), CARRY_H=carry_h,
                                        PAIR_TRIPS=pair_trips, VEC_SCRATCH=vec_scratch),
                        num_warps=1, maxnreg=None if interpreted else maxnreg)
    carry = None
    if groups > 1:
        carry = LaunchConfig(kernel="_scan_bwd_group_carry_kernel", grid=(n_cblocks, 2 * (groups - 1), batch),
                             constexprs=dict(constexprs, PREFETCH=CARRY_PREFETCH,
                                             L1_AHEAD=0 if interpreted else CARRY_L1_AHEAD),
                             num_warps=1)
    scratch_bf16 = bool(DEFAULT_SCRATCH_BF16 and combine if scratch_bf16 is None else scratch_bf16) and not fp32
    return ScanBwdLaunch(walk=walk, carry=carry, chunks_per_program=cpp, groups=groups,
                         scratch_tiles=sub_tiles + (cdiv(seg, 2) if pairs else seg), channel_splits=splits,
                         scratch_dtype=torch.bfloat16 if scratch_bf16 else torch.float32)


def _groups_for(programs_per_group: int, n_chunks: int, chunks_per_program: int | None) -> int:
    """Chunk groups along L: as forced by chunks_per_program, else one where one group's grid already has
    SPLIT_BELOW_PROGRAMS programs, and enough for ~TARGET_PROGRAMS programs below that."""
    if chunks_per_program is not None:
        if int(chunks_per_program) < 1:
            raise ValueError(f"chunks_per_program must be >= 1; got {chunks_per_program}")
        return cdiv(n_chunks, min(int(chunks_per_program), n_chunks))
    if programs_per_group >= SPLIT_BELOW_PROGRAMS:
        return 1
    return max(1, min(n_chunks, TARGET_PROGRAMS // max(1, programs_per_group)))


def _check_bwd(grad_out, u, checkpoints, combine, chunk, n_state):
    _, batch, channels, length = u.shape
    g_shape = (batch, channels, length) if combine else (2, batch, channels, length)
    if tuple(grad_out.shape) != g_shape:
        raise ValueError(f"grad_out must be {g_shape} for combine={combine}; got {tuple(grad_out.shape)}")
    chunk = int(chunk)
    if chunk < 2 or chunk % 2 or chunk > 1024:
        raise ValueError(f"chunk must be an even number of tokens in 2..1024; got {chunk}")
    ck_shape = (2, batch, cdiv(length, chunk), n_state, channels)
    if tuple(checkpoints.shape) != ck_shape or checkpoints.dtype != torch.float32 or \
            not checkpoints.is_contiguous():
        raise ValueError(f"checkpoints must be contiguous fp32 {ck_shape} (from bimamba_scan_fwd_save with "
                         f"chunk={chunk}); got {tuple(checkpoints.shape)} {checkpoints.dtype}")
    return chunk


def bimamba_scan_bwd(grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus=True,
                     combine=True, chunk=64, *, chunks_per_program=None, sub_chunk=None, scatter_sums=None,
                     block_c=None, prefetch=None, maxnreg=None, l1_ahead=None, pairs=None, channel_splits=None,
                     scratch_ahead=None, evict_hints=None, carry_h=None, pair_trips=None, scatter_xor=None,
                     vec_scratch=None, dz_halves=False, bc_rows_dtype=None, scratch_bf16=None, softplus_done=False):
    """Gradients of `bimamba_scan` (see the module docstring for the contract). Returns
    (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias); None for each absent optional input.
    softplus_done=True: delta holds Delta = softplus(pre + delta_bias) already (kernels.dt_softplus made it; the
    forward ran `bimamba_scan_fwd_save` on it with delta_softplus=False and no bias), delta_softplus must be True
    and delta_bias is the bias inside it: the gradients are still those of pre, ddelta = dL/dpre (the slope
    sigmoid(pre) = 1 - e^-Delta, from Delta) in u's dtype, ddelta_bias its sums, and the bias is not added again.
    dz_halves=True: dz is returned unsummed, (2, batch, E, L) in z's dtype laid out like u, [d] = direction d's
    term (their sum is dz): each direction stores its own, with no fp32 buffer, zero fill, atomics or cast. The
    caller sums them where it consumes dz (the fused training op: in its in_proj GEMMs, K = 2E).
    bc_rows_dtype: None, or a dtype: dB and dC come back as GEMM rows instead, one (2, batch * L, 2N) tensor
    [dB | dC] in that dtype (x_dbl's column order: what the x_proj backward takes) in dB's place, None in dC's,
    summed from the partials by one kernel (`_bc_rows_kernel`: no fp32 sums, transposes, casts or concatenation).
    chunks_per_program: force the split of L (checkpoint chunks per program; >= cdiv(L, chunk): one program
    walks the whole sequence, the pre-chunk-parallel kernel); None: `scan_bwd_launch_config` picks. sub_chunk,
    scatter_sums, block_c, prefetch, maxnreg, l1_ahead, pairs, channel_splits, scratch_ahead, evict_hints, carry_h,
    pair_trips, scatter_xor, vec_scratch, scratch_bf16: launch experiments, None = the defaults
    (`scan_bwd_launch_config`).

    Eager calls are replayed (kernels/launch.py `CallMemo`): a call whose signature (the inputs' shapes, strides,
    dtypes, alignment and aliasing, and every argument above) was seen before reuses that call's plan (checks,
    launch configuration, buffer layouts: `_ScanBwdPlan`), allocates its buffers and hands the recorded launches
    to the compiled kernels; only the partial sums after the launches run as torch ops."""
    inputs = (grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints)
    if softplus_done and not delta_softplus:
        raise ValueError("softplus_done=True says delta went through the softplus already: delta_softplus must be "
                         "True")
    options = (bool(delta_softplus), bool(combine), chunk, chunks_per_program, sub_chunk, scatter_sums, block_c,
               prefetch, maxnreg, l1_ahead, pairs, channel_splits, scratch_ahead, evict_hints, carry_h, pair_trips,
               scatter_xor, vec_scratch, bool(dz_halves), bc_rows_dtype, scratch_bf16, bool(softplus_done))
    sig = _BWD_MEMO.signature(inputs, *options)
    plan = _BWD_MEMO.extra(sig)
    if plan is not None:
        buffers = plan.buffers(u.device)
        if _BWD_MEMO.replay(sig, inputs + buffers):
            return plan.finish(buffers, z)
    else:
        plan, buffers = _ScanBwdPlan.build(*inputs, *options)
        if plan.empty:
            return plan.empty_grads(buffers, z)
    if plan.cfg.channel_splits > 1:  # torch sums between the launches: never replayed
        return plan.run_split(inputs, buffers, z)
    with _BWD_MEMO.record(sig, inputs + buffers, extra=plan):
        plan.launch(inputs, buffers)
    return plan.finish(buffers, z)


_BWD_MEMO = CallMemo("bimamba_scan_bwd")  # eager calls replayed by signature, with their plans (kernels/launch.py)


class _ScanBwdBuffers(NamedTuple):
    """The buffers of one backward call (None where a call has none): the per-token gradients, the dB/dC partials
    (a launch's channel blocks, 2, batch, L, N), the dA/dD/dbias partials (batch * groups, 2, E[, N]), the walk's
    scratch, pass A's carries and Delta sums, the [dB | dC] rows."""
    du: torch.Tensor
    ddelta: torch.Tensor
    dz_out: torch.Tensor | None
    dBp: torch.Tensor | None
    dCp: torch.Tensor | None
    dAp: torch.Tensor | None
    dDp: torch.Tensor | None
    dbp: torch.Tensor | None
    scratch: torch.Tensor | None
    mu: torch.Tensor | None
    dsum: torch.Tensor | None
    bc_rows: torch.Tensor | None


@dataclass(frozen=True)
class _ScanBwdPlan:
    """What one `bimamba_scan_bwd` call decides from its signature alone: the checks' outcome, the launch
    configuration and the buffers' layouts. `buffers` allocates them, `launch` makes the call's launches (nothing
    else, so that a CallMemo replay stands for it), `finish` turns the buffers into the returned gradients."""
    cfg: ScanBwdLaunch | None
    specs: tuple  # BufferSpec or None, in _ScanBwdBuffers order
    flags: dict
    has_d: bool
    has_z: bool
    has_bias: bool
    dz_halves: bool
    fused_bc: bool
    empty: bool = False
    shape: tuple = ()  # (batch, channels, length, n_state)
    bc_rows_dtype: torch.dtype | None = None

    @classmethod
    def build(cls, grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints, delta_softplus, combine, chunk,
              chunks_per_program, sub_chunk, scatter_sums, block_c, prefetch, maxnreg, l1_ahead, pairs,
              channel_splits, scratch_ahead, evict_hints, carry_h, pair_trips, scatter_xor, vec_scratch, dz_halves,
              bc_rows_dtype, scratch_bf16, softplus_done) -> tuple["_ScanBwdPlan", tuple]:
        """The plan of a call with these arguments, and this call's buffers (allocated as the plan records)."""
        _check(u, delta, A, B, C, 2)
        n_state = A.shape[-1]
        chunk = _check_bwd(grad_out, u, checkpoints, combine, chunk, n_state)
        check_token_offsets(u.shape[-1], grad_out=grad_out, z=z)
        if (u.shape[-1] - 1) * n_state >= INT32_LIMIT:  # the dB/dC partials' token rows (L, N): 32-bit indices
            raise ValueError(f"L = {u.shape[-1]:,} tokens is too long for the scan backward's 32-bit token "
                             f"indexing (at most {INT32_LIMIT // n_state:,} with N = {n_state})")
        _, batch, channels, length = u.shape
        device = u.device
        has_d, has_z, has_bias = D is not None, z is not None, delta_bias is not None
        dz_halves = bool(dz_halves) and has_z
        f32 = dict(dtype=torch.float32, device=device)
        # ddelta is dL/dpre in u's dtype where delta is softplus'd already (fp16 for a bf16 model: a gradient
        # needs bf16's range)
        du, ddelta = torch.empty_like(u), torch.empty_like(delta, dtype=u.dtype if softplus_done else delta.dtype)
        if dz_halves:  # each element is stored by one lane of one direction: no zero fill
            dz_out = torch.empty_like(u, dtype=z.dtype)
        else:
            dz_out = torch.zeros_like(u[0], dtype=torch.float32) if has_z else None
        common = dict(has_d=has_d, has_z=has_z, has_bias=has_bias, dz_halves=dz_halves,
                      shape=(batch, channels, length, n_state), bc_rows_dtype=bc_rows_dtype)
        if length == 0 or batch == 0 or channels == 0:
            buffers = _ScanBwdBuffers(du, ddelta, dz_out, *(None,) * 9)
            return cls(cfg=None, specs=cls._specs(buffers, dz_halves), flags={}, fused_bc=False, empty=True,
                       **common), buffers
        interpreted = check_device(u, _scan_bwd_kernel)
        cfg = scan_bwd_launch_config(batch, channels, length, chunk, interpreted, chunks_per_program, sub_chunk,
                                     scatter_sums, n_state, block_c, prefetch, maxnreg,
                                     sm_count=1 if interpreted else sm_count(device),
                                     fp32=u.dtype == torch.float32, l1_ahead=l1_ahead, pairs=pairs,
                                     channel_splits=channel_splits, scratch_ahead=scratch_ahead,
                                     evict_hints=evict_hints, carry_h=carry_h, pair_trips=pair_trips,
                                     scatter_xor=scatter_xor,
                                     unit_state_stride=B.stride(2) == 1 and C.stride(2) == 1,
                                     vec_scratch=vec_scratch, combine=combine, scratch_bf16=scratch_bf16)
        groups, per_launch = cfg.groups, cfg.blocks_per_launch  # the partials and scratch are for one launch
        dBp = torch.empty(per_launch, 2, batch, length, n_state, **f32)
        dCp = torch.empty_like(dBp)
        dAp = torch.empty(batch * groups, 2, channels, n_state, **f32)
        dDp = torch.empty(batch * groups, 2, channels, **f32) if has_d else None
        dbp = torch.empty(batch * groups, 2, channels, **f32) if has_bias else None
        scratch = torch.empty(per_launch * 2 * batch * groups, cfg.scratch_tiles, n_state,
                              cfg.walk.constexprs["BLOCK_C"], dtype=cfg.scratch_dtype, device=device)
        mu = dsum = None  # read only with several groups
        if cfg.carry is not None:
            mu = torch.empty(2, batch, groups, n_state, channels, **f32)
            dsum = torch.empty(2, batch, groups, channels, **f32)
        bc_rows = None
        if bc_rows_dtype is not None:
            bc_rows = torch.empty(2, batch * length, 2 * n_state, dtype=bc_rows_dtype, device=device)
        buffers = _ScanBwdBuffers(du, ddelta, dz_out, dBp, dCp, dAp, dDp, dbp, scratch, mu, dsum, bc_rows)
        flags = dict(N_STATE=n_state, HAS_Z=has_z, HAS_BIAS=has_bias, SOFTPLUS=2 if softplus_done else
                     bool(delta_softplus))
        return cls(cfg=cfg, specs=cls._specs(buffers, dz_halves), flags=flags,
                   fused_bc=bc_rows is not None and per_launch == cfg.walk.grid[0], **common), buffers

    @staticmethod
    def _specs(buffers: _ScanBwdBuffers, dz_halves: bool) -> tuple:
        return tuple(None if t is None else BufferSpec.of(t, zero=name == "dz_out" and not dz_halves)
                     for name, t in zip(_ScanBwdBuffers._fields, buffers))

    def buffers(self, device) -> _ScanBwdBuffers:
        return _ScanBwdBuffers(*(None if spec is None else spec.make(device) for spec in self.specs))

    def empty_grads(self, buffers, z) -> tuple:
        """The gradients of a call with no tokens, channels or batch (zeros, as the launches would leave them)."""
        batch, channels, length, n_state = self.shape
        du, ddelta, dz_out = (t if t is None else t.zero_() for t in (buffers.du, buffers.ddelta, buffers.dz_out))
        device = du.device
        f32 = dict(dtype=torch.float32, device=device)
        zeros_bc = torch.zeros(2, batch, n_state, length, **f32)
        if self.bc_rows_dtype is not None:
            zeros_bc, dC = torch.zeros(2, batch * length, 2 * n_state, dtype=self.bc_rows_dtype, device=device), None
        else:
            dC = zeros_bc.clone()
        return (du, ddelta, torch.zeros(2, channels, n_state, **f32), zeros_bc, dC,
                torch.zeros(2, channels, **f32) if self.has_d else None,
                dz_out.to(z.dtype) if self.has_z else None,
                torch.zeros(2, channels, **f32) if self.has_bias else None)

    def _walk(self, inputs, buffers, c_block0: int, blocks: int) -> None:
        grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints = inputs
        du, ddelta, dz_out, dBp, dCp, dAp, dDp, dbp, scratch, mu, dsum, _ = buffers
        cfg, walk, has_d, has_bias = self.cfg, self.cfg.walk, self.has_d, self.has_bias
        channels, length = self.shape[1], self.shape[2]
        A = A.float()
        Dt = D.float().contiguous() if has_d else A
        bt = delta_bias.float().contiguous() if has_bias else A
        zt = z if self.has_z else u[0]
        dzt = dz_out if self.has_z else u[0]
        dz_strides = dzt.stride() if self.dz_halves else (0, *dzt.stride())
        g_strides = (0, *grad_out.stride()) if grad_out.dim() == 3 else grad_out.stride()
        launch(_scan_bwd_kernel, (blocks, *walk.grid[1:]),
            grad_out, u, delta, A, B, C, Dt, zt, bt, checkpoints, scratch, A if mu is None else mu,
            A if dsum is None else dsum, du, ddelta, dzt, dBp, dCp, dAp, dDp if has_d else dAp,
            dbp if has_bias else dAp, channels, length, 0.5, cfg.chunks_per_program, c_block0,
            *g_strides, *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
            Dt.stride(0) if has_d else 0, bt.stride(0) if has_bias else 0,
            *zt.stride(), *du.stride(), *ddelta.stride(), *dz_strides,
            HAS_D=has_d, **self.flags, **walk.constexprs, DZ_HALVES=self.dz_halves, **walk.launch_options(),
        )

    def _carry(self, inputs, buffers) -> None:
        """Pass A (several chunk groups only): each later group's local carry and Delta sum."""
        if self.cfg.carry is None:
            return
        grad_out, u, delta, A, B, C, D, z, delta_bias, checkpoints = inputs
        mu, dsum = buffers.mu, buffers.dsum
        A = A.float()
        bt = delta_bias.float().contiguous() if self.has_bias else A
        zt = z if self.has_z else u[0]
        g_strides = (0, *grad_out.stride()) if grad_out.dim() == 3 else grad_out.stride()
        carry = self.cfg.carry
        launch(_scan_bwd_group_carry_kernel, carry.grid,
            grad_out, delta, A, C, zt, bt, mu, dsum,
            self.shape[1], self.shape[2], 0.5, self.cfg.chunks_per_program,
            *g_strides, *delta.stride(), *A.stride(), *C.stride(), bt.stride(0) if self.has_bias else 0,
            *zt.stride(), **self.flags, **carry.constexprs, num_warps=carry.num_warps,
        )

    def launch(self, inputs, buffers) -> None:
        """The call's launches, one walk launch (channel_splits 1): pass A, the walk, the dB/dC rows' sum."""
        self._carry(inputs, buffers)
        self._walk(inputs, buffers, 0, self.cfg.walk.grid[0])
        if self.fused_bc:
            _bc_rows(buffers.dBp, buffers.dCp, buffers.bc_rows)

    def finish(self, buffers: _ScanBwdBuffers, z) -> tuple:
        if self.fused_bc:
            return self._grads(buffers, buffers.bc_rows, None, z)
        return self._grads(buffers, buffers.dBp.sum(0), buffers.dCp.sum(0), z)

    def _grads(self, buffers: _ScanBwdBuffers, dB, dC, z) -> tuple:
        """The returned gradients; dB, dC: the [dB | dC] rows and None, or the dB/dC partials' fp32 sums."""
        if dC is not None:
            if buffers.bc_rows is not None:
                buffers.bc_rows.view(2, self.shape[0], self.shape[2], -1).copy_(torch.cat([dB, dC], -1))
                dB, dC = buffers.bc_rows, None
            else:
                dB, dC = dB.transpose(-1, -2), dC.transpose(-1, -2)
        dz = None
        if self.has_z:
            dz = buffers.dz_out if self.dz_halves or z.dtype == torch.float32 else buffers.dz_out.to(z.dtype)
        return (buffers.du, buffers.ddelta, sum_partials(buffers.dAp), dB, dC,
                sum_partials(buffers.dDp) if self.has_d else None, dz,
                sum_partials(buffers.dbp) if self.has_bias else None)

    def run_split(self, inputs, buffers, z) -> tuple:
        """The walk as several launches over ranges of channel blocks (`channel_splits`), sharing the scratch and
        the dB/dC partials: each launch's partials are summed (fp32) before the next overwrites them."""
        dBp, dCp = buffers.dBp, buffers.dCp
        self._carry(inputs, buffers)
        n_cblocks, per_launch = self.cfg.walk.grid[0], self.cfg.blocks_per_launch
        dB = dC = None
        for c_block0 in range(0, n_cblocks, per_launch):
            blocks = min(per_launch, n_cblocks - c_block0)
            self._walk(inputs, buffers, c_block0, blocks)
            if dB is None:
                dB, dC = dBp[:blocks].sum(0), dCp[:blocks].sum(0)
            else:
                dB += dBp[:blocks].sum(0)
                dC += dCp[:blocks].sum(0)
        return self._grads(buffers, dB, dC, z)

