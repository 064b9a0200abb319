"""Launching a @triton.jit kernel: the one place every launcher goes through (`launch(kernel, grid, **kwargs)`).

Why: Triton's own launch path (`kernel[grid](**kwargs)`) binds every argument and recomputes the kernel's
specialization on every call. Measured on the H200 host (triton 3.6, `results/history/scripts/hostlaunch.py` ->
`results/history/hostlaunch-h200-2026-12-03.json`), for the scan's 58 arguments: 77 us per launch, 36 of them in
the argument binder, against 12.9 us for the compiled kernel's own launcher with its arguments ready. An eager
Vim-Ti forward at batch 1 makes 73 launches; with this path its host time fell 13.4 -> 10.8 ms (paired rounds,
`results/history/fastab2-h200-2026-12-03.json`).

How: the first launch of a specialization goes through Triton (which compiles or finds the kernel) and returns
the compiled kernel; it is cached under a key that determines Triton's specialization exactly: the argument
names, each tensor's dtype and 16-byte alignment (Triton's only pointer specialization), every other argument's
type and value (ints are specialized on == 1 and divisibility by 16; exact values are a finer key), the device.
Later launches with that key hand the compiled kernel's launcher its arguments in the kernel's parameter order
(defaults filled in), on the current stream. What the direct path leaves out of Triton's: the check that global
values a kernel read at compile time have not changed (our kernels read module constants only), and launch hooks
(any registered hook, or a pre-run hook on the kernel, sends every launch through Triton's path).

Where it applies: CUDA launches with the Triton versions whose launcher calling convention was checked on the GPU
(`FAST_TRITON_VERSIONS`); everything else (the interpreter, other versions, `fast_launch(False)`, the environment
variable VIMBENCH_FAST_LAUNCH=0) takes Triton's path unchanged.
"""
from __future__ import annotations

import contextlib
import operator
import os
from typing import Any, Iterator

import torch
import triton

# Triton versions whose CompiledKernel.run(gridX, gridY, gridZ, stream, function, packed_metadata,
# launch_metadata, enter_hook, exit_hook, *args) convention the GPU tests checked (tests/kernels/test_launch.py).
FAST_TRITON_VERSIONS = ("3.6.",)
# Entries kept before the cache starts over (a sweep over many shapes adds one per shape and launch site).
MAX_CACHED = 4096

_enabled = os.environ.get("VIMBENCH_FAST_LAUNCH", "1") != "0" and triton.__version__.startswith(
    FAST_TRITON_VERSIONS)
_cache: dict[tuple, tuple] = {}
_JIT_FUNCTION = triton.runtime.jit.JITFunction
_TRITON_RUNTIME = getattr(getattr(triton, "knobs", None), "runtime", None)
stats = {"direct": 0, "triton": 0}  # launches by path since import (tests and scripts read it)


def fast_launch_enabled() -> bool:
    return _enabled


@contextlib.contextmanager
def fast_launch(enabled: bool) -> Iterator[None]:
    """Turn the direct path on or off inside the block (A/B measurements, tests). Turning it on where the Triton
    version is not one of FAST_TRITON_VERSIONS raises: that launcher convention is unchecked."""
    global _enabled
    if enabled and not triton.__version__.startswith(FAST_TRITON_VERSIONS):
        raise RuntimeError(f"the direct launch path is checked for triton {FAST_TRITON_VERSIONS} only; "
                           f"this is triton {triton.__version__}")
    before, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = before


def clear_cache() -> None:
    _cache.clear()


_TENSOR_CLASSES = frozenset({torch.Tensor, torch.nn.Parameter})
_SCALAR_CLASSES = frozenset({int, float, bool, str, type(None)})


def specialization_key(kwargs: dict[str, Any]) -> tuple:
    """What decides Triton's specialization of a launch with these keyword arguments (module docstring). A value
    of any other class (a tensor subclass, an object) becomes an unhashable item, so that the cache lookup fails
    and the launch takes Triton's path. Classes are compared exactly (isinstance on torch.Tensor costs ~0.1 us)."""
    return tuple([(v.dtype, not v.data_ptr() & 15) if v.__class__ in _TENSOR_CLASSES
                  else (v.__class__, v) if v.__class__ in _SCALAR_CLASSES else [] for v in kwargs.values()])


def _hooks_registered(kernel) -> bool:
    for name in ("launch_enter_hook", "launch_exit_hook"):
        hook = getattr(_TRITON_RUNTIME, name, None)
        if hook is not None and getattr(hook, "calls", True):
            return True
    return bool(getattr(kernel, "pre_run_hooks", None))


def _triton_launch(kernel, grid, kwargs: dict[str, Any], key: tuple | None):
    """Triton's own launch; caches the compiled kernel under key (None: do not cache)."""
    stats["triton"] += 1
    compiled = kernel[grid](**kwargs)
    if key is None or compiled is None or hasattr(compiled, "result") or _hooks_registered(kernel):
        return compiled
    params = kernel.signature.parameters
    defaults = {name: p.default for name, p in params.items() if p.default is not p.empty and name not in kwargs}
    if any(name not in kwargs and name not in defaults for name in params) or len(params) < 2:
        return compiled  # a launch we cannot replay positionally: keep Triton's path
    if len(_cache) >= MAX_CACHED:
        _cache.clear()
    _cache[key] = (compiled, operator.itemgetter(*params), defaults)
    return compiled


def launch(kernel, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """`kernel[grid](*args, **kwargs)`, directly through the compiled kernel's launcher once this specialization
    has been launched before (module docstring). grid: 1 to 3 ints; args, kwargs: the kernel's arguments (the
    first ones by position, the rest by name), constexprs and launch options (num_warps, maxnreg) included, as
    Triton takes them."""
    if not _enabled or type(kernel) is not _JIT_FUNCTION:
        stats["triton"] += 1
        kernel[grid](*args, **kwargs)
        return
    if args:
        kwargs = {**dict(zip(kernel.arg_names, args)), **kwargs}
    device = torch.cuda.current_device()
    key = (id(kernel), device, tuple(kwargs), specialization_key(kwargs))
    try:
        entry = _cache.get(key)
    except TypeError:  # an argument of a class the key does not cover
        entry = key = None
    if entry is None or _hooks_registered(kernel):
        _triton_launch(kernel, grid, kwargs, key)
        return
    compiled, params_in_order, defaults = entry
    args = params_in_order({**defaults, **kwargs} if defaults else kwargs)
    n = len(grid)
    compiled.run(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1,
                 torch._C._cuda_getCurrentRawStream(device), compiled.function, compiled.packed_metadata,
                 None, None, None, *args)
    stats["direct"] += 1
