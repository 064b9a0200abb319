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

Replayed calls (`CallMemo`): on top of the direct path, the eager launchers of the Vim forward (add_rmsnorm,
conv1d_silu_bidir, bimamba_scan) remember, per call signature (inputs' shapes, strides, dtypes, alignment and
aliasing, the scalars), the launches a call made, and a later call with that signature hands them to the compiled
kernels at once: no checks, launch configuration, argument dicts or specialization key. `call_replay(False)` or
VIMBENCH_CALL_REPLAY=0 turns this off. Measured: kernels/NOTES.md, "Replayed calls".
"""
from __future__ import annotations

import contextlib
import operator
import os
import threading
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
stats = {"direct": 0, "triton": 0, "replayed": 0}  # launches by path, replayed calls (CallMemo), since import
_replay = os.environ.get("VIMBENCH_CALL_REPLAY", "1") != "0"  # CallMemo replays (`call_replay`)
_on_gpu = operator.attrgetter("is_cuda")  # which tensors a replayed call may take (CPU tests widen it)
_local = threading.local()  # .recording: the launches of the call this thread's `CallMemo.record` is recording


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


@contextlib.contextmanager
def call_replay(enabled: bool) -> Iterator[None]:
    """Turn replayed calls (CallMemo) on or off inside the block (A/B measurements, tests); they also need the
    direct path. VIMBENCH_CALL_REPLAY=0 turns them off for the process."""
    global _replay
    before, _replay = _replay, bool(enabled)
    try:
        yield
    finally:
        _replay = before


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
    """Whether a launch hook is registered: Triton's global enter/exit hooks, or the kernel's pre-run hooks
    (kernel None: the global ones only)."""
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
        _not_replayable()
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
        recording = getattr(_local, "recording", None)
        if recording is not None:
            entry = None if key is None or _hooks_registered(kernel) else _cache.get(key)
            recording.append(None if entry is None else
                             (kernel, entry[0], _grid3(grid), entry[1]({**entry[2], **kwargs})))
        return
    compiled, params_in_order, defaults = entry
    args = params_in_order({**defaults, **kwargs} if defaults else kwargs)
    grid = _grid3(grid)
    compiled.run(*grid, torch._C._cuda_getCurrentRawStream(device), compiled.function, compiled.packed_metadata,
                 None, None, None, *args)
    stats["direct"] += 1
    recording = getattr(_local, "recording", None)
    if recording is not None:
        recording.append((kernel, compiled, grid, args))


def _grid3(grid: tuple[int, ...]) -> tuple[int, int, int]:
    n = len(grid)
    return grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1


def _not_replayable() -> None:
    """A launch inside a recorded call that cannot be replayed (Triton's path without a cache entry)."""
    recording = getattr(_local, "recording", None)
    if recording is not None:
        recording.append(None)


class CallMemo:
    """A launcher's calls, replayed: for a call signature (every input's shape, strides, dtype, address alignment
    and aliasing, the device, and the launcher's own scalar arguments: `signature`) seen before, the launches that
    call made, handed straight to the compiled kernels with this call's tensors. What a replay skips: the
    launcher's checks and launch configuration, its argument dicts and `launch`'s specialization key (kernels/
    NOTES.md, "Replayed calls").

    Use, in a launcher whose every launch argument is either one of `tensors` (or a view with the same address)
    or a function of the signature:

        tensors = (x, weight, out)                      # outputs allocated before
        sig = MEMO.signature(tensors, eps, flag)        # None where replay does not apply
        if MEMO.replay(sig, tensors):
            return out
        with MEMO.record(sig, tensors):
            ...the launcher's usual checks and launches...

    A call is recorded only if each of its launches took (or set up) the direct path and each tensor it passed
    is one of `tensors` by identity or address (a tensor made inside the launcher, a cast or a scratch buffer,
    makes the call not replayable: it runs the usual way every time). The memo keeps no tensors. Replays happen
    only while the direct path is on (`fast_launch`) and no launch hook is registered; a stream capture is part
    of the signature. Module-level launch knobs (e.g. `fwd.DEFAULT_L1_AHEAD`) are not: an A/B script that changes
    one at run time must do so under `call_replay(False)` (or `clear()` the memos), or the calls it times replay
    the launches recorded before the change."""

    def __init__(self, name: str):
        self.name = name
        self._plans: dict[tuple, tuple] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        self._plans.clear()

    @staticmethod
    def signature(tensors: tuple, *scalars: Any) -> tuple | None:
        """The call signature (class docstring), or None while the direct path or replays are off. A call on CPU
        tensors (the interpreter), fake tensors or other tensor subclasses is never recorded (its launches do not
        take the direct path), so its signature finds nothing to replay."""
        if not (_enabled and _replay):
            return None
        ptrs = [None if t is None else t.data_ptr() for t in tensors]
        # per input: class, device, shape, strides, dtype, address mod 16, the first input with the same address
        metas = tuple([None if t is None else (t.__class__, _on_gpu(t), t.shape, t.stride(), t.dtype, p & 15,
                                               ptrs.index(p)) for t, p in zip(tensors, ptrs)])
        return (scalars, torch.cuda.current_device(), torch.cuda.is_current_stream_capturing(), metas)

    def replay(self, sig: tuple | None, tensors: tuple) -> bool:
        """Launch what the call with this signature launched, with these tensors; False (nothing launched) when
        the signature was not recorded or replays are off."""
        plan = self._plans.get(sig) if sig is not None else None
        if plan is None or not (_enabled and _replay) or getattr(_local, "recording", None) is not None \
                or _hooks_registered(None):
            return False  # (an outer call being recorded must see every launch go through `launch`)
        if any(kernel.pre_run_hooks for kernel, *_ in plan):
            return False
        stream = torch._C._cuda_getCurrentRawStream(sig[1])
        for _, compiled, grid, args, slots in plan:
            args = args.copy()
            for position, index in slots:
                args[position] = tensors[index]
            compiled.run(*grid, stream, compiled.function, compiled.packed_metadata, None, None, None, *args)
        stats["replayed"] += 1
        return True

    @contextlib.contextmanager
    def record(self, sig: tuple | None, tensors: tuple) -> Iterator[None]:
        """Run the block (the launcher's usual path) and keep its launches under `sig` if they can be replayed."""
        outer = getattr(_local, "recording", None)
        if sig is None or outer is not None:  # nested launchers: the outer call records nothing
            if outer is not None:
                outer.append(None)
            yield
            return
        _local.recording = launches = []
        try:
            yield
        finally:
            _local.recording = None
        plan = _plan(launches, tensors)
        if plan is not None:
            if len(self._plans) >= MAX_CACHED:
                self._plans.clear()
            self._plans[sig] = plan


def _plan(launches: list, tensors: tuple) -> tuple | None:
    """The replay plan of a recorded call: per launch (kernel, compiled, grid, arguments with its tensors taken
    out, (position, index into tensors) of each); None if the call cannot be replayed."""
    if not launches or any(entry is None for entry in launches):
        return None
    ptrs = [None if t is None else t.data_ptr() for t in tensors]
    plan = []
    for kernel, compiled, grid, args in launches:
        args, slots = list(args), []
        for position, value in enumerate(args):
            if value.__class__ not in _TENSOR_CLASSES:
                continue
            index = next((i for i, t in enumerate(tensors) if t is value), None)
            if index is None:
                p = value.data_ptr()
                index = next((i for i, q in enumerate(ptrs) if q == p), None)
            if index is None:
                return None  # made inside the launcher: its address changes from call to call
            slots.append((position, index))
            args[position] = None
        plan.append((kernel, compiled, grid, args, tuple(slots)))
    return tuple(plan)
