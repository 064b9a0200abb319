"""tl.dot as the GEMM-with-epilogue kernels call it (zgate, conv_xproj, norm_in_proj): the one place for the
precision choice and the interpreter's 16-bit workaround."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dot_acc(a, b, acc, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b with fp32 accumulation. IEEE: fp32 operands multiplied as fp32 (input_precision="ieee", never
    TF32). UPCAST: 16-bit operands widened to fp32 first, for TRITON_INTERPRET=1, whose tl.dot multiplies 16-bit
    floats as their raw bits (triton 3.6-3.8)."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, acc, input_precision="ieee")
    else:
        return tl.dot(a, b, acc)
