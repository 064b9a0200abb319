"""Vision Mamba (Vim, bimamba v2, middle class token), exactly as ../shared/spec/vim_model.md describes it.

Parameter and buffer names equal the official checkpoints' state-dict keys, so
`model.load_state_dict(torch.load(path)["model"])` loads a released checkpoint. The heavy per-token work goes
through an op table (`vimbench.models.ops`); this module holds only the architecture and the GEMMs.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from vimbench.layout import XDblLayout
from vimbench.geometry import D_CONV, D_STATE, PATCH, d_inner, dt_rank
from vimbench.models.ops import VimOps, get_ops

if TYPE_CHECKING:
    from kernels.launch import LaunchSequence

NORM_EPS = 1e-5
# Inference's delta GEMM over x_dbl's dt columns AND its zero pad (K = 16 for Vim-Ti) against dt_proj with zero
# rows for the pad (BiMambaMixer._padded_dt_proj); False: the dt columns alone (K = 12), kept for A/B runs.
PAD_DT_GEMM = True
# Inference on backend triton with fuse_dt_proj None (memory modes default and split): in eager calls (not traced,
# not captured) of at most this many token rows (batch x L), where the launches are host-bound, the scan applies
# dt_proj (no dt cast, no delta GEMM: two torch ops fewer per layer). Measured on the H200 (Vim-Ti 224 px, bf16,
# paired rounds against the delta GEMM; results/history/hostmodes-h200-2026-12-03.json and
# hostmodes-b{1,64}-h200-2026-12-03.json): eager host time per forward 0.87x / 0.95x at batch 1 (two runs), 0.86x
# at batch 64; GPU time (CUDA-graph replay) 952 vs 875 us at batch 1, 3,504 vs 3,690 at batch 64. So captured and
# traced forwards keep the delta GEMM (its GPU time won at batch 1 against the token walk), except where the scan
# runs in token blocks (FUSE_DT_IN_TOKEN_BLOCKS). The limit is the largest size measured a win: 224 px batch 128
# (25,216 rows; H100, results/history/hostmodes-b128-h100-2026-12-07ah.json: 20 back-to-back eager forwards 0.978x,
# faster in all 6 paired rounds; graph replay 6,777 vs 6,789 us). Checked between the measured wins at 384 px batch
# 32 (18,464 rows; results/history/hostmodes-r384-b32-h100-2026-12-07aj.json: 0.914x, graph +1.4%). At 1248 px batch
# 64 (389k rows) the fused scan is slower (3.49 vs 2.92 ms); 16,384 before session ah.
FUSE_DT_MAX_ROWS = 25216
# Eager fp32 inference (fuse_dt_proj None) hands the scan dt_proj at every size where the scan runs in one pass,
# not only up to FUSE_DT_MAX_ROWS: the fp32 delta GEMM and its (2, B, L, E) fp32 delta cost more than the scan's own
# low-rank product there. Measured (session ao, H100, Vim-Ti 1248 px batch 64, whole eager forwards A B B A in one
# process, results/history/fp32parts-h100-2026-12-07ao/): 229.8 / 231.1 ms with the delta GEMM, 220.5 / 220.7 fused
# (+4.3% img/s), peak allocated 5.78-5.92 -> 4.67 GiB, logits within 1.2e-6 of the fp32 torch backend (1.3e-6
# before). False: fp32 follows FUSE_DT_MAX_ROWS as 16-bit activations do.
FUSE_DT_FP32 = True
# Captured and traced inference (fuse_dt_proj None) hands the scan dt_proj too where the fused scan runs the
# token-block kernel in one pass (ops.scan_blocks_take_dt_proj: batch 1-8 at 224 px), whose blocks form delta
# from the low-rank rows at little cost: no dt cast and no delta GEMM, two kernels fewer per layer. False: the delta
# GEMM there, as before session t.
FUSE_DT_IN_TOKEN_BLOCKS = True
# True: a torch.compile'd training forward builds every mixer's weights once for the model (the layers' parameters
# stacked, as the eager step's StackedMixerWeights does); False: each mixer builds its own in the graph
# (`VisionMamba.training_weights`). Off: measured slower on the GPU (session y, H100, Vim-Ti 1248/8 bf16, default
# mode, results/history/trainprof-stacked-ab-h100-2026-12-06y.json): forward + backward p50 44.0 + 95.4 ms stacked
# against 31.2 + 88.4 per mixer, the same kernels' GPU time, 2,338 launches per step against 2,002 (the stacking's
# copies), although the CPU simulation had stacked 3.4% ahead.
TRACED_STACKED_WEIGHTS = False
# Inference on a backend with ops.conv_xproj (triton): the conv + SiLU and the x_proj GEMM in one launch, which
# multiplies each block of u by x_proj while it is in registers (kernels/conv1d/xproj.py): u is not read back for
# x_proj (0.6 GB per layer at Vim-Ti 1248 px, batch 64, bf16) and there is one launch per layer fewer. Off: measured
# 3.7-7x slower than the conv op + the bmm (session x, H100, results/history/convxproj-h100-2026-12-06x.json; Vim-Ti
# bf16, us per call: 1248/64 2,299 vs 610, 224/64 169 vs 24, 224/8 37 vs 7.3, 224/1 37 vs 5.5; kernels/NOTES.md).
# (The front path below used it until session aa: FRONT_CONV_XPROJ.)
FUSE_CONV_XPROJ = False
# Eager lean-gated inference: x = h W_x^T and the conv run in as many slices of the batch as it takes to keep each
# under X_CONV_SLICE_ROWS token rows, every slice's conv writing its images' part of one u, so that only a slice's x
# (B, L, E) is alive beside u. There the conv is one of the two points that held the forward's peak (the other, the
# gate, now writes its sum over u: `_mix_tokens`); in split and lean the peak lies elsewhere, so they keep one call.
# The scan keeps the whole batch's programs, unlike `batch_slice`. Measured on an H100 (session ak,
# results/history/leanpeak-h100-2026-12-07ak/, Vim-Ti 1248 px, batch 64, bf16 autocast, eager lean-gated, A B B A in
# one process, logits bitwise equal): peak allocated 2.448 -> 2.309 GiB with slices of 2^16, 2^17 or 2^18 rows alike
# (out_proj's point, beside the gated sum over u, then holds the peak), p50 +0.9%, +0.9%, +0.4%; the gate over u
# without slices 2.448 at the same speed. So two slices there (the meta-device estimate: 2.415 -> 2.276 GiB).
X_CONV_SLICE_ROWS = 1 << 18
# Inference in bf16/fp16 on a backend with ops.dt_softplus (triton), where the scan does not apply dt_proj itself:
# delta = softplus(dt @ dt_proj + dt_bias) in one launch (kernels/dt_softplus) instead of the cast of the dt columns
# and the delta GEMM, stored in fp16, so that the scan takes delta as it is (no bias, no softplus per token and
# channel: one MUFU ex2 and a polynomial fewer on each step's critical path). Measured on an H100 (session al):
# the scan alone at 1248 px batch 64 on a softplus'd fp16 delta -6.3% (Vim-Ti) / -5.4% (Vim-B)
# (results/history/softplusoff-h100-2026-12-07al/). With the op's degree-4 log1p for its fp16 output (session am;
# the op 0.321 ms against the cast + GEMM's 0.296 at Vim-Ti), whole eager forwards at 1248 px batch 64, A B C C B A
# (GEMM / the degree-7 op / degree 4): -3.0% (Vim-Ti, 666.7 -> 687.0 img/s), -0.9% (Vim-S), -0.8% (Vim-B), 23-70
# MiB lower peaks; the Vim-Ti logits' largest distance from the fp32 model 0.0105 -> 0.0117
# (results/history/dtsp4ab-h100-2026-12-07am/; session al's degree-7 A/B: results/history/dtsoftplusab-h100-2026-12-07al/).
# fp32 stays on the GEMM (DT_SOFTPLUS_FP32). False: the official order (the GEMM's pre-activations rounded to the
# activation dtype, bias and softplus in the scan).
DT_SOFTPLUS_BEFORE_SCAN = True
# The same in fp32 (the op's fp32 tile: ieee tl.dot on the FMA pipe, fp32 delta). Off: session al measured the fp32
# forward +0.7% with the op at the bf16 tile (64 x 128, 168 registers under triton 3.6, 254 under 3.8); since session
# am fp32 runs its own tile (`kernels.dt_softplus.fwd.FP32_TILE`, 92 registers under 3.6), measured in session ao
# (H100, Vim-Ti 1248/64, A B B A, results/history/dtsp32-h100-2026-12-07ao/): the op 0.565 ms against the GEMM's
# 0.689, but the whole forward 230.7 -> 234.1 ms (+1.4%), so it stays off. Where fp32 fuses dt_proj into the scan
# (FUSE_DT_FP32, eager) neither runs.
DT_SOFTPLUS_FP32 = False
# Small eager inference on a backend with ops.norm_in_proj (triton): a block's entry, from the previous mixer's
# out_proj through the residual add and RMSNorm to in_proj, is one launch (kernels/norm_in_proj), then the conv op,
# x_proj (ops.x_proj_rows; or both as ops.conv_xproj, FRONT_CONV_XPROJ) and the scan: four launches per layer
# instead of six, all Triton, so the layers' launches can be recorded and replayed as one sequence (FRONT_PLANS).
# Where the forward is host-bound: eager calls (not traced, not captured) of at most FRONT_MAX_ROWS token rows
# (batch x L) with every mixer in the default inference layout (`VisionMamba.uses_front`). Measured (session z, H100,
# Vim-Ti 224 px bf16 autocast, eager p50 ms of the two passes A B C D D C B A, one process with DeiT-Ti;
# results/history/frontab{,-nocache,-large}-h100-2026-12-06z.json; the box's host speed moved ~2x between calls):
# batch 1 per-op 8.92 / 9.80 -> front 7.64 / 7.77 (DeiT-Ti 8.35 / 7.95), batch 8 9.81 / 8.51 -> 7.83 / 6.91
# (8.17 / 7.68); on a faster host batch 1 8.40 / 5.99 -> 5.07 / 4.42 (5.07 / 5.09), batch 16 8.95 / 6.87 ->
# 4.78 / 5.00 (5.12 / 6.34). At batch 32 the front path is GPU-bound (6.5 ms of kernels per call: conv_xproj and the
# out_proj each in_proj tile repeats grow with the rows) and at batch 64 slower (10.8 ms against 6.7). 4096 rows
# (batch 20 at 224 px) lies between the last measured gain (3,152 rows) and the first loss (6,304).
FRONT_MAX_ROWS = 4096
# ... and at most this embedding width: Vim-Ti. Wider models keep the per-op path. Measured on an H100 (session aa,
# 224 px, bf16, eager p50 against the per-op path, results/history/planab-vim_{s,b}-h100-2026-12-06aa.json): Vim-S
# 4.25 vs 5.09 ms at batch 1 but 6.41 vs 5.80 at batch 2 and 12.63 vs 6.06 at batch 8; Vim-B 46.4 vs 6.4 ms at
# batch 1. norm_in_proj recomputes out_proj's rows for each in_proj tile, and at D = 384 and 768 its tiles spill:
# 1.7 ms of kernels per Vim-S forward at batch 1, 40.5 per Vim-B forward, against 0.33 for Vim-Ti.
FRONT_MAX_DIM = 192
# FRONT_CONV_XPROJ: the conv with x_proj as one launch (ops.conv_xproj: three launches per layer) or as the conv op
# and ops.x_proj_rows (four). Session z (launchers run every forward, the cuBLAS bmm for x_proj then) measured
# False 5-10% slower; session aa, with the layers' launches replayed (FrontPlan) and x_proj as our own kernel
# (x_proj_rows), measured False faster: conv_xproj's 37 us per layer against 2.7 + ~3 (H100, Vim-Ti 224 px bf16,
# eager p50 ms of two passes, results/history/planab-2conv-h100-2026-12-06aa.json): batch 1 1.35 / 1.60 against
# 2.58 / 2.45 (GPU time per forward 787 against 1,493 us), batch 8 2.23 / 2.70 against 2.93 / 3.30, batch 16
# 3.84 / 3.56 against 5.04 / 4.69.
FRONT_CONV_XPROJ = False
# Activation dtypes the front path runs for: 16-bit only (norm_in_proj's fp32 tl.dot runs on the FMA pipe and
# spills: static, sm_90, 1.1 KB at Vim-Ti's shapes; fp32 inference keeps the per-op path).
FRONT_DTYPES = (torch.bfloat16, torch.float16)
# The front path's launches recorded once per input layout and replayed as one sequence (`FrontPlan`,
# kernels.launch.LaunchSequence) where replays are on; False: its launchers run on every forward (A/B runs).
FRONT_PLANS = True

# How a mixer trains (under autograd); inference is the same for all three. kernels/README.md ("What the forward
# saves") has the bytes each keeps per layer.
#   fused           in_proj -> conv -> x_proj -> dt_proj -> scan -> out_proj as one differentiable op
#                   (ops.bimamba_inner) that saves x_dbl, the scan's checkpoints and the scan output y (the two
#                   directions' sum) and recomputes h (from the norm's r), xz, u and delta in the backward; in
#                   bf16/fp16 out_proj adds the two gated halves inside its GEMM (sums_halves_in_gemm), in fp32 the
#                   scan adds them
#   fused-combined  the same, the scan always adds the halves (fp32 atomics); the same bytes saved
#   per-op          each op under its own autograd (what every op saves, the graph keeps); also what a backend
#                   without bimamba_inner does
TRAIN_BOUNDARIES = ("fused", "fused-combined", "per-op")


@dataclass
class FrontBuffers:
    """The front path's per-layer outputs (`VisionMamba._front_layers`), which every layer of a forward writes
    over the previous layer's: in_proj's output xz, the fp32 residual it wrote and the spare one it reads, the
    conv's u (the scan writes its halves over it) and x_dbl."""
    xz: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    spare: torch.Tensor | None = None
    u: torch.Tensor | None = None
    x_dbl: torch.Tensor | None = None

    def tensors(self) -> tuple:
        return self.xz, self.residual, self.spare, self.u, self.x_dbl


