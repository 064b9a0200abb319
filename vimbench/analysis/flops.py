"""Analytic FLOPs and bytes of one forward pass of Vim and DeiT, per op and per layer category.

Conventions (state them next to any number derived from here):
- A multiply-accumulate (MAC) is 2 FLOPs. GEMMs and convolutions count MACs only (bias adds are not counted),
  which is what torch.utils.flop_counter.FlopCounterMode counts, so GEMM/conv/attention totals can be checked
  against it.
- Selective scan: 9 * B * L * E * N FLOPs per direction per layer (the Mamba authors' convention), plus
  B * L * E for the D skip of each direction and B * L * E for the SiLU(z) gate (their `with_D`/`with_Z`
  terms) and 2 * B * L * E for averaging the two directions. Softplus of delta is not counted.
- Attention (DeiT): the two batched matmuls Q K^T and P V, 2 * B * L^2 * D each per layer (as FlopCounterMode
  counts SDPA); softmax is not counted.
- Norm: RMSNorm with its residual add counts 5 FLOPs per element (add, square-accumulate 2, scale 2);
  LayerNorm counts 7 (mean 1, centre 1, square-accumulate 2, scale 2, shift 1).
- Elementwise ops (SiLU, GELU, residual adds outside a norm, position embedding) count 1 FLOP per element
  per op; transcendentals count 1 like any other op. They are small and only reported, never checked.
- FLOPs are the model's math, the same for every implementation: x_proj at its parameter's shape (the mixer
  computes zero-padded rows, vimbench.layout.XDblLayout), out_proj at K = E (the bf16 mixer runs it at K = 2E
  to add the two directions). Those implementation extras show up in bytes only.
- Patch embedding (a 16x16 stride-16 conv) is a GEMM in disguise and is counted as GEMM; the depthwise conv1d
  of the Vim mixer is the "conv" category.
- Bytes are the minimum traffic of the implementation as written (each op reads its inputs once and writes
  its output once; nothing stays in cache between ops). Activations use the element size of the compute
  dtype (fp32/tf32: 4, bf16/fp16: 2), Vim's residual stream is always fp32, weights are counted at the compute
  dtype's element size, A/D/delta_bias of the scan in fp32.
Numbers are for the whole batch, one forward, inference (train_step_flops: one training step, by convention).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vimbench.analysis import roofline as rl
from vimbench.errors import VimbenchError
from vimbench.layout import XDblLayout
from vimbench.geometry import D_CONV, D_STATE, MLP_RATIO, PATCH, d_inner, dt_rank, num_patches
from vimbench.precision import DTYPE_BYTES, element_bytes

CATEGORIES = ("gemm", "scan", "conv", "norm", "attention", "elementwise")
SCAN_FLOPS_PER_ELEMENT = 9  # per (b, l, e, n), the Mamba convention
TRAIN_FLOP_CONVENTION = (
    "training step = 3 x forward FLOPs (the common convention: backward = 2 x forward; not counted from the "
    "backward kernels; the AdamW update not counted); forward: MAC = 2 FLOPs, scan 9*B*L*E*N per direction; per "
    "category only gemm (forward + input and weight gradients, the patch embedding without an input gradient) and "
    "attention (Q K^T and P V: 3 x forward) are counted, exactly")


@dataclass(frozen=True)
class OpCount:
    """One op of the forward pass, summed over its `count` occurrences (usually the layers)."""
    name: str
    category: str
    flops: float
    bytes: float
    count: int = 1


@dataclass
class ModelCount:
    model: str
    res: int
    batch: int
    dtype: str
    tokens: int
    ops: list[OpCount] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes for op in self.ops)

    def by_category(self) -> dict[str, dict[str, float]]:
        """{category: {"flops": ..., "bytes": ...}} for every category in CATEGORIES (zeros where absent)."""
        out = {c: {"flops": 0.0, "bytes": 0.0} for c in CATEGORIES}
        for op in self.ops:
            out[op.category]["flops"] += op.flops
            out[op.category]["bytes"] += op.bytes
        return out

    def category_flops(self, category: str) -> float:
        return self.by_category()[category]["flops"]


def _gemm(name: str, m: float, k: float, n: float, elt: int, count: int = 1, out_elt: int | None = None) -> OpCount:
    """(m, k) @ (k, n): 2*m*k*n FLOPs; reads both operands, writes the product."""
    out_elt = elt if out_elt is None else out_elt
    return OpCount(name, "gemm", 2.0 * m * k * n * count, (elt * (m * k + k * n) + out_elt * m * n) * count, count)


def _check(dtype: str, res: int, batch: int) -> None:
    element_bytes(dtype)
    if res < PATCH:
        raise VimbenchError(f"image size {res} is smaller than the {PATCH} px patch; use at least {PATCH}")
    if batch < 1:
        raise VimbenchError(f"batch must be >= 1, got {batch}")


def _with_patch_embedding(model: str, embed_dim: int, res: int, batch: int, dtype: str) -> tuple[ModelCount, int]:
    """A ModelCount holding the ops both families start with (16 px patch embedding, class token and position
    embedding), and the token count L = patches + 1. Checks the arguments."""
    _check(dtype, res, batch)
    elt, D = DTYPE_BYTES[dtype], embed_dim
    M = num_patches(res)
    L = M + 1
    BL = batch * L
    out = ModelCount(model, res, batch, dtype, L)
    out.ops.append(_gemm("patch_embed", batch * M, 3 * PATCH * PATCH, D, elt))
    out.ops.append(OpCount("pos_embed+cls", "elementwise", BL * D, elt * (2 * BL * D + L * D)))
    return out, L


def vim_counts(embed_dim: int, depth: int, res: int, batch: int, dtype: str = "fp32", num_classes: int = 1000,
               model: str = "vim") -> ModelCount:
    """Vim (bimamba v2, middle class token) as vimbench.models.vim builds it; see the module docstring."""
    out, L = _with_patch_embedding(model, embed_dim, res, batch, dtype)
    elt = DTYPE_BYTES[dtype]
    D, E, N, K = embed_dim, d_inner(embed_dim), D_STATE, D_CONV
    R = dt_rank(D)
    BL = batch * L
    ops = out.ops
    # add_rmsnorm before each block and once at the end; block 0 has no residual to add.
    norm_flops = 5.0 * BL * D
    # Bytes of our three kernels: the same formulas the kernel roofline uses (analysis/roofline.py).
    norm_bytes_first = rl.add_rmsnorm_work(BL, D, dtype, residual=False).bytes
    norm_bytes = rl.add_rmsnorm_work(BL, D, dtype).bytes
    ops.append(OpCount("add_rmsnorm", "norm", norm_flops * (depth + 1),
                       norm_bytes_first + norm_bytes * depth, depth + 1))
    ops.append(_gemm("in_proj", BL, D, 2 * E, elt, depth))
    conv_flops = 2 * (2.0 * K * BL * E)                               # both directions
    conv_bytes = rl.conv1d_bidir_work(batch, E, L, K, dtype).bytes
    ops.append(OpCount("conv1d_bidir", "conv", conv_flops * depth, conv_bytes * depth, depth))
    ops.append(OpCount("conv_silu", "elementwise", 2.0 * BL * E * depth, 0.0, depth))  # fused into conv: no bytes
    # FLOPs at the parameter's shape; bytes as written: the mixer's x_proj output has zero-padded rows
    # (XDblLayout) and is fp32 for bf16/fp16 activations (vimbench.models.vim.x_dbl_in_fp32, on a GPU).
    x_proj = _gemm("x_proj", 2 * BL, E, R + 2 * N, elt, depth)
    x_dbl_bytes = (4 if dtype in ("bf16", "fp16") else elt) * 2 * BL * XDblLayout(R, N).width
    ops.append(OpCount(x_proj.name, "gemm", x_proj.flops,
                       (elt * (2 * BL * E + 2 * E * (R + 2 * N)) + x_dbl_bytes) * depth, depth))
    ops.append(_gemm("dt_proj", 2 * BL, R, E, elt, depth))
    scan_flops = 2 * (SCAN_FLOPS_PER_ELEMENT * BL * E * N + BL * E) + BL * E + 2 * BL * E
    # bf16/fp16: the scan writes both gated halves and out_proj adds them, reading K = 2E (bytes); its FLOPs
    # are counted at K = E, the model's math. fp32: the scan combines (vimbench.models.vim.sums_halves_in_gemm).
    halves = dtype in ("bf16", "fp16")
    scan_bytes = rl.bimamba_scan_work(batch, E, L, N, dtype, halves=halves).bytes
    ops.append(OpCount("bimamba_scan", "scan", scan_flops * depth, scan_bytes * depth, depth))
    out_proj = _gemm("out_proj", BL, E, D, elt, depth)
    as_run = _gemm("out_proj", BL, 2 * E if halves else E, D, elt, depth)
    ops.append(OpCount(out_proj.name, "gemm", out_proj.flops, as_run.bytes, depth))
    ops.append(_gemm("head", batch, D, num_classes, elt))
    return out


def deit_counts(embed_dim: int, depth: int, heads: int, res: int, batch: int, dtype: str = "fp32",
                num_classes: int = 1000, attn: str = "sdpa", model: str = "deit") -> ModelCount:
    """timm's DeiT (class token, no distillation token, MLP ratio 4, pre-norm LayerNorm).

    attn='sdpa': fused attention reads Q, K, V and writes O (no L x L matrix in memory); 'eager' also writes and
    reads the L x L scores and probabilities. FLOPs are the same for both."""
    out, L = _with_patch_embedding(model, embed_dim, res, batch, dtype)
    elt, f32 = DTYPE_BYTES[dtype], 4
    D, H = embed_dim, heads
    BL = batch * L
    ops = out.ops
    ln_bytes = elt * 2 * BL * D + f32 * 2 * D
    ops.append(OpCount("layernorm", "norm", 7.0 * BL * D * (2 * depth + 1), ln_bytes * (2 * depth + 1),
                       2 * depth + 1))
    ops.append(_gemm("qkv", BL, D, 3 * D, elt, depth))
    attn_flops = 2 * (2.0 * batch * L * L * D)
    attn_bytes = elt * 4 * BL * D                                     # read q, k, v; write o
    if attn == "eager":
        attn_bytes += elt * 2 * 2 * batch * H * L * L                 # scores and probs, written then read
    elif attn != "sdpa":
        raise VimbenchError(f"unknown attention {attn!r}; choose sdpa or eager")
    ops.append(OpCount("attention", "attention", attn_flops * depth, attn_bytes * depth, depth))
    ops.append(_gemm("proj", BL, D, D, elt, depth))
    ops.append(_gemm("fc1", BL, D, MLP_RATIO * D, elt, depth))
    ops.append(OpCount("gelu", "elementwise", 1.0 * BL * MLP_RATIO * D * depth,
                       elt * 2 * BL * MLP_RATIO * D * depth, depth))
    ops.append(_gemm("fc2", BL, MLP_RATIO * D, D, elt, depth))
    ops.append(OpCount("residual_add", "elementwise", 2.0 * BL * D * depth, elt * 3 * BL * D * 2 * depth, 2 * depth))
    ops.append(_gemm("head", batch, D, num_classes, elt))
    return out


def model_counts(name: str, res: int, batch: int = 1, dtype: str = "fp32", num_classes: int = 1000,
                 attn: str = "sdpa") -> ModelCount:
    """Analytic counts for any registered model (vim_t, deit_s, vim_test, ...) built at `res`."""
    from vimbench.models.registry import get_spec

    spec = get_spec(name)
    if spec.family == "vim":
        return vim_counts(spec.embed_dim, spec.depth, res, batch, dtype, num_classes, spec.alias)
    heads = spec.overrides.get("num_heads", spec.heads)
    return deit_counts(spec.embed_dim, spec.depth, heads, res, batch, dtype, num_classes, attn, spec.alias)


def train_step_flops(counts: ModelCount) -> tuple[float, dict[str, float]]:
    """Analytic FLOPs of one training step (TRAIN_FLOP_CONVENTION) from a forward's counts: the step's total by
    the 3 x forward convention, and the categories whose backward is counted exactly: every GEMM has an input
    gradient and a weight gradient of its forward's FLOPs each, except the patch embedding (the image needs no
    gradient); attention's two batched matmuls have two operand gradients each. The scan's, conv's and norm's
    backward kernels do other work than their forward (recomputation, state carries), so no per-category count
    is claimed for them."""
    by = counts.by_category()
    no_input_gradient = sum(op.flops for op in counts.ops if op.name == "patch_embed")
    exact = {"gemm": 3.0 * by["gemm"]["flops"] - no_input_gradient, "attention": 3.0 * by["attention"]["flops"]}
    return 3.0 * counts.flops, exact
