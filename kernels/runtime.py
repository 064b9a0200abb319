"""Where the Triton kernels run: the one place that decides whether they are interpreted on the CPU.

TRITON_INTERPRET=1 must be set before any kernel module is imported: `@triton.jit` reads it when a kernel is
defined and returns an interpreted function then, which runs kernels on CPU tensors (tests, no GPU).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

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
    # Software-pipelining stages of the kernel's loops (None: Triton's default, 3).
    num_stages: int | None = None

    def launch_options(self) -> dict[str, Any]:
        """Keyword options of the launch besides the kernel's arguments: num_warps, and maxnreg and num_stages
        when set."""
        return {"num_warps": self.num_warps, **({"maxnreg": self.maxnreg} if self.maxnreg else {}),
                **({"num_stages": self.num_stages} if self.num_stages else {})}


def interpreted_block_c(channels: int) -> int:
    """Channels per program of the scan kernels under TRITON_INTERPRET=1 (CPU tests), which runs every program in
    Python: 8 for the kernel tests' few channels (13 -> a full block and a masked one: they cross channel blocks),
    16 above 32 channels (the model-level tests' E = 64: 4 programs per direction and batch instead of 8, which
    halved their interpreted scan time)."""
    return 8 if channels <= 32 else 16


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for host-side launch arithmetic. triton.cdiv is a constexpr function in recent Triton (its
    call wrapper unwraps constexprs: ~1.7 us per call on CPU, triton 3.8), and a Vim forward computes ~200 grid
    sizes."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), host side (see `cdiv`)."""
    return 1 << (int(n) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _stride_names(prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}_{name}" for name in names)


def strides(prefix: str, names: tuple[str, ...], values: tuple[int, ...]) -> dict[str, int]:
    """Keyword arguments {prefix_name: stride} for a launch, e.g. strides("stride_u", ("b", "e", "l"), u.stride()).
    The argument names are built once per (prefix, names) (~9 calls per launch on the eager host path; 0.62 -> 0.35
    us per call on CPU)."""
    keys = _stride_names(prefix, names)
    if len(keys) != len(values):
        raise ValueError(f"{prefix}: {len(names)} stride names for {len(values)} strides")
    return dict(zip(keys, values))


INT32_LIMIT = 2 ** 31


def check_token_offsets(length: int, **tensors: torch.Tensor | None) -> None:
    """The scan kernels index tokens in 32 bits: token t of a tensor sits at its (64-bit) row base plus t * (its
    stride along L), a 32-bit product. Raise when (length - 1) * |stride| of a given tensor (last dimension = L)
    does not fit, instead of reading wrapped addresses."""
    for name, t in tensors.items():
        if t is not None and (length - 1) * abs(t.stride(-1)) >= INT32_LIMIT:
            raise ValueError(f"{name}: token offsets up to {(length - 1) * abs(t.stride(-1)):,} elements exceed the "
                             f"scan kernels' 32-bit token indexing (stride {t.stride(-1)} along L, L = {length}); "
                             "pass a tensor whose L stride is smaller (contiguous in (L, E) order, for example)")


def check_out(out: tuple, likes: tuple, device: torch.device, inputs: tuple, names: tuple[str, ...]) -> None:
    """An eager launcher's `out` buffers against the outputs it would allocate (`likes`, as its `*_like` helpers
    make them on the meta device): each has the very shape, strides and dtype, lives on `device` and shares no
    memory with an input (the kernels read inputs while other programs write outputs); ValueError naming what is
    wrong."""
    if len(out) != len(likes) or any(t is None for t in out):
        raise ValueError(f"out must be None or {len(likes)} buffers ({', '.join(names)})")
    storages = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    for name, like, given in zip(names, likes, out):
        if (given.shape, given.stride(), given.dtype, given.device) != (like.shape, like.stride(), like.dtype, device):
            raise ValueError(f"out buffer {name} must be {like.dtype} {tuple(like.shape)} with strides {like.stride()} "
                             f"on {device}; got {given.dtype} {tuple(given.shape)} with strides {given.stride()} on "
                             f"{given.device}")
        if given.numel() and given.untyped_storage().data_ptr() in storages:
            raise ValueError(f"out buffer {name} shares memory with an input")


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


def traced(*tensors: torch.Tensor | None) -> bool:
    """Whether a call is being traced (torch.compile, export) or sees fake or meta tensors: then it must go through
    the registered torch custom op (the tracer records it as one opaque node; its fake implementation serves the
    meta device)."""
    return torch.compiler.is_compiling() or any(t is not None and (_is_fake(t) or t.is_meta) for t in tensors)


def records_autograd(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will record a call on these tensors (grad mode on, one of them requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def needs_custom_op(*tensors: torch.Tensor | None) -> bool:
    """Whether a public op without an eager autograd twin must go through its registered torch custom op
    (autograd, fake tensors, torch.compile) rather than call its launcher directly: under tracing, or when
    autograd will record the call. Plain eager inference skips the custom-op dispatcher, which costs ~20 us of
    host time per call (measured on CPU, torch 2.14): ~1.5 ms per Vim-Ti forward of 72 op calls."""
    return traced(*tensors) or records_autograd(*tensors)


def eager_autograd(name: str, forward: Callable, setup_context: Callable, backward: Callable) -> Callable:
    """The eager twin of a custom op with `register_autograd(backward, setup_context=setup_context)`: a
    torch.autograd.Function whose forward is the op's own implementation followed by the very setup_context
    registered on the op, and whose backward is the op's backward. Eager training calls it instead of the op: the
    custom-op dispatcher (autograd node, redispatch, the alias check of every output) costs host time on every
    call, and a Vim-Ti training step at 224 px, batch 128 was host-bound (the GPU busy ~55 of ~140 ms; H200, torch
    2.11). Traced calls keep the custom op (`traced`). Returns the Function's apply; call it with positional
    arguments, exactly the op's. An old-style Function (forward takes ctx): for a Function with a separate
    setup_context, torch binds the arguments to forward's signature through inspect.signature on every call."""
    def forward_with_ctx(ctx, *args):
        output = forward(*args)
        setup_context(ctx, args, output)
        return output

    function = type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward_with_ctx),
        "backward": staticmethod(backward),
    })
    return function.apply