@dataclass
class FrontPlan:
    """A model's front path recorded for one key (`_front_key`): its layers' launches as one LaunchSequence (None:
    they could not be recorded, so forwards with this key run the layers the usual way), the MixerWeights
    objects and the norm weights' addresses they read, and where the last layer leaves its outputs (y, out_w,
    the residual: in the sequence's buffers)."""
    key: tuple
    weights: list
    norm_ptrs: list
    sequence: LaunchSequence | None
    y: torch.Tensor | None
    out_w: torch.Tensor | None
    residual: torch.Tensor | None

    def fits(self, key: tuple | None, weights: list, norms: list) -> bool:
        """Whether a forward with this key, these mixers' weights (by identity: a mixer rebuilds them when a
        parameter changes) and these norm weights (by address: in-place updates are read anyway) may replay."""
        return (key == self.key and all(a is b for a, b in zip(weights, self.weights))
                and all(n.data_ptr() == p for n, p in zip(norms, self.norm_ptrs)))


# Each model's FrontPlan, beside the model rather than in it: a deep copy or a pickle of the model must not carry
# launches that address the original's buffers.
_FRONT_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _front_key(hidden: torch.Tensor, act_dtype: torch.dtype) -> tuple:
    """What a recorded front path depends on besides the weights: the layers' input layout (shape, strides, dtype,
    device, address alignment), the activation dtype, the stream and the thread (a plan's buffers are reused in
    stream order, never by two forwards at once)."""
    stream = torch._C._cuda_getCurrentRawStream(hidden.device.index) if hidden.is_cuda else 0
    return (hidden.shape, hidden.stride(), hidden.dtype, hidden.device, hidden.data_ptr() & 15, act_dtype, stream,
            threading.get_ident())


@dataclass(frozen=True)
class MixerWeights:
    """A mixer's weights as its ops take them: both directions stacked, cast to the activation dtype where a
    GEMM uses them. Derived from the parameters (which keep the official names and shapes)."""
    in_proj: torch.Tensor   # (2E, D) activation dtype (under autocast, a cast F.linear would redo every forward)
    conv_w: torch.Tensor    # (2, E, K), parameter dtype
    conv_b: torch.Tensor    # (2, E)
    x_proj_t: torch.Tensor  # (2, E, width) activation dtype, columns in XDblLayout order
    dt_proj_t: torch.Tensor  # (2, R, E) activation dtype
    A: torch.Tensor         # (2, E, N) fp32, A = -exp(A_log)
    D: torch.Tensor         # (2, E) fp32
    dt_bias: torch.Tensor   # (2, E) fp32
    out_proj: torch.Tensor  # activation dtype: (D, 2E), the weight twice along K, when the GEMM adds the two
    #                         gated halves (sums_halves_in_gemm); else (D, E)


