"""Chunk-parallel (split-L) selective scan forward, for grids the one-pass `fwd._scan_kernel` leaves underfilled.

Why: `_scan_kernel` runs one one-warp program per (32 channels, direction, batch), each walking all L tokens one
after another (~345 ns per token on the H200). With few programs (Vim-Ti at batch 8: 192; batch 1: 24) the GPU is
mostly idle and the time is L x that latency, whatever the batch: 2.10 ms at batch 8 vs 2.52 ms at batch 64.

How: the recurrence h_t = a_t * h_{t-1} + b_t (a_t = exp(Delta_t A), per state element) is linear, so the tokens
split into chunks of T scan steps (chunk c: steps cT .. cT + T - 1, in each direction's own scan order):
1. `_chunk_states_kernel`, grid (channel blocks, chunks - 1, dirs x batch): each chunk but the last runs the
   recurrence from a zero state, writes no outputs, and stores its local end state (N, C) fp32 and the chunk's
   sum of Delta per channel: the decay across the whole chunk is prod_t exp(Delta_t A_n) = exp(A_n sum_t Delta_t).
2. `_chunk_combine_kernel`, grid (state-element blocks, dirs x batch): walks the chunks in order,
   H(c + 1) = exp(A sum Delta(c)) * H(c) + h_local(c), H(0) = 0, and overwrites each chunk's local state with the
   state entering the next chunk (N x C multiply-adds per chunk; elementwise, so each program takes a coalesced
   block of the (N, E) slab, and loads four chunks ahead of the chain).
3. `_chunk_outputs_kernel`, grid (channel blocks, chunks, dirs x batch): reruns each chunk from its true entry
   state with `_scan_kernel`'s own walk (fwd.py's `_walk`: compiled once per direction, constexpr token strides,
   loads with prefetch, softplus, outputs in both forms, in place over u allowed) and, for training, the fp32
   checkpoints of every K-th scan step in `_scan_kernel`'s layout (dirs, batch, cdiv(L, K), N, E). With T == K
   (the training forward's automatic choice) the checkpoints are the chunks' entry states: passes 1 and the
   combine write them straight into the checkpoint buffer and pass 3 stores nothing in its loop. Otherwise pass 3
   stores them as it walks: T is even and chunks start at even steps, so every multiple of K (even) is some
   trip's first step, and any even T gives the same checkpoints.

Cost: pass 1 repeats the recurrence's exp work (not the outputs) for all chunks but the last, so the total exp
work is ~2x the one-pass kernel's; it pays when the one-pass grid is far from filling the GPU
(`chunked_scan_launch_config` decides). Outputs are bitwise what each chunk computes from its entry state;
they match the one-pass kernel to fp32 rounding (the entry states are sums in a different order).

In place: with out=u (or delta), pass 3's prefetch past its chunk's last step may read a neighbouring chunk's
already-overwritten tokens; those loads are never used (the chunk ends first). Every element a chunk uses is
read by the lane that overwrites it, before it does, as in the one-pass kernel; pass 1 runs before pass 3.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels import fastmath
from kernels.launch import launch
from kernels.runtime import LaunchConfig, cdiv, interpreted_block_c
from kernels.selective_scan.fwd import (LOG2E, _load_lanes, _softplus, _token_position, _walk, asm_level,
                                        channel_rows, decay_rates, load_rows, store_rows)

# The one-pass grid is "underfilled" below this many one-warp programs per SM: the chunked path then does ~2x the
# exp work on more programs (kernels/NOTES.md, "Chunk-parallel scan forward": at batch 64 the one-pass kernel's
# 12 resident one-warp programs per SM keep issue and MUFU busy; below ~5 per SM doubling the work wins).
UNDERFILLED_PROGRAMS_PER_SM = 4
# Measured on the H200 (results/history/scan-chunked-fwd-h200-2026-12-02.json, Vim-Ti E = 384): at 6,085 tokens,
# batch 8, 128-token chunks were fastest (0.76 ms halves vs 2.10 one-pass; one-wave sizing, 1,016-token chunks:
# 1.05 ms), and 64-128 at batch 1 (0.17-0.31 vs 2.00 ms): oversubscribing the SMs hides the per-token latency
# better than one wave. At 197 tokens the three launches lost (0.17-0.19 vs 0.07 ms at batch 1 and 8).
CHUNK_TOKENS = 128
MIN_CHUNKED_LENGTH = 1024
# Captured launches (a CUDA graph: `--compile cuda-graphs` / reduce-overhead) cost no host time per launch, so the
# three passes pay at short sequences too. Kernel time of graph-replayed launches, bf16 halves
# (results/history/chunk-captured-h200-2026-12-02.json, script results/history/scripts/chunkb1.py), one pass vs
# chunks of 16 / 32 / 64 steps: Vim-Ti E = 384, 197 tokens, batch 1 25.2 vs 12.7 / 17.7 / 28.9 us, batch 4 30.8
# vs 24.1 / 25.6 / 31.0, batch 8 36.2 vs 36.6 / 37.1 / 43.6, batch 16 46.4 vs 62.8 / 58.3 / 64.2; E = 768 batch 1
# 26.6 vs 15.9 / 18.3; 577 tokens (384 px) batch 1 69.2 vs 19.9 (32) / 29.7 (64). Whole Vim-Ti forward at 224 px
# as a CUDA graph, chunks of 16: batch 1 1.23 -> 0.86 ms, batch 2 1.36 -> 1.00, batch 8 1.72 -> 1.62; Vim-S
# batch 1 1.44 -> 1.06, Vim-B 1.70 -> 1.44. So under capture, below this many one-pass programs per SM and below
# MIN_CHUNKED_LENGTH, the scan runs chunked in chunks of CAPTURED_CHUNK_TOKENS (the first (max length, chunk)
# row that fits the sequence).
CAPTURED_UNDERFILLED_PROGRAMS_PER_SM = 2
CAPTURED_CHUNK_TOKENS = ((256, 16), (MIN_CHUNKED_LENGTH, 32))
# Where the one-pass launch is the token-block kernel (`fwd.TOKEN_BLOCK`, session s: the small-grid scan in blocks of
# tokens, one launch), captured sequences of at most this many tokens run it instead of chunks: at 197 tokens it
# beat the chunks of 16 at every small grid (Vim-Ti batch 1 13.9 -> 10.1 us, batch 8 31.7 -> 19.1), at 577 tokens
# the chunks of 32 beat it (22.0 vs 24.5; H200, results/history/tokenblocks-h200-2026-12-05s.json). 0: chunks
# wherever the captured rule says.
TOKEN_BLOCKS_MAX_CAPTURED_LENGTH = 256
# Pass 3's main loop (`fwd._walk`, the one-pass kernel's: per-direction copies, constexpr token strides) two trips
# per iteration, and its register cap (ptxas's maxnreg; None: its own choice). Static (sm_90, triton 3.6, gated
# bf16 halves at Vim-Ti 1248 px batch 8): uncapped it takes 168 registers and 541 instructions per two trips with
# no copies or spill; capped at 200 (the cap the old addressing needed against a spill of three pointers) ptxas
# adds ~86 MOVs per two trips. With checkpoints stored inside the loop (T a multiple of K other than K) the old
# form stays: one trip per iteration capped at 200. Pass 1 (`_states_walk`) the same way, two trips per iteration.
# ENTRY_CHECKPOINTS: with T == K the checkpoints are the chunks' entry states (`ChunkedScanConfig`), so the
# training forward's pass 3 is the inference one. Measured on the H200 (2026-12-04, session k, bf16 Vim-Ti 1248 px
# batch 8, the three passes as CUDA-graph replays, us; results/history/chunkaddr-h200-2026-12-04k.json): training
# forward 659 -> 506 (in-loop checkpoints with the new addressing: 685; pass 1 one trip per iteration: 536),
# inference 657 -> 506, fp32 training 690 -> 548, Vim-S 1,279 -> 959; whole captured training steps 90.6 -> 93.0
# img/s (kernels/NOTES.md, "The chunk-parallel passes' addressing").
OUTPUTS_MAXNREG: int | None = None
OUTPUTS_UNROLL_TRIPS = True
SAVE_OUTPUTS_UNROLL_TRIPS = False
SAVE_OUTPUTS_MAXNREG: int | None = 200
STATES_UNROLL_TRIPS = True
ENTRY_CHECKPOINTS = True
# Shorter forced chunks spend more on the per-chunk state stores, loads and combine steps than they gain.
MIN_CHUNK_TOKENS = 16
CHANNELS_PER_PROGRAM = 32  # one warp, one channel per lane (as the one-pass kernel at batch >= 8)
# Passes 1 and 3's L1 prefetch distance in scan steps (their L1_AHEAD, as the one-pass kernel's
# fwd.DEFAULT_L1_AHEAD; 0: off), for chunks of at least L1_MIN_CHUNK_TOKENS. Measured on the H200 (2026-12-03,
# session h, bf16, Vim-Ti, kernel ms, two alternated passes, outputs bitwise equal; results/history/
# chunkpf-h200-2026-12-03h.json), distance 0 / 2 / 4 / 8: the training forward (checkpoints every 64) at 1248 px
# batch 8 1.071 / 0.881 / 0.944 / 0.996; the inference halves there 0.907 / 0.821 / 0.860 / 0.873; 224 px batch 8
# in 32-token chunks (the captured path) 0.156 / 0.185 / 0.156 / 0.151. Captured Vim-Ti training steps at 1248 px
# batch 8, A B B A: 83.7 -> 86.7 img/s.
DEFAULT_L1_AHEAD = 2
L1_MIN_CHUNK_TOKENS = 64
COMBINE_BLOCK = 256  # state elements per combine program
COMBINE_WARPS = 2


@dataclass(frozen=True)
class ChunkedScanConfig:
    """The three launches of the chunked scan: chunk length T (scan steps, even), chunk count, and each pass's
    LaunchConfig (pass 1 and the combine are skipped when there is a single chunk).
    entries_are_checkpoints: the training forward saves a checkpoint every T steps (T == K, several chunks), so
    the checkpoints are exactly the chunks' entry states: pass 1 and the combine write them into the checkpoint
    buffer (slots 1..), the combine zeroes slot 0, and pass 3 runs as at inference (no stores in its loop)."""
    chunk: int
    n_chunks: int
    states: LaunchConfig
    combine: LaunchConfig
    outputs: LaunchConfig
    entries_are_checkpoints: bool = False


def chunked_scan_launch_config(batch: int, channels: int, length: int, n_dir: int, n_state: int,
                               interpreted: bool, sm_count: int, split: int | None = None,
                               save_every: int = 0, captured: bool = False,
                               token_blocks: bool = False) -> ChunkedScanConfig | None:
    """Whether the forward scan runs chunk-parallel, and how: the one place that decides (the launchers and
    `vimbench kernels static` call it). None: run the one-pass `_scan_kernel`.

    split: None chooses: chunked when the one-pass grid (32 channels per program) has fewer than
    UNDERFILLED_PROGRAMS_PER_SM programs per SM and the sequence has at least MIN_CHUNKED_LENGTH tokens, in chunks
    of CHUNK_TOKENS (rounded up to a multiple of the checkpoint interval `save_every` when saving); the
    interpreter keeps the one-pass kernel unless forced. 0 forces the one-pass kernel; an even T > 0 forces
    chunks of T scan steps (T >= L gives one chunk: pass 3 alone, which is the one-pass recurrence).
    captured: the launches are being captured into a CUDA graph (no host cost per launch): shorter sequences
    at smaller grids run chunked too (CAPTURED_UNDERFILLED_PROGRAMS_PER_SM, CAPTURED_CHUNK_TOKENS), except where
    the one-pass launch is the token-block kernel (token_blocks) and the sequence has at most
    TOKEN_BLOCKS_MAX_CAPTURED_LENGTH tokens."""
    if split is not None and (split < 0 or split % 2):
        raise ValueError(f"split must be None (automatic), 0 (one pass) or an even number of tokens; got {split}")
    if split == 0 or length == 0:
        return None
    block_c = interpreted_block_c(channels) if interpreted else CHANNELS_PER_PROGRAM
    channel_blocks = cdiv(channels, block_c)
    if split is None:
        programs = cdiv(channels, CHANNELS_PER_PROGRAM) * n_dir * batch
        if interpreted or programs >= UNDERFILLED_PROGRAMS_PER_SM * sm_count:
            return None
        if length >= MIN_CHUNKED_LENGTH:
            tokens = CHUNK_TOKENS
        elif captured and programs < CAPTURED_UNDERFILLED_PROGRAMS_PER_SM * sm_count and \
                not (token_blocks and length <= TOKEN_BLOCKS_MAX_CAPTURED_LENGTH):
            tokens = next(chunk for longest, chunk in CAPTURED_CHUNK_TOKENS if length <= longest)
        else:
            return None
        unit = save_every if save_every else 2
        chunk = cdiv(tokens, unit) * unit
        if chunk >= length:
            return None  # one chunk: the one-pass kernel does the same work in one launch
    else:
        chunk = split
    n_chunks = cdiv(length, chunk)
    tiles = dict(BLOCK_C=block_c, MASK_C=channels % block_c != 0, USE_ASM=asm_level(interpreted), PREFETCH=True,
                 L1_AHEAD=DEFAULT_L1_AHEAD if not interpreted and chunk >= L1_MIN_CHUNK_TOKENS else 0)
    combine_block = 32 if interpreted else COMBINE_BLOCK
    entries_are_checkpoints = ENTRY_CHECKPOINTS and save_every > 0 and chunk == save_every and n_chunks > 1
    if save_every and not entries_are_checkpoints:
        outputs_unroll, outputs_maxnreg = SAVE_OUTPUTS_UNROLL_TRIPS, SAVE_OUTPUTS_MAXNREG
    else:
        outputs_unroll, outputs_maxnreg = OUTPUTS_UNROLL_TRIPS, OUTPUTS_MAXNREG
    return ChunkedScanConfig(
        chunk=chunk, n_chunks=n_chunks, entries_are_checkpoints=entries_are_checkpoints,
        states=LaunchConfig("_chunk_states_kernel", (channel_blocks, n_chunks - 1, n_dir * batch),
                            dict(tiles, UNROLL_TRIPS=STATES_UNROLL_TRIPS), 1),
        combine=LaunchConfig("_chunk_combine_kernel", (cdiv(n_state * channels, combine_block),
                                                       n_dir * batch),
                             dict(BLOCK=combine_block, ZERO_SLOT_BEFORE=entries_are_checkpoints), COMBINE_WARPS),
        outputs=LaunchConfig("_chunk_outputs_kernel", (channel_blocks, n_chunks, n_dir * batch),
                             dict(tiles, UNROLL_TRIPS=outputs_unroll), 1,
                             maxnreg=None if interpreted else outputs_maxnreg),
    )


@triton.jit
def _program_lanes(E, batch, dir_first, BLOCK_C: tl.constexpr):
    """This program's channel lanes and (direction, batch) from the grid (channel blocks, chunks, dirs x batch)."""
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < E
    pid_db = tl.program_id(2)
    direction = (pid_db // batch).to(tl.int64)
    backward = (pid_db // batch + dir_first) == 1
    pid_b = (pid_db % batch).to(tl.int64)
    return offs_c.to(tl.int64), mask_c, direction, backward, pid_b


@triton.jit
def _load_state_token(step, u_base, dt_base, B_base, L, backward, mask_c, stride_u_l, stride_dt_l, stride_B_l,
                      MASK_T: tl.constexpr, MASK_C: tl.constexpr):
    """What the state update needs of token `step` (scan order): u, delta (C,), B (N,), fp32; zeros past L."""
    t, valid, mask = _token_position(step, L, backward, mask_c, MASK_T)
    u = _load_lanes(u_base + t * stride_u_l, mask, MASK_T or MASK_C)
    dt = _load_lanes(dt_base + t * stride_dt_l, mask, MASK_T or MASK_C)
    Bt = _load_lanes(B_base + t * stride_B_l, valid, MASK_T)
    return u, dt, Bt


@triton.jit
def _state_update(h, dsum, u, dt, Bt, mask, A2, bias_row, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  USE_ASM: tl.constexpr, MASK_T: tl.constexpr):
    """`fwd._token_step_at` without C, D, z or an output: the state update, and Delta added to the chunk's sum
    (mask: the token's lanes, used with MASK_T)."""
    if HAS_BIAS:
        dt = dt + bias_row
    if SOFTPLUS:
        dt = _softplus(dt, USE_ASM)
    if MASK_T:
        dt = tl.where(mask, dt, 0.0)
    h = tl.exp2(A2 * dt[None, :]) * h + Bt[:, None] * (dt * u)[None, :]
    return h, dsum + dt


@triton.jit
def _state_trip(h, dsum, step, t0, t1, args, L, backward, mask_c, A2, bias_row, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr, MASK_T: tl.constexpr, MASK_C: tl.constexpr):
    """Steps `step`, `step + 1` of the state update; the next two tokens' loads are issued first (as `fwd._trip`)."""
    n0 = _load_state_token(step + 2, *args, MASK_T, MASK_C)
    n1 = _load_state_token(step + 3, *args, MASK_T, MASK_C)
    _, _, mask0 = _token_position(step, L, backward, mask_c, MASK_T)
    _, _, mask1 = _token_position(step + 1, L, backward, mask_c, MASK_T)
    h, dsum = _state_update(h, dsum, *t0, mask0, A2, bias_row, HAS_BIAS, SOFTPLUS, USE_ASM, MASK_T)
    h, dsum = _state_update(h, dsum, *t1, mask1, A2, bias_row, HAS_BIAS, SOFTPLUS, USE_ASM, MASK_T)
    return h, dsum, n0, n1


@triton.jit
def _state_main_trip(h, dsum, k, t0, t1, t_first, u_base, dt_base, B_base, B_lanes, mask_c, A2, bias_row,
                     stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr, stride_B_l: tl.constexpr,
                     SIGN: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr,
                     MASK_C: tl.constexpr, L1_AHEAD: tl.constexpr):
    """Main trip k of `_states_walk` (steps 2k, 2k + 1, no token masks), addressed as `fwd._main_trip`: one
    multiply-add per pointer for the first token it loads (step 2k + 2); the second token and the L1 prefetches
    are immediate offsets from it."""
    t_next = t_first + SIGN * (2 * k + 2)
    u_p = u_base + t_next * stride_u_l
    dt_p = dt_base + t_next * stride_dt_l
    B_p = B_base + t_next * stride_B_l
    if L1_AHEAD > 0:
        row_p = B_lanes + t_next * stride_B_l
        lane_mask = mask_c if MASK_C else None
        for j in tl.static_range(2):
            fastmath.prefetch_l1(u_p + SIGN * (L1_AHEAD + j) * stride_u_l, USE_ASM, lane_mask)
            fastmath.prefetch_l1(dt_p + SIGN * (L1_AHEAD + j) * stride_dt_l, USE_ASM, lane_mask)
            fastmath.prefetch_l1(row_p + SIGN * (L1_AHEAD + j) * stride_B_l, USE_ASM)
    n0 = (_load_lanes(u_p, mask_c, MASK_C), _load_lanes(dt_p, mask_c, MASK_C), _load_lanes(B_p, mask_c, False))
    n1 = (_load_lanes(u_p + SIGN * stride_u_l, mask_c, MASK_C), _load_lanes(dt_p + SIGN * stride_dt_l, mask_c, MASK_C),
          _load_lanes(B_p + SIGN * stride_B_l, mask_c, False))
    h, dsum = _state_update(h, dsum, *t0, mask_c, A2, bias_row, HAS_BIAS, SOFTPLUS, USE_ASM, False)
    h, dsum = _state_update(h, dsum, *t1, mask_c, A2, bias_row, HAS_BIAS, SOFTPLUS, USE_ASM, False)
    return h, dsum, n0, n1


@triton.jit
def _states_walk(u_base, dt_base, B_base, B_lanes, A2, bias_row, mask_c, n, main_trips,
                 stride_u_l: tl.constexpr, stride_dt_l: tl.constexpr, stride_B_l: tl.constexpr,
                 backward: tl.constexpr, N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, MASK_C: tl.constexpr,
                 HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr, L1_AHEAD: tl.constexpr,
                 UNROLL_TRIPS: tl.constexpr):
    """Pass 1's walk over one chunk of n steps from a zero state, for one direction (`backward` constexpr; bases
    shifted to the chunk, as `fwd._walk` in pass 3): `main_trips` trips without token masks, the rest masked.
    Returns the end state and the chunk's sum of Delta."""
    h = tl.zeros((N_STATE, BLOCK_C), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_C,), dtype=tl.float32)
    args = (u_base, dt_base, B_base, n, backward, mask_c, stride_u_l, stride_dt_l, stride_B_l)
    t0 = _load_state_token(0, *args, True, MASK_C)
    t1 = _load_state_token(1, *args, True, MASK_C)
    SIGN: tl.constexpr = -1 if backward else 1
    t_first = tl.where(backward, n - 1, 0)
    PER_ITER: tl.constexpr = 2 if UNROLL_TRIPS else 1
    for kk in range(0, main_trips // PER_ITER):
        for half in tl.static_range(PER_ITER):
            h, dsum, t0, t1 = _state_main_trip(h, dsum, PER_ITER * kk + half, t0, t1, t_first, u_base, dt_base,
                                               B_base, B_lanes, mask_c, A2, bias_row, stride_u_l, stride_dt_l,
                                               stride_B_l, SIGN, HAS_BIAS, SOFTPLUS, USE_ASM, MASK_C, L1_AHEAD)
    if UNROLL_TRIPS:
        if main_trips % 2 == 1:
            h, dsum, t0, t1 = _state_main_trip(h, dsum, main_trips - 1, t0, t1, t_first, u_base, dt_base, B_base,
                                               B_lanes, mask_c, A2, bias_row, stride_u_l, stride_dt_l, stride_B_l,
                                               SIGN, HAS_BIAS, SOFTPLUS, USE_ASM, MASK_C, L1_AHEAD)
    for k in range(main_trips, tl.cdiv(n, 2)):
        h, dsum, t0, t1 = _state_trip(h, dsum, 2 * k, t0, t1, args, n, backward, mask_c, A2, bias_row, HAS_BIAS,
                                      SOFTPLUS, USE_ASM, True, MASK_C)
    return h, dsum


@triton.jit(do_not_specialize=["L", "T", "row_slots"])
def _chunk_states_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, hloc_ptr, dsum_ptr,
    E, L, T, batch, dir_first, row_slots,
    stride_u_dir, stride_u_b, stride_u_e, stride_u_l: tl.constexpr,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l: tl.constexpr,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_B_dir, stride_B_b, stride_B_n, stride_B_l: tl.constexpr,
    stride_bias_dir,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, MASK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr, USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, L1_AHEAD: tl.constexpr = 0,
    UNROLL_TRIPS: tl.constexpr = False,
):
    """Pass 1: chunk program_id(1) (never the last) of BLOCK_C channels of one (direction, batch), from a zero
    state. Stores its end state to hloc (dirs, batch, row_slots >= chunks - 1 slots, N, E) fp32, slot `chunk`,
    and its sum of Delta to dsum (dirs, batch, chunks - 1, E) fp32. PREFETCH is always on here (the launch config's
    tile dict). The walk is compiled once per direction with the token strides constexpr (`_states_walk`, as pass
    3's `fwd._walk`); its unmasked trips may load tokens past the chunk (inputs only: harmless) but never past L.
    L1_AHEAD > 0: they also ask L1 for the u, delta and B lines of the two steps L1_AHEAD past the ones their
    register prefetch loads. UNROLL_TRIPS: two trips per loop iteration."""
    c64, mask_c, direction, backward, pid_b = _program_lanes(E, batch, dir_first, BLOCK_C)
    chunk = tl.program_id(1)
    start = chunk * T
    n = tl.minimum(T, L - start)
    shift = tl.where(backward, L - start - n, start).to(tl.int64)  # the chunk's first token in memory
    states = tl.arange(0, N_STATE)
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e + shift * stride_u_l
    dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e + shift * stride_dt_l
    B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n + shift * stride_B_l
    # the B row's line, for L1_AHEAD
    B_lanes = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + shift * stride_B_l + c64 * 0
    A2 = decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE, BLOCK_C)
    _, bias_row = channel_rows(bias_ptr, bias_ptr, direction, 0, stride_bias_dir, c64, mask_c, False, HAS_BIAS,
                               BLOCK_C)  # no D here
    # Trip k loads steps 2k + 2, 2k + 3 and prefetches L1_AHEAD further: unmasked while all of them lie inside L.
    main_trips = tl.minimum(tl.maximum((L - start - 2 - L1_AHEAD) // 2, 0), (n + 1) // 2)
    if backward:
        h, dsum = _states_walk(u_base, dt_base, B_base, B_lanes, A2, bias_row, mask_c, n, main_trips, stride_u_l,
                               stride_dt_l, stride_B_l, True, N_STATE, BLOCK_C, MASK_C, HAS_BIAS, SOFTPLUS, USE_ASM,
                               L1_AHEAD, UNROLL_TRIPS)
    else:
        h, dsum = _states_walk(u_base, dt_base, B_base, B_lanes, A2, bias_row, mask_c, n, main_trips, stride_u_l,
                               stride_dt_l, stride_B_l, False, N_STATE, BLOCK_C, MASK_C, HAS_BIAS, SOFTPLUS, USE_ASM,
                               L1_AHEAD, UNROLL_TRIPS)
    slot = (direction * batch + pid_b) * row_slots + chunk
    store_rows(hloc_ptr + slot * (N_STATE * E) + c64, E, h, mask_c, N_STATE)
    dsum_slot = (direction * batch + pid_b) * (tl.cdiv(L, T) - 1) + chunk  # chunks - 1 per (direction, batch)
    tl.store(dsum_ptr + dsum_slot * E + c64, dsum, mask=mask_c)


@triton.jit
def _chunk_summary(hloc_base, dsum_base, c, n_links, NE, E, idx, e, mask):
    """Chunk c's local end state and Delta sum for this block's state elements; the identity (0, 0) past the
    last link."""
    m = mask & (c < n_links)
    return (tl.load(hloc_base + c * NE + idx, mask=m, other=0.0),
            tl.load(dsum_base + c * E + e, mask=m, other=0.0))


@triton.jit(do_not_specialize=["n_links", "row_slots"])
def _chunk_combine_kernel(A_ptr, hloc_ptr, dsum_ptr, E, n_links, batch, row_slots,
                          stride_A_dir, stride_A_e, stride_A_n, N_STATE: tl.constexpr, BLOCK: tl.constexpr,
                          ZERO_SLOT_BEFORE: tl.constexpr = False):
    """Combine: for BLOCK elements of one (direction, batch)'s (N, E) state slab, walk the n_links = chunks - 1
    chunk summaries in order, H(c + 1) = exp(A sum Delta(c)) * H(c) + h_local(c) from H(0) = 0, and overwrite
    h_local(c) with H(c + 1), the state entering chunk c + 1. Four chunks per loop trip, their loads issued
    before the previous four's arithmetic: the chain itself is one FMA per chunk, so loads would dominate."""
    NE = (N_STATE * E).to(tl.int64)  # chunk offsets c * NE can pass 2^31 for wide models and many chunks
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < NE
    n = idx // E
    e = idx % E
    pid_db = tl.program_id(1)
    direction = (pid_db // batch).to(tl.int64)
    row = pid_db.to(tl.int64)  # (direction, batch) row of hloc (row_slots slots) and dsum (n_links)
    A2 = tl.load(A_ptr + direction * stride_A_dir + e * stride_A_e + n * stride_A_n, mask=mask, other=0.0) * LOG2E
    hloc_base = hloc_ptr + row * row_slots * NE
    dsum_base = dsum_ptr + row * n_links * E
    if ZERO_SLOT_BEFORE:  # hloc is a view of the checkpoints from slot 1: slot 0 holds scan step 0's zero state
        tl.store(hloc_base - NE + idx, tl.zeros((BLOCK,), dtype=tl.float32), mask=mask)
    sargs = (hloc_base, dsum_base)
    h = tl.zeros((BLOCK,), dtype=tl.float32)
    l0, s0 = _chunk_summary(*sargs, 0, n_links, NE, E, idx, e, mask)
    l1, s1 = _chunk_summary(*sargs, 1, n_links, NE, E, idx, e, mask)
    l2, s2 = _chunk_summary(*sargs, 2, n_links, NE, E, idx, e, mask)
    l3, s3 = _chunk_summary(*sargs, 3, n_links, NE, E, idx, e, mask)
    for c in range(0, n_links, 4):
        m0, r0 = _chunk_summary(*sargs, c + 4, n_links, NE, E, idx, e, mask)
        m1, r1 = _chunk_summary(*sargs, c + 5, n_links, NE, E, idx, e, mask)
        m2, r2 = _chunk_summary(*sargs, c + 6, n_links, NE, E, idx, e, mask)
        m3, r3 = _chunk_summary(*sargs, c + 7, n_links, NE, E, idx, e, mask)
        h = tl.exp2(A2 * s0) * h + l0
        tl.store(hloc_base + c * NE + idx, h, mask=mask & (c < n_links))
        h = tl.exp2(A2 * s1) * h + l1
        tl.store(hloc_base + (c + 1) * NE + idx, h, mask=mask & (c + 1 < n_links))
        h = tl.exp2(A2 * s2) * h + l2
        tl.store(hloc_base + (c + 2) * NE + idx, h, mask=mask & (c + 2 < n_links))
        h = tl.exp2(A2 * s3) * h + l3
        tl.store(hloc_base + (c + 3) * NE + idx, h, mask=mask & (c + 3 < n_links))
        l0, s0, l1, s1, l2, s2, l3, s3 = m0, r0, m1, r1, m2, r2, m3, r3


@triton.jit(do_not_specialize=["L", "T", "row_slots"])
def _chunk_outputs_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, ckpt_ptr, entry_ptr,
    E, L, T, batch, dir_first, row_slots, out_scale,
    stride_u_dir, stride_u_b, stride_u_e, stride_u_l: tl.constexpr,
    stride_dt_dir, stride_dt_b, stride_dt_e, stride_dt_l: tl.constexpr,
    stride_A_dir, stride_A_e, stride_A_n,
    stride_B_dir, stride_B_b, stride_B_n, stride_B_l: tl.constexpr,
    stride_C_dir, stride_C_b, stride_C_n, stride_C_l: tl.constexpr,
    stride_D_dir, stride_bias_dir,
    stride_z_b, stride_z_e, stride_z_l: tl.constexpr,
    stride_out_dir, stride_out_b, stride_out_e, stride_out_l: tl.constexpr,
    N_STATE: tl.constexpr, BLOCK_C: tl.constexpr, MASK_C: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ATOMIC: tl.constexpr, USE_ASM: tl.constexpr, PREFETCH: tl.constexpr, SAVE_EVERY: tl.constexpr,
    L1_AHEAD: tl.constexpr = 0, UNROLL_TRIPS: tl.constexpr = False,
):
    """Pass 3: chunk program_id(1) of BLOCK_C channels of one (direction, batch), from its entry state (zero for
    chunk 0, else the combine's H(c) in entry (dirs, batch, row_slots slots, N, E), slot c - 1), with `_scan_kernel`'s
    walk (`fwd._walk`, compiled once per direction, token strides constexpr) over the chunk alone: writes the
    outputs and, with SAVE_EVERY = K, the checkpoints of the scan steps in this chunk that are multiples of K
    (ckpt (dirs, batch, cdiv(L, K), N, E)). L1_AHEAD: the main trips' L1 prefetch, as `_scan_kernel`'s;
    UNROLL_TRIPS: two main trips per loop iteration."""
    c64, mask_c, direction, backward, pid_b = _program_lanes(E, batch, dir_first, BLOCK_C)
    chunk = tl.program_id(1)
    start = chunk * T
    # The walk sees this chunk alone: n steps (its L), step s at token s (forward) or n - 1 - s (backward) from
    # the chunk's first token in memory, `shift`: token start + s, or L - 1 - (start + s), as in the whole
    # sequence. Its masked trips read nothing past the chunk; its main trips' loads and prefetches stay inside L
    # and may pass the chunk's end only in the last trip's register prefetch, whose values are never used (in
    # place, those tokens may already hold another chunk's outputs).
    n = tl.minimum(T, L - start)
    shift = tl.where(backward, L - start - n, start).to(tl.int64)
    states = tl.arange(0, N_STATE)
    u_base = u_ptr + direction * stride_u_dir + pid_b * stride_u_b + c64 * stride_u_e + shift * stride_u_l
    dt_base = delta_ptr + direction * stride_dt_dir + pid_b * stride_dt_b + c64 * stride_dt_e + shift * stride_dt_l
    B_base = B_ptr + direction * stride_B_dir + pid_b * stride_B_b + states * stride_B_n + shift * stride_B_l
    C_base = C_ptr + direction * stride_C_dir + pid_b * stride_C_b + states * stride_C_n + shift * stride_C_l
    z_base = z_ptr + pid_b * stride_z_b + c64 * stride_z_e + shift * stride_z_l
    out_base = (out_ptr + direction * stride_out_dir + pid_b * stride_out_b + c64 * stride_out_e
                + shift * stride_out_l)
    A2 = decay_rates(A_ptr, direction, stride_A_dir, stride_A_e, stride_A_n, c64, mask_c, N_STATE, BLOCK_C)
    D_row, bias_row = channel_rows(D_ptr, bias_ptr, direction, stride_D_dir, stride_bias_dir, c64, mask_c, HAS_D,
                                   HAS_BIAS, BLOCK_C)

    ckpt_lanes = ckpt_ptr + c64  # (C,) pointers to this program's channels in checkpoint slot 0, row 0
    if SAVE_EVERY > 0:
        ckpt_lanes += (direction * batch + pid_b) * tl.cdiv(L, SAVE_EVERY) * N_STATE * E
    zero_c = c64 * 0  # (C,) pointers to the rows every lane reads whole (B, C), for L1_AHEAD: one line per row
    row_lanes = (B_ptr + direction * stride_B_dir + pid_b * stride_B_b + shift * stride_B_l + zero_c,
                 C_ptr + direction * stride_C_dir + pid_b * stride_C_b + shift * stride_C_l + zero_c, dt_base)
    # Main trip k loads steps 2k + 2, 2k + 3 and prefetches L1_AHEAD further: all inside L for
    # k < (L - start - 2 - L1_AHEAD) // 2; and it runs steps 2k, 2k + 1 of the chunk unmasked: k < n // 2.
    main_trips = tl.minimum(tl.maximum((L - start - 2 - L1_AHEAD) // 2, 0), n // 2) if PREFETCH else 0
    # Chunk 0 starts from zero: its lanes read nothing (the slot index is clamped only to stay in bounds).
    slot = (direction * batch + pid_b) * row_slots + tl.maximum(chunk - 1, 0)
    h = load_rows(entry_ptr + slot * (N_STATE * E) + c64, E, mask_c & (chunk > 0), N_STATE, BLOCK_C)
    walk_args = (u_base, dt_base, z_base, B_base, C_base, out_base, ckpt_lanes, row_lanes, A2, D_row, bias_row, 0.0,
                 mask_c, E, n, main_trips, start, out_scale, h)
    if backward:
        _walk(*walk_args, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l, True, N_STATE,
              BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, PREFETCH, SAVE_EVERY, MASK_C, 0, L1_AHEAD,
              UNROLL_TRIPS)
    else:
        _walk(*walk_args, stride_u_l, stride_dt_l, stride_z_l, stride_B_l, stride_C_l, stride_out_l, False, N_STATE,
              BLOCK_C, HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, ATOMIC, USE_ASM, PREFETCH, SAVE_EVERY, MASK_C, 0, L1_AHEAD,
              UNROLL_TRIPS)


def launch_chunked(cfg: ChunkedScanConfig, scan_args: dict, n_dir: int, batch: int) -> None:
    """The three passes. scan_args: `_scan_kernel`'s keyword arguments as `fwd._launch` builds them (pointers,
    sizes, strides, flags; num_warps and the tile constexprs excluded); each pass takes the ones it names."""
    u, A = scan_args["u_ptr"], scan_args["A_ptr"]
    channels, length, n_state = scan_args["E"], scan_args["L"], scan_args["N_STATE"]
    links = cfg.n_chunks - 1
    common = dict(T=cfg.chunk, batch=batch)
    # With entries as checkpoints pass 3 stores none itself; otherwise it takes scan_args as they are (no copy).
    outputs_args = dict(scan_args, SAVE_EVERY=0) if cfg.entries_are_checkpoints else scan_args
    if links > 0:
        if cfg.entries_are_checkpoints:  # slot c + 1 of the checkpoints: the state entering chunk c + 1
            ckpt = scan_args["ckpt_ptr"]
            want = (n_dir, batch, cfg.n_chunks, n_state, channels)
            if not ckpt.is_contiguous() or tuple(ckpt.shape) != want:
                raise ValueError(f"entry checkpoints need a contiguous {want} fp32 buffer; got {tuple(ckpt.shape)} "
                                 f"with strides {ckpt.stride()}")
            hloc, row_slots = ckpt[:, :, 1:], cfg.n_chunks
        else:
            hloc = torch.empty(n_dir, batch, links, n_state, channels, dtype=torch.float32, device=u.device)
            row_slots = links
        dsum = torch.empty(n_dir, batch, links, channels, dtype=torch.float32, device=u.device)
        states_args = {k: v for k, v in scan_args.items() if k in _chunk_states_kernel.arg_names}
        launch(_chunk_states_kernel, cfg.states.grid, **states_args, **common, row_slots=row_slots, hloc_ptr=hloc,
               dsum_ptr=dsum, **cfg.states.constexprs, **cfg.states.launch_options())
        launch(_chunk_combine_kernel, cfg.combine.grid,
            A_ptr=A, hloc_ptr=hloc, dsum_ptr=dsum, E=channels, n_links=links, batch=batch, row_slots=row_slots,
            stride_A_dir=scan_args["stride_A_dir"], stride_A_e=scan_args["stride_A_e"],
            stride_A_n=scan_args["stride_A_n"], N_STATE=n_state, **cfg.combine.constexprs,
            **cfg.combine.launch_options())
    else:
        hloc, row_slots = A, 0  # never read: chunk 0 starts from zero
    launch(_chunk_outputs_kernel, cfg.outputs.grid, **outputs_args, **common, row_slots=row_slots, entry_ptr=hloc,
           **cfg.outputs.constexprs, **cfg.outputs.launch_options())