# Column sums of the kernels' fp32 partial buffers (rows = programs or batch x chunks, a few hundred): torch's
# reduction over dim 0 ran 8.4-8.5 us for (512, 768) and (528, 192) on the H200 inside a CUDA graph, a GEMV with a
# ones vector 2.9-3.5 us (results/history/smallops-h200-2026-12-03.json). The ones vectors are kept per (device,
# rows) and made only in plain eager calls: not while a CUDA graph captures (a tensor made then holds nothing until
# the graph replays), and not inside our custom ops (`op_call`), which run inside compiled graphs: under
# torch.compile's reduce-overhead (CUDA graph trees) their warm-up allocates into the graphs' private pool, where a
# tensor kept past the call is an error ("tensors in the cudagraph pool not tracked as outputs", H100, session v).
_ONES: dict[tuple[torch.device, int], torch.Tensor] = {}
_op_calls = threading.local()


@contextlib.contextmanager
def op_call() -> Iterator[None]:
    """Mark the block as a registered custom op's implementation running (inside a compiled graph, possibly in a CUDA
    graph tree's memory pool): `sum_partials` then makes no ones vector to keep."""
    depth = getattr(_op_calls, "depth", 0)
    _op_calls.depth = depth + 1
    try:
        yield
    finally:
        _op_calls.depth = depth


def sum_partials(partials: torch.Tensor) -> torch.Tensor:
    """partials (P, *shape) fp32 -> (*shape): the sum over dim 0, as a ones-vector GEMV on CUDA (cuBLAS sgemv:
    fp32 accumulation, deterministic) and torch.sum elsewhere, or where the ones vector for P rows does not exist
    yet and may not be made (a CUDA graph capturing, a custom op's call: `op_call`)."""
    rows = partials.shape[0]
    if (partials.device.type != "cuda" or partials.dtype != torch.float32 or not partials.is_contiguous()
            or partials.numel() == 0):
        return partials.sum(0)
    key = (partials.device, rows)
    ones = _ONES.get(key)
    if ones is None:
        if torch.cuda.is_current_stream_capturing() or getattr(_op_calls, "depth", 0):
            return partials.sum(0)
        ones = _ONES[key] = torch.ones(rows, dtype=torch.float32, device=partials.device)
    return torch.mv(partials.view(rows, -1).t(), ones).view(partials.shape[1:])


def _is_fake(t: torch.Tensor) -> bool:
    return type(t) is not torch.Tensor and not isinstance(t, torch.nn.Parameter)


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached); any positive number elsewhere (the interpreter's
    choice does not depend on it)."""
    if device.type != "cuda":
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