def sums_halves_in_gemm(dtype: torch.dtype) -> bool:
    """How the mixer adds the two directions. bf16/fp16: the scan writes the two gated halves over u (laid out
    (B, L, 2, E) by the conv, and read by then), and out_proj, with its weight repeated along K, adds them inside
    one GEMM: cheaper than combining them in the scan (fp32 zero fill, atomics and a cast: ~0.85 ms per layer at
    Vim-Ti 1248 px, batch 64), and no new buffer. fp32: GEMMs run without tensor cores (TF32 off), so doubling K
    costs more than the atomics: the scan combines. Numbers: kernels/NOTES.md."""
    return dtype in (torch.bfloat16, torch.float16)


def delta_dtype(activation: torch.dtype) -> torch.dtype:
    """The dtype of a delta made already softplus'd (ops.dt_softplus), the op's own rule
    (`kernels.dt_softplus.fwd.delta_dtype`: fp16 for 16-bit activations, fp32 otherwise). Called only where the
    triton backend's op runs, so the kernels package is loaded by then."""
    from kernels.dt_softplus.fwd import delta_dtype as rule

    return rule(activation)


def x_dbl_in_fp32(u: torch.Tensor) -> bool:
    """Whether x_proj writes x_dbl in fp32: for bf16/fp16 activations on CUDA, where cuBLAS accumulates in fp32
    anyway and `torch.bmm(..., out_dtype=torch.float32)` stores that result. The scan then loads B and C without
    unpacking 16-bit values (bf16 scan ~17% faster at Vim-Ti 1248 px, batch 64), and the fused scan reads the dt
    columns in fp32 (without fusion they are cast for a 16-bit dt_proj GEMM). Not under autograd: aten::bmm
    with out_dtype has no derivative (torch 2.11-2.14), so training keeps x_dbl in the activation dtype (the scan
    loads 16-bit B and C then)."""
    return (u.is_cuda and u.dtype in (torch.bfloat16, torch.float16) and _BMM_HAS_OUT_DTYPE
            and not torch.is_grad_enabled())


_BMM_HAS_OUT_DTYPE = "dtype" in torch.ops.aten.bmm.overloads()


def _stack_mixer_weights(layout: XDblLayout, dtype: torch.dtype, sum_halves: bool, in_proj, out_proj, conv_w_f,
                         conv_b_f, conv_w_b, conv_b_b, x_proj_f, x_proj_b, dt_proj_f, dt_bias_f, dt_proj_b, dt_bias_b,
                         A_log_f, A_log_b, D_f, D_b) -> MixerWeights:
    """MixerWeights from the mixer's parameters (official names and shapes; direction 0 forward, 1 backward).
    Every parameter may carry the same leading dimensions (layers stacked in front, `StackedMixerWeights`);
    every field then has them too, before its direction axis."""
    def both(f, b, dims):  # the directions stacked in front of the last `dims` dimensions
        return torch.stack([f, b], dim=-dims - 1)

    return MixerWeights(
        in_proj=in_proj.to(dtype),
        conv_w=both(conv_w_f[..., 0, :], conv_w_b[..., 0, :], 2),
        conv_b=both(conv_b_f, conv_b_b, 1),
        x_proj_t=both(layout.reorder(x_proj_f), layout.reorder(x_proj_b), 2).to(dtype).transpose(-2, -1),
        dt_proj_t=both(dt_proj_f, dt_proj_b, 2).to(dtype).transpose(-2, -1),
        A=-torch.exp(both(A_log_f, A_log_b, 2).float()),
        D=both(D_f, D_b, 1).float(),
        dt_bias=both(dt_bias_f, dt_bias_b, 1).float(),
        out_proj=(torch.cat([out_proj, out_proj], -1) if sum_halves else out_proj).to(dtype),
    )


_PARAMS_PER_MIXER = 16  # _stack_mixer_weights' parameters
_FIELDS = len(MixerWeights.__dataclass_fields__)
# The MixerWeights field (index) that each of _stack_mixer_weights' parameters goes into.
_FIELD_OF_PARAM = (0, 8, 1, 2, 1, 2, 3, 3, 4, 7, 4, 7, 5, 5, 6, 6)


def _layers_stacked_weights(layout: XDblLayout, dtype: torch.dtype, sum_halves: bool, n_layers: int,
                            params) -> MixerWeights:
    """`_stack_mixer_weights` once for n mixers: params layer-major (n x 16, each mixer's in its order), stacked
    per parameter (views for one mixer); every field gets the layer axis in front."""
    per = _PARAMS_PER_MIXER
    if n_layers == 1:
        stacked = [p.unsqueeze(0) for p in params]  # views: one mixer needs no copies
    else:
        stacked = [torch.stack(params[j::per]) for j in range(per)]
    return _stack_mixer_weights(layout, dtype, sum_halves, *stacked)


class StackedMixerWeights(torch.autograd.Function):
    """`_stack_mixer_weights` for n mixers as ONE autograd node: forward(layout, dtype, sum_halves, n, *params),
    params layer-major (n x 16, each mixer's in `_stack_mixer_weights` order) -> the n mixers' MixerWeights
    fields, layer-major (n x 9). With n > 1 the parameters of all layers are stacked first, so the ~25 casts,
    stacks and reorders run once for the model instead of once per layer (a Vim-Ti training step launched ~600
    such kernels when every mixer built its own; the eager step is host-bound). backward maps the fields'
    gradients back onto the parameters (transposes, the x_proj row order, casts, A = -exp(A_log), the doubled
    out_proj undone), again once for all layers. Same values and gradients as autograd through the stacking ops
    one by one (tests/test_training.py). Old-style (forward takes ctx): torch binds a setup_context-style
    Function's default arguments through inspect.signature on every call."""

    @staticmethod
    def forward(ctx, layout, dtype, sum_halves, n_layers, *params):
        per = _PARAMS_PER_MIXER
        if len(params) != n_layers * per:
            raise ValueError(f"{n_layers} mixers take {n_layers * per} parameters; got {len(params)}")
        w = _layers_stacked_weights(layout, dtype, sum_halves, n_layers, params)
        ctx.layout, ctx.sum_halves, ctx.n_layers = layout, sum_halves, n_layers
        ctx.param_dtypes = [p.dtype for p in params[:per]]
        ctx.save_for_backward(w.A)  # A = -exp(A_log): dA_log = dA * A
        ctx.set_materialize_grads(False)
        fields = list(w.__dict__.values())
        return tuple(field[i] for i in range(n_layers) for field in fields)

    @staticmethod
    def backward(ctx, *grads):
        lay, n = ctx.layout, ctx.n_layers
        (A,) = ctx.saved_tensors

        def field(j):  # field j's gradients of all layers, stacked; None where no layer got one
            got = grads[j::_FIELDS]
            present = [g for g in got if g is not None]
            if not present:
                return None
            if n == 1:
                return present[0].unsqueeze(0)
            return torch.stack([g if g is not None else torch.zeros_like(present[0]) for g in got])

        d_in, d_conv_w, d_conv_b, d_x_proj_t, d_dt_proj_t, d_A, d_D, d_dt_bias, d_out = map(field, range(_FIELDS))
        pair = lambda g, dim: (None, None) if g is None else g.unbind(dim)  # noqa: E731  the two directions
        d_out_proj = None
        if d_out is not None:
            d_out = d_out.to(ctx.param_dtypes[1])  # the halves add in the parameter's dtype, as autograd's would
            half = d_out.shape[-1] // 2
            d_out_proj = d_out[..., :half] + d_out[..., half:] if ctx.sum_halves else d_out
        conv_w = pair(None if d_conv_w is None else d_conv_w[..., None, :], -4)  # (..., E, 1, K) each
        conv_b = pair(d_conv_b, -2)
        x_proj = (None, None)
        if d_x_proj_t is not None:
            rows = d_x_proj_t.transpose(-2, -1)  # (..., 2, width, E), layout [B | C | dt | pad]
            x_proj = pair(torch.cat([rows[..., lay.dt, :], rows[..., lay.B, :], rows[..., lay.C, :]], -2), -3)
        dt_proj = pair(None if d_dt_proj_t is None else d_dt_proj_t.transpose(-2, -1), -3)  # (..., E, R) each
        A_log = pair(None if d_A is None else d_A * A, -3)
        dt_bias = pair(d_dt_bias, -2)
        # in _stack_mixer_weights' parameter order, each (n, *parameter shape)
        stacked = [d_in, d_out_proj, conv_w[0], conv_b[0], conv_w[1], conv_b[1], *x_proj, dt_proj[0], dt_bias[0],
                   dt_proj[1], dt_bias[1], *A_log, *pair(d_D, -2)]
        stacked = [None if g is None else g.to(dt) for g, dt in zip(stacked, ctx.param_dtypes)]
        per_layer = [(None,) * n if g is None else g.unbind(0) for g in stacked]
        # None (as autograd through the plain ops gives) where a layer's field got no gradient: the zeros stacked
        # in its place must not reach the parameters (a layer cut off from the loss keeps grad None)
        reached = lambda i, j: grads[i * _FIELDS + _FIELD_OF_PARAM[j]] is not None  # noqa: E731
        return (None, None, None, None, *(per_layer[j][i] if reached(i, j) else None
                                          for i in range(n) for j in range(_PARAMS_PER_MIXER)))


