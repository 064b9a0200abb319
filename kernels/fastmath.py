"""The MUFU's approximate exp2, lg2 and reciprocal for the kernels' transcendental functions: the one place.

Triton lowers tl.exp / tl.sigmoid / tl.log2 on fp32 to range-safe sequences: tl.exp halves the argument and
squares the result around ex2 (the denormal range), an IEEE division adds a range check and scaling around the
reciprocal, tl.log2 is a libdevice polynomial. The scans need none of that: their inputs are softplus arguments,
gates and sums of positive terms far from fp32's denormals, and they store bf16 or accumulate in fp32 with errors
far above 2^-22. `*.approx.ftz` (flush denormals to zero, relative error ~2^-22) is one MUFU instruction each.
USE_ASM=False (the interpreter, which cannot run inline asm) falls back to the exact tl functions.
Measured on the H200 (kernels/NOTES.md, "MUFU approximations"): ~1% faster for the bf16 forward scan, 8% slower
for the fp32 one (not understood), so the forward scan's `_token_step` asks for them only with a 16-bit output.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _ex2(x):
    return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                     pack=1)


@triton.jit
def _rcp(x):
    return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                     pack=1)


@triton.jit
def exp(x, USE_ASM: tl.constexpr):
    """e^x: one multiply and one ex2 (0 below ~-87, where the exact one is denormal; inf above ~88)."""
    if USE_ASM:
        return _ex2(x * LOG2E)
    else:
        return tl.exp(x)


@triton.jit
def log2(x, USE_ASM: tl.constexpr):
    """log2(x) for x > 0: one lg2 (absolute error ~2^-22), not libdevice's polynomial."""
    if USE_ASM:
        return tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return tl.log2(x)


@triton.jit
def reciprocal(x, USE_ASM: tl.constexpr):
    """1 / x: one rcp (relative error ~2^-22) instead of a range-checked IEEE division."""
    if USE_ASM:
        return _rcp(x)
    else:
        return 1.0 / x


@triton.jit
def sigmoid(x, USE_ASM: tl.constexpr):
    """1 / (1 + e^-x): a multiply, an ex2, an add and an rcp. Saturates correctly: e^-x -> inf gives 0,
    e^-x -> 0 gives 1."""
    if USE_ASM:
        return _rcp(1.0 + _ex2(x * -LOG2E))
    else:
        return tl.sigmoid(x)


@triton.jit
def silu_tanh(x):
    """x sigmoid(x) from one MUFU tanh: h + h tanh(h) with h = x / 2 (a multiply, the tanh and an FMA, against two
    MUFU and three FP32 instructions for x * `sigmoid`). tanh.approx's relative error (~2^-11) makes the absolute
    error up to ~|x| 2^-12: for 16-bit outputs only. No interpreter fallback: callers pick it only with USE_ASM."""
    h = x * 0.5
    t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [h], dtype=tl.float32, is_pure=True, pack=1)
    return h + h * t


@triton.jit
def widen_bf16(x, USE_ASM: tl.constexpr):
    """x in fp32, exactly. bf16 with USE_ASM: two values per 32-bit register, the low one widened by a shift and the
    high one by a mask (one instruction each, where Triton's own conversion took ~2.5 per value on sm_90 under
    triton 3.6: PRMT, SHF and IMAD). Anything else, or under the interpreter: x.to(fp32)."""
    if USE_ASM and x.dtype == tl.bfloat16:
        y = tl.inline_asm_elementwise("shl.b32 $0, $2, 16;\n\tand.b32 $1, $2, 0xffff0000;", "=r,=r,r", [x],
                                      dtype=tl.float32, is_pure=True, pack=2)
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def prefetch_l1(ptrs, USE_ASM: tl.constexpr, mask=None):
    """Ask the SM to bring the lines at `ptrs` into L1 (`prefetch.global.L1`: a hint; no register holds the data,
    and the later load of the same address hits L1). mask: lanes where it is false issue nothing (so their
    addresses need not be valid). Nothing under the interpreter (no inline asm there)."""
    if USE_ASM:
        if mask is None:
            tl.inline_asm_elementwise("prefetch.global.L1 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs],
                                      dtype=tl.int32, is_pure=False, pack=1)
        else:
            tl.inline_asm_elementwise(
                "{\n\t.reg .pred p;\n\tsetp.ne.b32 p, $2, 0;\n\t@p prefetch.global.L1 [$1];\n\tmov.u32 $0, 0;\n\t}",
                "=r,l,r", [ptrs, mask.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)
