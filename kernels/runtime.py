"""Where the Triton kernels run: the one place that decides whether they are interpreted on the CPU.

TRITON_INTERPRET=1 must be set before any kernel module is imported: `@triton.jit` reads it when a kernel is
defined and returns an interpreted function then, which runs kernels on CPU tensors (tests, no GPU).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class LaunchConfig:
    """How a launcher launches one kernel: which @triton.jit function (by name, in the launcher's module), the
    grid, the tile constexprs (BLOCK_*, ...) and the warps. Each kernel has one function that returns it
    (e.g. `scan_launch_config`), read by the launcher and by vimbench's static sm_90 check alike, so the variants
    the check compiles are the ones the model launches."""
    kernel: str
    grid: tuple[int, ...]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    # Register cap per thread passed to ptxas (None: ptxas's own choice, which can stop short and spill).
    maxnreg: int | None = None

    def launch_options(self) -> dict[str, Any]:
        """Keyword options of the launch besides the kernel's arguments: num_warps, and maxnreg when set."""
        return {"num_warps": self.num_warps, **({"maxnreg": self.maxnreg} if self.maxnreg else {})}


def strides(prefix: str, names: tuple[str, ...], values: tuple[int, ...]) -> dict[str, int]:
    """Keyword arguments {prefix_name: stride} for a launch, e.g. strides("stride_u", ("b", "e", "l"), u.stride())."""
    if len(names) != len(values):
        raise ValueError(f"{prefix}: {len(names)} stride names for {len(values)} strides")
    return {f"{prefix}_{name}": value for name, value in zip(names, values)}


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