def stacked_mixer_weights(mixers, dtype: torch.dtype, sum_halves: bool) -> list[MixerWeights]:
    """The MixerWeights of several mixers (same widths) under autograd, from one `StackedMixerWeights` node."""
    params = [p for mixer in mixers for p in mixer._mixer_params()]
    fields = StackedMixerWeights.apply(mixers[0].x_dbl_layout, dtype, sum_halves, len(mixers), *params)
    return [MixerWeights(*fields[i * _FIELDS:(i + 1) * _FIELDS]) for i in range(len(mixers))]


def traced_stacked_mixer_weights(mixers, dtype: torch.dtype, sum_halves: bool) -> list[MixerWeights]:
    """`stacked_mixer_weights` for a traced (torch.compile'd) training forward: the same stacking of every layer's
    parameters, then `_stack_mixer_weights` once for the model, as plain ops (AOTAutograd derives the backward;
    the custom Function's Python backward is not traced). Each mixer gets its layer of every field. Per-mixer
    plain ops instead (each mixer's `_build_weights`) put the stacking into the compiled step once per layer (H200,
    1248/8: 72 inductor `stack` kernels per step among 225 more kernels than the eager step; kernels/NOTES.md,
    "Session u")."""
    params = [p for mixer in mixers for p in mixer._mixer_params()]
    w = _layers_stacked_weights(mixers[0].x_dbl_layout, dtype, sum_halves, len(mixers), params)
    fields = list(w.__dict__.values())
    return [MixerWeights(*(field[i] for field in fields)) for i in range(len(mixers))]


