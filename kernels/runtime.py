"""Where the Triton kernels run: the one place that decides whether they are interpreted on the CPU.

TRITON_INTERPRET=1 must be set before any kernel module is imported: `@triton.jit` reads it when a kernel is
defined and returns an interpreted function then, which runs kernels on CPU tensors (tests, no GPU).
"""
from __future__ import annotations

import torch


def interpreted(kernel) -> bool:
    """Whether `kernel` (a @triton.jit function) was defined under TRITON_INTERPRET=1."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_device(t: torch.Tensor, kernel) -> bool:
    """True when launches of `kernel` on `t` run interpreted (CPU tensors under TRITON_INTERPRET=1); raises when
    the kernel cannot run on t's device at all."""
    if t.device.type == "cuda":
        return False
    if t.device.type == "cpu" and interpreted(kernel):
        return True
    raise RuntimeError(f"Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before importing kernels to run "
                       f"them on CPU; got a {t.device.type} tensor")
