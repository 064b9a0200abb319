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


def needs_custom_op(*tensors: torch.Tensor | None) -> bool:
    """Whether a public op must go through its registered torch custom op (autograd, fake tensors, torch.compile)
    rather than call its launcher directly: under tracing (torch.compile, export, fake tensors), or when autograd
    will record the call. Plain eager inference skips the custom-op dispatcher, which costs ~20 us of host time
    per call (measured on CPU, torch 2.14): ~1.5 ms per Vim-Ti forward of 72 op calls."""
    if torch.compiler.is_compiling():
        return True
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return True
    return any(t is not None and _is_fake(t) for t in tensors)


def _is_fake(t: torch.Tensor) -> bool:
    return type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter)