class RMSNorm(nn.Module):
    """Weight-only RMSNorm; the computation lives in the op table (fused with the residual add)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


# The parameters a mixer's stacked weights are built from (the cache key reads them).
_MIXER_SUBMODULE_PARAMS = (("in_proj", "weight"), ("out_proj", "weight"), ("conv1d", "weight"), ("conv1d", "bias"),
                           ("conv1d_b", "weight"), ("conv1d_b", "bias"), ("x_proj", "weight"), ("x_proj_b", "weight"),
                           ("dt_proj", "weight"), ("dt_proj", "bias"), ("dt_proj_b", "weight"),
                           ("dt_proj_b", "bias"))
_MIXER_OWN_PARAMS = ("A_log", "A_b_log", "D", "D_b")


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer ("bimamba v2", outputs averaged). Input and output (B, L, D)."""

    def __init__(self, d_model: int, depth: int, ops: VimOps, batch_slice: int = 0, train_boundary: str = "fused",
                 fuse_dt_proj: bool | None = None, split_in_proj: bool = False):
        super().__init__()
        if train_boundary not in TRAIN_BOUNDARIES:
            raise ValueError(f"train_boundary must be one of {', '.join(TRAIN_BOUNDARIES)}; got {train_boundary!r}")
        self.ops = ops
        self.batch_slice = batch_slice  # images per slice at inference; 0: the whole batch at once
        self.train_boundary = train_boundary
        # inference: the scan applies dt_proj, where the backend's scan can; None: in host-bound eager calls
        self.fuse_dt_proj = fuse_dt_proj
        self.split_in_proj = split_in_proj  # inference: in_proj as two GEMMs, z made after x is dead
        self.gate_z = False  # inference: z made inside the gate op (ops.zgate), never stored
        inner = d_inner(d_model)
        self.d_inner, self.dt_rank = inner, dt_rank(d_model)
        self.x_dbl_layout = XDblLayout(self.dt_rank, D_STATE)
        self._weights_cache: tuple | None = None  # (key, MixerWeights); not part of the state dict
        self._dt_pad_cache: tuple | None = None  # (dt_proj_t, it padded): `_padded_dt_proj`
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)
        self.out_proj = nn.Linear(inner, d_model, bias=False)
        for suffix in ("", "_b"):
            self.add_module("conv1d" + suffix, nn.Conv1d(inner, inner, D_CONV, groups=inner, padding=D_CONV - 1))
            self.add_module("x_proj" + suffix, nn.Linear(inner, self.dt_rank + 2 * D_STATE, bias=False))
            self.add_module("dt_proj" + suffix, nn.Linear(self.dt_rank, inner, bias=True))
        a_init = torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(inner, 1)
        self.A_log = nn.Parameter(torch.log(a_init))
        self.A_b_log = nn.Parameter(torch.log(a_init.clone()))
        self.D = nn.Parameter(torch.ones(inner))
        self.D_b = nn.Parameter(torch.ones(inner))
        self._init_weights(depth)

    @torch.no_grad()
    def _init_weights(self, depth: int) -> None:
        std = self.dt_rank ** -0.5
        for proj, zero_bias in ((self.dt_proj, False), (self.dt_proj_b, True)):
            nn.init.uniform_(proj.weight, -std, std)
            if zero_bias:  # the official init pass leaves the backward bias at zero
                proj.bias.zero_()
                continue
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt = dt.clamp_min(1e-4)
            proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.out_proj.weight.div_(math.sqrt(depth))

    def _mixer_params(self) -> list[torch.Tensor]:
        """The parameters the stacked weights are built from, in _MIXER_SUBMODULE_PARAMS + _MIXER_OWN_PARAMS order
        (dict reads: see `weights`)."""
        modules, own = self._modules, self._parameters
        params = [modules[m]._parameters[name] for m, name in _MIXER_SUBMODULE_PARAMS]
        return params + [own[name] for name in _MIXER_OWN_PARAMS]

    def _build_weights(self, dtype: torch.dtype, sum_halves: bool) -> MixerWeights:
        """sum_halves: out_proj as the weight twice along K (the halves GEMM) or once."""
        return _stack_mixer_weights(self.x_dbl_layout, dtype, sum_halves, *self._mixer_params())

    def weights(self, dtype: torch.dtype, sum_halves: bool | None = None) -> MixerWeights:
        """The stacked weights for activations of `dtype`; sum_halves: out_proj twice along K (the halves GEMM)
        or once, None: as sums_halves_in_gemm(dtype) decides. Without autograd
        (inference) they are built once and reused until a parameter changes (new storage or an in-place update
        bumps the key); with autograd they are built on every call so gradients reach the parameters, as one
        autograd node (`StackedMixerWeights`; VisionMamba builds all its mixers' weights in one such node per
        training forward and hands them to the mixers: `training_weights`), and under torch.compile as plain ops
        (the traced graph holds the stacking ops, since the cache's data-pointer key cannot be traced; vimbench's
        inference compiles use inductor freezing, which folds them into constants at compile time)."""
        sum_halves = sums_halves_in_gemm(dtype) if sum_halves is None else sum_halves
        if torch.compiler.is_compiling():
            return self._build_weights(dtype, sum_halves)
        if torch.is_grad_enabled():
            return stacked_mixer_weights([self], dtype, sum_halves)[0]
        params = self._mixer_params()
        # Dict reads, not self.parameters() (walking the module tree cost 2.1 ms of host time per Vim-Ti forward,
        # kernels/NOTES.md) nor attribute reads (nn.Module.__getattr__ runs in Python: 16 parameters through 28
        # lookups cost ~2x these dict reads on CPU). A replaced Parameter or submodule is still seen here.
        key = (dtype, sum_halves, *[(p.data_ptr(), p._version) for p in params])
        if self._weights_cache is None or self._weights_cache[0] != key:
            self._weights_cache = (key, self._build_weights(dtype, sum_halves))
        return self._weights_cache[1]

    def _padded_dt_proj(self, dt_proj_t: torch.Tensor, rows: int) -> torch.Tensor:
        """dt_proj_t (2, R, E) with zero rows up to `rows` (x_dbl's dt columns and pad); at inference cached with
        the weights it was made from (one tensor per mixer), under autograd or tracing made on each call."""
        pad = rows - dt_proj_t.shape[1]
        if not pad:
            return dt_proj_t
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return F.pad(dt_proj_t, (0, 0, 0, pad))
        cached = self._dt_pad_cache
        if cached is None or cached[0] is not dt_proj_t:
            cached = self._dt_pad_cache = (dt_proj_t, F.pad(dt_proj_t, (0, 0, 0, pad)))
        return cached[1]

    def _fused_boundary(self) -> bool:
        """Whether this mixer trains through the one fused op (when anything requires grad)."""
        return self.train_boundary != "per-op" and self.ops.bimamba_inner is not None

    def training_sum_halves(self, dtype: torch.dtype) -> bool:
        """The sum_halves that `_mix` builds its weights with under autograd for activations of `dtype`."""
        return False if self._fused_boundary() else sums_halves_in_gemm(dtype)

    def forward(self, h: torch.Tensor, norm: tuple | None = None, weights: MixerWeights | None = None
                ) -> torch.Tensor:
        """(B, L, D) -> (B, L, D). norm: (r, weight, eps) that h was normalized from (the block's add + RMSNorm):
        the fused training op then recomputes h from r, which the norm keeps, instead of saving h. weights: this
        mixer's MixerWeights built by the caller under autograd (`training_weights`, with
        `training_sum_halves`), or None to build them here. At inference
        with `batch_slice` set, the batch goes through in slices of that many images (the last one smaller), so
        that the mixer's temporaries (in_proj output, conv output, x_dbl, delta: ~15 values of 16-bit per token
        and inner channel) exist for one slice at a time; the output is the same up to the GEMMs' blocking (the
        kernels are per image and per channel)."""
        step = self.batch_slice
        if not step or h.shape[0] <= step or torch.is_grad_enabled():
            return self._mix(h, norm, weights)
        first = self._mix(h[:step])
        out = first.new_empty((h.shape[0], *first.shape[1:]))  # (B, L, D)
        out[:step] = first
        del first
        for start in range(step, h.shape[0], step):
            out[start:start + step] = self._mix(h[start:start + step])
        return out

    def splits_in_proj(self) -> bool:
        """Whether this call computes in_proj as two GEMMs, x then z (see `_mix`): in eager inference unless
        switched off (`split_in_proj`); under autograd the conv keeps x for its backward anyway. Not while traced:
        inductor's freezing merges GEMMs that share an input and have constant weights into one and splits its
        output, so the split was undone and cost two copies per layer for our ops' layouts (H200, Vim-Ti lean,
        1248 px, batch 64, bf16: 6.9 ms per forward; results/history/lprof-h200-2026-12-03.json)."""
        return self.split_in_proj and not torch.is_grad_enabled() and not torch.compiler.is_compiling()

    def gates_z(self) -> bool:
        """Whether this call runs the scan ungated and makes z inside the gate (ops.zgate): inference only (the
        gate op has no backward), on a backend that has the op, when switched on (`gate_z`, memory mode
        lean-gated)."""
        return self.gate_z and self.ops.zgate is not None and not torch.is_grad_enabled()

    def fuses_dt_proj(self, h: torch.Tensor) -> bool:
        """Whether this call (mixer input h, (B, L, D)) hands dt_proj to the scan: inference only (the fused scan
        has no backward; training keeps the GEMM), on a backend whose scan fuses it, when switched on
        (`fuse_dt_proj` True), or automatically (None) where the launches are host-bound: eager calls (not traced,
        not captured into a CUDA graph) of at most FUSE_DT_MAX_ROWS token rows (B x L), or of any size in fp32
        (FUSE_DT_FP32), where the scan runs in one pass (not chunk-parallel: those passes compute delta first, in
        fp32, and their call is not replayed; ops.scan_takes_dt_proj); captured and traced calls where the fused
        scan runs in blocks of tokens (FUSE_DT_IN_TOKEN_BLOCKS)."""
        if not self.ops.scan_fuses_dt_proj or torch.is_grad_enabled():
            return False
        if self.fuse_dt_proj is not None:
            return self.fuse_dt_proj
        if torch.compiler.is_compiling() or (h.is_cuda and torch.cuda.is_current_stream_capturing()):
            blocks = self.ops.scan_blocks_take_dt_proj
            return FUSE_DT_IN_TOKEN_BLOCKS and blocks is not None and \
                blocks(h.shape[0], self.d_inner, h.shape[1], self.dt_rank, not h.is_cuda)
        takes = self.ops.scan_takes_dt_proj
        sized = h.shape[0] * h.shape[1] <= FUSE_DT_MAX_ROWS or (FUSE_DT_FP32 and h.dtype == torch.float32)
        return sized and (
            takes is None or takes(h.shape[0], self.d_inner, h.shape[1], self.dt_rank, D_STATE, h.device))

    def softplus_before_scan(self, activation: torch.dtype) -> bool:
        """Whether this call, where the scan does not take dt_proj, makes delta already softplus'd
        (ops.dt_softplus, DT_SOFTPLUS_BEFORE_SCAN): inference only (the op has no backward; the scan backward takes
        the pre-activation for the softplus's slope), 16-bit activations, or fp32 with DT_SOFTPLUS_FP32 (off: the
        fp32 tile runs on the FMA pipe and measured slower than the delta GEMM it replaces), on a backend that has
        the op."""
        return (DT_SOFTPLUS_BEFORE_SCAN and self.ops.dt_softplus is not None and not torch.is_grad_enabled()
                and (activation in (torch.bfloat16, torch.float16)
                     or (DT_SOFTPLUS_FP32 and activation == torch.float32)))

    def fuses_conv_xproj(self, x: torch.Tensor) -> bool:
        """Whether a call with the conv input x (B, E, L) may make u and x_dbl in one launch (ops.conv_xproj):
        inference only (the fused op has no backward), on a backend that has the op, with x channel-last, while
        FUSE_CONV_XPROJ is on. `_mix` fuses only where in_proj is not split (it is split in eager calls of memory
        modes split, lean and lean-gated): with the split, x dies before x_dbl exists, and the fused op would hold
        x, u and x_dbl together (+0.15 GB at Vim-Ti 1248 px, batch 64)."""
        return (FUSE_CONV_XPROJ and self.ops.conv_xproj is not None and not torch.is_grad_enabled()
                and x.stride(1) == 1)

    def _trains_fused(self, h: torch.Tensor) -> bool:
        return (torch.is_grad_enabled() and self._fused_boundary()
                and (h.requires_grad or self.in_proj.weight.requires_grad))

    def _mix_fused(self, h: torch.Tensor, w: MixerWeights, norm: tuple | None) -> torch.Tensor:
        """Training through one differentiable op from h to the mixer output (see TRAIN_BOUNDARIES)."""
        combine = self.train_boundary == "fused-combined" or not sums_halves_in_gemm(h.dtype)
        return self.ops.bimamba_inner(h, w.in_proj, w.conv_w, w.conv_b, w.x_proj_t, w.dt_proj_t, w.A, w.D,
                                      w.dt_bias, w.out_proj, combine=combine, norm=norm)

    def _mix(self, h: torch.Tensor, norm: tuple | None = None, weights: MixerWeights | None = None) -> torch.Tensor:
        if self._trains_fused(h):
            return self._mix_fused(h, weights if weights is not None else self.weights(h.dtype, sum_halves=False),
                                   norm)
        # given weights were built for this path unless the boundary is fused and nothing here requires grad
        w = weights if weights is not None and not self._fused_boundary() else self.weights(h.dtype)
        return F.linear(*self._mix_tokens(h, w))

    def _mix_tokens(self, h: torch.Tensor | None, w: MixerWeights, xz: torch.Tensor | None = None,
                    fuse_conv: bool | None = None, buffers: FrontBuffers | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixer up to out_proj (not under the fused training op): (y (B, L, K), out_w (D, K)) whose product
        y @ out_w^T is the mixer's output, y the scan's halves as (B, L, 2E) with out_w doubled along K, the
        combined or gated output (B, L, E) with out_w once (eager lean-gated: written over the scan's output).
        xz: in_proj's output (B, L, 2E), made by the caller (VisionMamba's front path, `norm_in_proj`), in the
        default inference layout only (in_proj not split, z not gated); h is not read then (None). fuse_conv: the
        conv and x_proj as one launch (ops.conv_xproj); None: as `fuses_conv_xproj` decides. buffers (the front
        path's): the conv and x_proj (ops.conv_xproj, or without fuse_conv ops.conv1d_silu_bidir and
        ops.x_proj_rows) write u and x_dbl into buffers.u and buffers.x_dbl where they are set (the previous
        layer's), and leave their outputs there."""
        inner, lay = self.d_inner, self.x_dbl_layout
        rows = h if xz is None else xz
        batch, length = rows.shape[0], rows.shape[1]
        # Channel-last throughout: per-token channel runs are contiguous, so the scan kernel's per-token loads
        # coalesce. Ops see (B, E, L) / (2, B, N, L) shaped views of these (B, L, ...) tensors.
        gate = self.gates_z()
        split = self.splits_in_proj() or gate
        if xz is not None and split:
            raise ValueError("a mixer that splits in_proj or gates z makes its own in_proj output")
        if split:
            # x alone first; z only once x is dead (after the conv) and x_dbl exists, so x and z are never
            # alive together with u: -0.3 GB at the peak (Vim-Ti 1248 px, b64, bf16) for reading h twice.
            # x itself is made with the conv, in slices of the batch where it is large (`_split_x_conv`).
            xz, x, z = None, None, None
        else:
            if xz is None:
                xz = F.linear(h, w.in_proj)  # (B, L, 2E)
            x = xz[..., :inner].transpose(1, 2)  # (B, E, L) view, channel stride 1
            z = xz[..., inner:].transpose(1, 2)
        if fuse_conv is None:
            fuse_conv = not split and self.fuses_conv_xproj(x)
        if not split and fuse_conv:  # u and x_dbl from one launch
            reuse = None if buffers is None or buffers.u is None else (buffers.u, buffers.x_dbl)
            u, x_dbl = self.ops.conv_xproj(x, w.conv_w, w.conv_b, w.x_proj_t,
                                           torch.float32 if x_dbl_in_fp32(x) else x.dtype, out=reuse)
            if buffers is not None:
                buffers.u, buffers.x_dbl = u, x_dbl
        elif buffers is not None and self.ops.x_proj_rows is not None:  # the front path: two launches, its buffers
            u = self.ops.conv1d_silu_bidir(x, w.conv_w, w.conv_b, out=buffers.u)
            x_dbl = self.ops.x_proj_rows(u, w.x_proj_t, torch.float32 if x_dbl_in_fp32(u) else u.dtype,
                                         out=buffers.x_dbl)
            buffers.u, buffers.x_dbl = u, x_dbl
        else:
            if split:
                u = self._split_x_conv(h, w, in_slices=gate and not torch.compiler.is_compiling())
            else:
                u = self.ops.conv1d_silu_bidir(x, w.conv_w, w.conv_b)  # (2, B, E, L); triton: laid out (B, L, 2, E)
            x = None  # with split, its memory can hold x_dbl and z
            tokens = u.transpose(2, 3).reshape(2, batch * length, inner)  # a view
            if x_dbl_in_fp32(u):
                x_dbl = torch.bmm(tokens, w.x_proj_t, out_dtype=torch.float32)
            else:
                x_dbl = torch.bmm(tokens, w.x_proj_t)
            del tokens
        x_dbl = x_dbl.view(2, batch, length, lay.width)  # [B | C | dt | pad] per token
        scan_kw, dt_bias = {}, w.dt_bias
        if self.fuses_dt_proj(rows):
            # The scan computes delta = dt_proj @ dt per token from x_dbl's dt columns (a (2, B, R, L) view)
            # itself: no (2, B, L, E) delta tensor (0.6 GB at Vim-Ti 1248 px, batch 64, bf16), no GEMM.
            delta = x_dbl[..., lay.dt].transpose(2, 3)
            scan_kw["dt_proj"] = w.dt_proj_t.transpose(1, 2)  # (2, E, R) view
        elif self.softplus_before_scan(u.dtype):
            # delta = softplus(dt @ dt_proj + bias) from x_dbl's dt columns in one launch, (2, B * L, E) like the
            # GEMM's output; the scan then adds no bias and runs no softplus (DT_SOFTPLUS_BEFORE_SCAN).
            dt_rows = x_dbl[..., lay.dt].reshape(2, batch * length, -1)  # a view: (B, L) collapse
            delta = self.ops.dt_softplus(dt_rows, w.dt_proj_t, w.dt_bias, delta_dtype(u.dtype))
            delta, dt_bias = delta.view(2, batch, length, inner).transpose(2, 3), None
            scan_kw["delta_softplus"] = False
        else:
            # (2, B, L, E) -> (2, B, E, L) view; the dt bias is added inside the scan
            # cast before reshape: the cast of the strided dt columns writes a contiguous tensor, so the reshape
            # is a view; one kernel instead of a gather then a cast when x_dbl is fp32 (24 launches per forward).
            # The dt columns with x_dbl's zero pad after them, against dt_proj with zero rows for the pad
            # (`_padded_dt_proj`): the same product with 16-element rows (Vim-Ti: K = 16, not 12), which cuBLAS
            # runs with an aligned kernel (H200, Vim-Ti 1248 px, batch 64, bf16: K = 12 ran a cutlass align2
            # kernel, 342 us per layer; results/history/lprof-h200-2026-12-03.json). Training does the same
            # (kernels/bimamba_inner/op.py `_scan_operands`).
            cols = slice(lay.dt.start, None) if PAD_DT_GEMM else lay.dt  # dt, then x_dbl's zero pad
            dt_cols = x_dbl[..., cols].to(u.dtype).reshape(2, batch * length, -1)
            delta = torch.bmm(dt_cols, self._padded_dt_proj(w.dt_proj_t, dt_cols.shape[-1]))
            delta = delta.view(2, batch, length, inner).transpose(2, 3)
        B = x_dbl[..., lay.B].transpose(2, 3)  # (2, B, N, L) views
        C = x_dbl[..., lay.C].transpose(2, 3)
        if split and not gate:
            z = F.linear(h, w.in_proj[inner:]).transpose(1, 2)  # (B, E, L) view of (B, L, E)
        if gate:
            # The scan ungated (z=None: 0.5 * y_dir, halves written over u, or their sum), then
            # (y_f + y_b) * SiLU(h @ W_z^T) with z in registers tile by tile: no (B, L, E) z tensor; out_proj
            # on the (B, L, E) gated sum is a K = E GEMM (w.out_proj is doubled along K for the halves GEMM).
            halves = sums_halves_in_gemm(u.dtype)
            y = self.ops.bimamba_scan(u, delta, w.A, B, C, w.D, None, dt_bias, combine=not halves,
                                      out=u if halves else None, **scan_kw)
            del x, u, x_dbl, delta, B, C
            out_w = w.out_proj[:, :inner] if halves else w.out_proj
            if torch.compiler.is_compiling():  # traced: the functional op, and inductor plans the buffers
                return self.ops.zgate(y, h, w.in_proj[inner:]), out_w
            # Eager: the gated sum over y's first direction (or over the sum), element for element, so that the
            # gate's output takes no memory of its own (-0.28 GB at Vim-Ti 1248 px, b64, bf16, at the gate; u's
            # storage then lives through out_proj, whose output makes that point -0.14 GB: kernels/NOTES.md,
            # session ak).
            return self.ops.zgate(y, h, w.in_proj[inner:], out=(y[0] if halves else y).transpose(1, 2)), out_w
        if not sums_halves_in_gemm(u.dtype):
            y = self.ops.bimamba_scan(u, delta, w.A, B, C, w.D, z, dt_bias, **scan_kw)
            y = y.transpose(1, 2)  # (B, L, E)
            del xz, x, z, u, x_dbl, delta, B, C  # dead: out_proj's output may reuse their memory
            return y, w.out_proj
        # The two gated halves 0.5 * y_dir * SiLU(z), written over u when nothing needs u afterwards (inference);
        # under autograd the x_proj GEMM and the scan keep u for the backward pass, so the halves get their own
        # buffer. u is laid out (B, L, 2, E), so [y_f | y_b] per token is one (B, L, 2E) view, and out_proj with
        # its weight repeated along K adds the halves inside the GEMM.
        halves = self.ops.bimamba_scan(u, delta, w.A, B, C, w.D, z, dt_bias, combine=False,
                                       out=None if u.requires_grad else u, **scan_kw)
        del xz, x, z, u, x_dbl, delta, B, C  # dead: out_proj's output may reuse their memory
        return halves.permute(1, 3, 0, 2).reshape(batch, length, 2 * inner), w.out_proj

    def _split_x_conv(self, h: torch.Tensor, w: MixerWeights, in_slices: bool) -> torch.Tensor:
        """in_proj's x half and the conv where in_proj is split: u (2, B, E, L) from x = h @ W_x^T (B, E, L). With
        in_slices (the caller's: eager lean-gated calls) over more than X_CONV_SLICE_ROWS token rows, x is made and
        convolved in slices of the batch, each slice's conv writing its images' part of one u laid out
        (B, L, 2, E), as the conv lays out a channel-last input's output; the result is the same up to the GEMM's
        blocking (the conv is per image)."""
        inner = self.d_inner
        w_x = w.in_proj[:inner]
        batch, length = h.shape[:2]
        slices = -(-(batch * length) // X_CONV_SLICE_ROWS) if in_slices else 1
        if slices <= 1 or batch == 1:
            return self.ops.conv1d_silu_bidir(F.linear(h, w_x).transpose(1, 2), w.conv_w, w.conv_b)
        per = -(-batch // slices)
        u = None
        for start in range(0, batch, per):
            x = F.linear(h[start:start + per], w_x).transpose(1, 2)  # (b, E, L) view of (b, L, E)
            if u is None:
                u = x.new_empty((batch, length, 2, inner)).permute(2, 0, 3, 1)
            self.ops.conv1d_silu_bidir(x, w.conv_w, w.conv_b, out=u[:, start:start + per])
            del x
        return u


class VimBlock(nn.Module):
    def __init__(self, d_model: int, depth: int, ops: VimOps, batch_slice: int = 0, train_boundary: str = "fused",
                 fuse_dt_proj: bool | None = None):
        super().__init__()
        self.mixer = BiMambaMixer(d_model, depth, ops, batch_slice, train_boundary, fuse_dt_proj)
        self.norm = RMSNorm(d_model)


class PatchEmbed(nn.Module):
    """The official patch embedding: a PATCH x PATCH convolution of stride PATCH (weights in `proj`, as in the
    checkpoints), on big inputs computed as one GEMM over the patches: the patches are gathered into
    (B, M, 3 * PATCH^2) rows in the activation dtype by one copy (the cast under autocast included), then
    multiplied by the weight viewed as (D, 3 * PATCH^2). Same math. Measured on the H200 (2026-12-03; cudnn.benchmark
    off, as the protocol says): results/history/patchab-h200-2026-12-03.json, the module at 1248 px, batch 64,
    6.90 -> 1.29 ms in bf16 and 8.36 -> 3.49 in fp32, 224 px batch 64 0.33 -> 0.18 ms, batch 1 0.125 -> 0.197 ms
    (host-bound: more ops); Vim-Ti forwards 1248/64 bf16 621 -> 655 img/s (lean-gated 547 -> 574), fp32 277 -> 282
    (A B B A, one process). Training steps, two train_h200 sweeps from two device calls, GEMM (results/history/
    train-h200-2026-12-03b-gemm-patch.jsonl) vs convolution (results/history/train-h200-2026-12-03c.jsonl): Vim-Ti
    captured 224/128 2,513 vs 2,442 img/s, 1248/8 73.3 vs 71.4 (DeiT-Ti, the control: +1.3%, +0.5%; an A B B A
    in one process is still to do).
    as_gemm: None (automatic): the GEMM from GEMM_FROM_ROWS patch rows (batch x patches), the convolution below;
    True / False force one."""

    GEMM_FROM_ROWS = 4096  # between the measured 196 rows (conv faster) and 12,544 (GEMM faster)

    def __init__(self, img_size: int, embed_dim: int):
        super().__init__()
        self.grid = img_size // PATCH
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(3, embed_dim, PATCH, PATCH)
        self.as_gemm: bool | None = None

    def uses_gemm(self, x: torch.Tensor) -> bool:
        """Whether forward(x) runs the GEMM (as_gemm, or the automatic choice)."""
        if self.as_gemm is not None:
            return self.as_gemm
        rows = x.shape[0] * (x.shape[2] // PATCH) * (x.shape[3] // PATCH)
        return rows >= self.GEMM_FROM_ROWS

    def forward(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, M, D) patch embeddings, row-major patches. dtype: the activation dtype the
        GEMM runs in (the model's: autocast's under autocast); None: the weight's."""
        if not self.uses_gemm(x):
            return self.proj(x).flatten(2).transpose(1, 2)
        batch, channels, height, width = x.shape
        rows, cols = height // PATCH, width // PATCH  # the convolution drops a partial last patch
        tiles = x[:, :, :rows * PATCH, :cols * PATCH].unflatten(3, (cols, PATCH)).unflatten(2, (rows, PATCH))
        dtype = self.proj.weight.dtype if dtype is None else dtype
        patches = torch.empty((batch, rows, cols, channels, PATCH, PATCH), dtype=dtype, device=x.device)
        patches.copy_(tiles.permute(0, 2, 4, 1, 3, 5))  # (B, rows, cols, 3, P, P): one gather + cast
        weight = self.proj.weight.flatten(1)  # (D, 3 * P * P), the patches' (channel, row, column) order
        return F.linear(patches.view(batch, rows * cols, -1), weight, self.proj.bias)  # (B, M, D)


class VisionMamba(nn.Module):
    """Vim with the class token in the middle of the patch sequence and the head on that token.

    img_size fixes the number of patches (and the position embedding's length); inputs must be that size.
    batch_slice: at inference, each mixer processes the batch in slices of this many images (0: all at once);
    its temporaries then scale with the slice, not the batch. Estimate: README ("Memory"); measured trade-off:
    results/README.md ("Memory modes and batch slicing, measured").
    train_boundary: what the mixers' autograd graph keeps in training (TRAIN_BOUNDARIES; "fused" by default).
    fuse_dt_proj: at inference on the triton backend the scan applies dt_proj itself (no delta tensor). True: always
    (a memory mode); None (the default): where the launches are host-bound, eager calls of at most
    FUSE_DT_MAX_ROWS token rows (two torch ops fewer per layer), and eager fp32 calls of any size (FUSE_DT_FP32:
    +4.3% at 1248 px, batch 64); False: never. At large sizes in 16-bit it is not a speed-up. Measured on the
    H200 (results/history/dtfuse-h200-2026-12-02.json, Vim-Ti 1248 px, batch 64, bf16): 612 img/s at 3.44 GiB
    peak off, 542 img/s at 2.87 GiB fused, 540 img/s at 2.59 GiB fused with in_proj split
    (`set_dt_proj_fusion(model, True, split_in_proj=True)` switches a built model); the fused scan itself is
    3.49 ms vs 2.92 ms for the dt_proj GEMM plus the plain scan."""

    def __init__(self, img_size: int = 224, embed_dim: int = 192, depth: int = 24, num_classes: int = 1000,
                 backend: str = "torch", batch_slice: int = 0, train_boundary: str = "fused",
                 fuse_dt_proj: bool | None = None):
        super().__init__()
        if img_size < PATCH:
            raise ValueError(f"img_size {img_size} is smaller than one {PATCH}px patch")
        if batch_slice < 0:
            raise ValueError(f"batch_slice must be >= 0 (0: no slicing); got {batch_slice}")
        self.batch_slice = batch_slice
        self.ops = get_ops(backend)
        self.backend = self.ops.name
        self.img_size, self.embed_dim, self.depth = img_size, embed_dim, depth
        self.patch_embed = PatchEmbed(img_size, embed_dim)
        self.num_tokens = self.patch_embed.num_patches + 1
        self.cls_position = self.patch_embed.num_patches // 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.train_boundary = train_boundary
        self.layers = nn.ModuleList(VimBlock(embed_dim, depth, self.ops, batch_slice, train_boundary, fuse_dt_proj)
                                    for _ in range(depth))
        self.norm_f = RMSNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _activation_dtype(self) -> torch.dtype:
        device_type = self.pos_embed.device.type  # is_autocast_enabled() without a device sees CUDA only
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return self.pos_embed.dtype

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        act_dtype = self._activation_dtype()
        x = self.patch_embed(images, act_dtype)  # (B, M, D)
        batch, mid = x.shape[0], self.cls_position
        cls = self.cls_token.expand(batch, -1, -1).to(x.dtype)
        hidden = torch.cat([x[:, :mid], cls, x[:, mid:]], dim=1) + self.pos_embed  # (B, L, D)
        del x, cls
        if self.uses_front(hidden, act_dtype):
            return self._forward_front(hidden, act_dtype)
        if not torch.compiler.is_compiling():  # (nothing for the tracer to see)
            _FRONT_PLANS.pop(self, None)  # a recorded front path's buffers are not kept past its last forward
        weights = self.training_weights(act_dtype)
        residual = None
        for i, block in enumerate(self.layers):
            # Residual stream kept in fp32; the normalized input to the mixer in the activation dtype. The
            # consumed input is dropped before the mixer runs, so the allocator can reuse it for the mixer's
            # temporaries, and the mixer's input before the next norm allocates (at Vim-Ti 1248 px, batch 64,
            # bf16, 0.14 GiB each; the first layer's fp32 input 0.28 GiB; vimbench.bench.live_memory counts them).
            normed, residual = self.ops.add_rmsnorm(hidden, residual, block.norm.weight, NORM_EPS, act_dtype)
            hidden = None
            mixer_weights = None if weights is None else weights[i]
            hidden = block.mixer(normed, (residual, block.norm.weight, NORM_EPS), mixer_weights)
            normed = None
        normed, _ = self.ops.add_rmsnorm(hidden, residual, self.norm_f.weight, NORM_EPS, act_dtype)
        return normed[:, mid]  # (B, D): the normalized middle (class) token

    def uses_front(self, hidden: torch.Tensor, act_dtype: torch.dtype) -> bool:
        """Whether this forward (the layers' input `hidden`, (B, L, D), activations in act_dtype) runs the front
        path (`_forward_front`): inference on a backend with ops.norm_in_proj, activations in FRONT_DTYPES, eager
        (not traced, not captured into a CUDA graph), at most FRONT_MAX_ROWS token rows of at most FRONT_MAX_DIM
        features (Vim-Ti), every mixer in the default
        inference layout (in_proj not split, z not gated, no batch slicing at this batch)."""
        if (self.ops.norm_in_proj is None or act_dtype not in FRONT_DTYPES or torch.is_grad_enabled()
                or torch.compiler.is_compiling()
                or hidden.shape[0] * hidden.shape[1] > FRONT_MAX_ROWS or hidden.shape[2] > FRONT_MAX_DIM
                or not self.layers
                or (hidden.is_cuda and torch.cuda.is_current_stream_capturing())):
            return False
        return all(not (m.splits_in_proj() or m.gates_z() or 0 < m.batch_slice < hidden.shape[0])
                   for m in (block.mixer for block in self.layers))

    def _forward_front(self, hidden: torch.Tensor, act_dtype: torch.dtype) -> torch.Tensor:
        """forward_features' layers and final norm from the layers' input, four launches per layer: a block's
        entry from the previous mixer's scan output (its out_proj, the residual add, RMSNorm, in_proj:
        ops.norm_in_proj), the conv op, x_proj (ops.x_proj_rows; the two as one ops.conv_xproj launch with
        FRONT_CONV_XPROJ) and the scan. The same math as the per-op path; the GEMMs accumulate in another order.

        Where replays are on (kernels.launch: the direct path and `call_replay`), the layers' launches are recorded
        once into a FrontPlan, per input layout, weights, stream and thread, and replayed as one fixed sequence
        after (kernels.launch.LaunchSequence): none of the launchers' Python runs then. The plan keeps the layers'
        buffers (in_proj's output, two residuals, u and x_dbl: ~1 MiB at Vim-Ti 224 px, batch 1, bf16) between
        forwards, and drops them at the first forward that does not take this path."""
        from kernels import launch  # (here: the torch backend and the module itself do without triton)

        weights = [block.mixer.weights(act_dtype) for block in self.layers]
        norms = [block._modules["norm"]._parameters["weight"] for block in self.layers]  # dict reads: host time
        key = _front_key(hidden, act_dtype) if FRONT_PLANS and launch.replays_enabled(hidden) else None
        plan = _FRONT_PLANS.get(self) if key is not None else None
        if plan is not None and not plan.fits(key, weights, norms):
            del _FRONT_PLANS[self]  # (its buffers go now, before the new plan's are allocated)
            plan = None
        if plan is not None and plan.sequence is not None:
            plan.sequence.replay((hidden,))
            y, out_w, residual = plan.y, plan.out_w, plan.residual
        elif key is None or plan is not None:  # replays off, or this key's launches could not be recorded
            y, out_w, residual = self._front_layers(hidden, weights, norms, FrontBuffers())
        else:
            buffers = FrontBuffers()
            with launch.record_launches() as launches:
                y, out_w, residual = self._front_layers(hidden, weights, norms, buffers)
            owned = (*buffers.tensors(), *norms,
                     *[getattr(w, f.name) for w in weights for f in dataclasses.fields(w)])
            sequence = launch.LaunchSequence.build(launches, (hidden,), owned)
            _FRONT_PLANS[self] = FrontPlan(key, weights, [n.data_ptr() for n in norms], sequence,
                                           *((y, out_w, residual) if sequence is not None else (None, None, None)))
        normed, _ = self.ops.add_rmsnorm(F.linear(y, out_w), residual, self.norm_f.weight, NORM_EPS, act_dtype)
        return normed[:, self.cls_position]

    def _front_layers(self, hidden: torch.Tensor, weights: list[MixerWeights], norms: list[torch.Tensor],
                      buffers: FrontBuffers) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The front path's layers: (the last scan's output y, out_w, the fp32 residual), as `_mix_tokens` and
        norm_in_proj leave them; each layer writes its outputs into the previous layer's (`buffers`)."""
        y, out_w, residual = hidden, None, None  # the first block's input is the embedded tokens themselves
        fuse_conv = FRONT_CONV_XPROJ and self.ops.conv_xproj is not None
        for block, w, norm_w in zip(self.layers, weights, norms):
            reuse = None if buffers.spare is None else (buffers.xz, buffers.spare)
            xz, new_residual = self.ops.norm_in_proj(y, out_w, residual, norm_w, NORM_EPS, w.in_proj, out=reuse)
            # the residual read by this layer's entry is written by the next one's
            buffers.xz, buffers.spare, buffers.residual = xz, residual, new_residual
            if buffers.spare is None and buffers.residual is not None:
                buffers.spare = torch.empty_like(new_residual)
            residual, y = new_residual, None
            y, out_w = block.mixer._mix_tokens(None, w, xz=xz, fuse_conv=fuse_conv, buffers=buffers)
            xz = None
        return y, out_w, residual

    def training_weights(self, dtype: torch.dtype) -> list[MixerWeights] | None:
        """Under autograd, every mixer's MixerWeights for activations of `dtype`, built once for the whole model
        (the layers' parameters stacked, then ~25 ops, instead of that many per layer): eager by one
        `StackedMixerWeights` node, traced (torch.compile'd training) by the same ops in the graph
        (`traced_stacked_mixer_weights`; TRACED_STACKED_WEIGHTS False: each mixer builds its own there). None
        without autograd (inference reuses each mixer's cache, or inductor freezes it)."""
        if not torch.is_grad_enabled() or not self.layers:
            return None
        mixers = [block.mixer for block in self.layers]
        sum_halves = mixers[0].training_sum_halves(dtype)
        if torch.compiler.is_compiling():
            return traced_stacked_mixer_weights(mixers, dtype, sum_halves) if TRACED_STACKED_WEIGHTS else None
        return stacked_mixer_weights(mixers, dtype, sum_halves)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))


# Inference memory modes of the Vim mixers (`vimbench sweep --vim-memory`; inference only, training ignores them):
# name -> (fuse dt_proj into the scan: True, or None = only in host-bound eager calls (FUSE_DT_MAX_ROWS); in_proj as
# two GEMMs; z made inside the gate). "default": one in_proj GEMM, the dt_proj GEMM and a (B, L, 2, E) delta tensor
# (on backend triton, in eager calls of at most FUSE_DT_MAX_ROWS token rows, or of any size in fp32 (FUSE_DT_FP32),
# the scan applies dt_proj instead);
# "split": in_proj as x then z (eager only), so x, z and the conv output are never alive together; "lean": split,
# and the scan applies dt_proj itself (no delta tensor; backend triton only); "lean-gated": lean, and z is never
# stored: the scan runs ungated and the `zgate` op makes z tile by tile inside the gate, which also sums the
# directions (out_proj then K = E). Vim-Ti 1248 px, batch 64, bf16, eager, one sweep (the latest,
# results/memory-modes-1248-h200-2026-12-03e.jsonl), peak allocated / img/s: default 3.45 GiB / 682, split 3.17 /
# 678, lean 2.59 / 686, lean-gated 2.45 / 648 (DeiT-Ti sdpa 3.40 / 648).
MEMORY_MODES: dict[str, tuple[bool | None, bool, bool]] = {
    "default": (None, False, False), "split": (None, True, False), "lean": (True, True, False),
    "lean-gated": (True, True, True)}


def set_memory_mode(model: nn.Module, mode: str) -> None:
    """Put every Vim mixer of `model` in inference memory mode `mode` (MEMORY_MODES)."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown Vim memory mode {mode!r}; choose one of {', '.join(MEMORY_MODES)}")
    fuse, split, gate = MEMORY_MODES[mode]
    set_dt_proj_fusion(model, fuse, split_in_proj=split)
    for module in model.modules():
        if isinstance(module, BiMambaMixer):
            module.gate_z = gate


def set_dt_proj_fusion(model: nn.Module, on: bool | None, split_in_proj: bool | None = None) -> None:
    """Switch the fused dt_proj (scan computes delta) on, off or to automatic (None: host-bound calls only) in every
    Vim mixer of `model`, and the split in_proj too if `split_in_proj` is given (both are inference-time memory
    savings; off: the previous path)."""
    for module in model.modules():
        if isinstance(module, BiMambaMixer):
            module.fuse_dt_proj = None if on is None else bool(on)
            if split_in_proj is not None:
                module.split_in_proj = bool(split_in_proj)
