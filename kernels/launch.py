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
conv1d_silu_bidir, bimamba_scan) and of its training step (bimamba_scan_fwd_save, bimamba_scan_bwd,
conv1d_silu_bidir_bwd, add_rmsnorm_bwd) remember, per call signature (inputs' shapes, strides, dtypes, alignment
and aliasing, the scalars), the launches a call made, and a later call with that signature hands them to the
compiled kernels at once: no checks, launch configuration, argument dicts or specialization key. A launcher that
allocates buffers laid out by its launch configuration (partials, scratch) records their layouts with the call
(`record(..., extra=)`, `BufferSpec`) and allocates them from those before a replay; a launcher whose own
allocations are scratch (the chunk-parallel scan's link states) says so (`record(..., scratch=True)`) and a replay
allocates them again from their recorded layouts; a launch may take a view of a call's tensor at an offset. A
call that does any other device work (a copy, a fill, a GEMM) is never recorded. `call_replay(False)` or
VIMBENCH_CALL_REPLAY=0 turns this off. Measured: kernels/NOTES.md, "Replayed calls".

Launch sequences (`record_launches`, `LaunchSequence`): a whole block of launches (the model's eager front path,
all its layers) recorded once and replayed as one fixed list of compiled-kernel launches, with the block's buffers
kept alive and its input's address read at each replay; none of the launchers' Python runs then. The caller keys
and validates what the sequence depends on (vimbench.models.vim.FrontPlan). Measured: kernels/NOTES.md,
"Session aa".
"""
from __future__ import annotations

import contextlib
import operator
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import triton
from torch.utils._python_dispatch import TorchDispatchMode

# Triton versions whose CompiledKernel.run(gridX, gridY, gridZ, stream, function, packed_metadata,
# launch_metadata, enter_hook, exit_hook, *args) convention the GPU tests checked (tests/kernels/test_launch.py).
FAST_TRITON_VERSIONS = ("3.6.",)
# Entries kept before the cache starts over (a sweep over many shapes adds one per shape and launch site).
MAX_CACHED = 4096
# Failed recordings of one call signature, for a reason of the call itself, after which CallMemo stops recording it
# (two: a launcher's first call may do one-off work, a lazily built constant, that later calls do not).
REFUSE_AFTER = 2

_enabled = os.environ.get("VIMBENCH_FAST_LAUNCH", "1") != "0" and triton.__version__.startswith(
    FAST_TRITON_VERSIONS)
_cache: dict[tuple, tuple] = {}
_JIT_FUNCTION = triton.runtime.jit.JITFunction
_TRITON_RUNTIME = getattr(getattr(triton, "knobs", None), "runtime", None)
# launches by path, replayed calls (CallMemo), replayed launch sequences (LaunchSequence), since import
stats = {"direct": 0, "triton": 0, "replayed": 0, "sequences": 0}
_replay = os.environ.get("VIMBENCH_CALL_REPLAY", "1") != "0"  # CallMemo replays (`call_replay`)
_on_gpu = operator.attrgetter("is_cuda")  # which tensors a replayed call may take (CPU tests widen it)
_local = threading.local()  # .recording: the launches of the call this thread's `CallMemo.record` is recording;
# .sequence: those of the block this thread's `record_launches` is recording


def fast_launch_enabled() -> bool:
    return _enabled


def replays_enabled(t: torch.Tensor | None = None) -> bool:
    """Whether recorded launches may be replayed (CallMemo, LaunchSequence): the direct path and replays are on,
    and no launch hook is registered; with t, also for launches on t's device."""
    return _enabled and _replay and (t is None or _on_gpu(t)) and not _hooks_registered(None)


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
    if (getattr(_local, "sequence", None) is not None or getattr(_local, "recording", None) is not None) \
            and not getattr(_local, "launching", False):
        _local.launching = True  # a recorded block's or call's launch: its own tensor work (the interpreter's) is
        try:                     # no device work besides the launch (`_DeviceWorkSeen`)
            return launch(kernel, grid, *args, **kwargs)
        finally:
            _local.launching = False
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
        recording, sequence = getattr(_local, "recording", None), getattr(_local, "sequence", None)
        if recording is not None or sequence is not None:
            entry = None if key is None or _hooks_registered(kernel) else _cache.get(key)
            made = None if entry is None else (kernel, entry[0], _grid3(grid), entry[1]({**entry[2], **kwargs}))
            for launches in (recording, sequence):
                if launches is not None:
                    launches.append(made)
        return
    compiled, params_in_order, defaults = entry
    args = params_in_order({**defaults, **kwargs} if defaults else kwargs)
    grid = _grid3(grid)
    compiled.run(*grid, torch._C._cuda_getCurrentRawStream(device), compiled.function, compiled.packed_metadata,
                 None, None, None, *args)
    stats["direct"] += 1
    recording, sequence = getattr(_local, "recording", None), getattr(_local, "sequence", None)
    if recording is not None:
        recording.append((kernel, compiled, grid, args))
    if sequence is not None:
        sequence.append((kernel, compiled, grid, args))


def _grid3(grid: tuple[int, ...]) -> tuple[int, int, int]:
    n = len(grid)
    return grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1


def _not_replayable() -> None:
    """A launch inside a recorded call that cannot be replayed (Triton's path without a cache entry)."""
    for launches in (getattr(_local, "recording", None), getattr(_local, "sequence", None)):
        if launches is not None:
            launches.append(None)


@dataclass(frozen=True)
class BufferSpec:
    """The layout of a buffer that a replayed launcher allocates before its launches (a `CallMemo` recording's
    extra): `make` gives torch.empty_strided(shape, stride, dtype) on a device, zero-filled if `zero`."""
    shape: tuple
    stride: tuple
    dtype: torch.dtype
    zero: bool = False

    @classmethod
    def of(cls, t: torch.Tensor, zero: bool = False) -> BufferSpec:
        return cls(tuple(t.shape), t.stride(), t.dtype, zero)

    def make(self, device) -> torch.Tensor:
        t = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=device)
        return t.zero_() if self.zero else t


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

    A call is recorded only if each of its launches took (or set up) the direct path, it did no device work
    besides them, and each tensor it passed is one of `tensors` by identity or address, a view at an offset into
    the only one of them in its storage, or (with `record(..., scratch=True)`) a buffer the launcher allocated
    itself; anything else (a cast, a copy) makes the call not replayable: it runs the usual way every time. The
    memo keeps no tensors. Replays happen only while the direct path is on (`fast_launch`) and no launch hook is
    registered; a stream capture is part of the signature. Module-level launch knobs (e.g. `fwd.DEFAULT_L1_AHEAD`)
    are not: an A/B script that changes one at run time must do so under `call_replay(False)` (or `clear()` the
    memos), or the calls it times replay the launches recorded before the change."""

    def __init__(self, name: str):
        self.name = name
        self._plans: dict[tuple, tuple] = {}
        self._extras: dict[tuple, Any] = {}
        # signature -> recordings that failed for a reason of the call itself (device work, a tensor made inside);
        # at REFUSE_AFTER such failures the signature is no longer recorded (`record`)
        self._failures: dict[tuple, int] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def extra(self, sig: tuple | None) -> Any:
        """What the recording of this signature's call kept beside its launches (`record`'s extra), or None."""
        return self._extras.get(sig) if sig is not None else None

    def clear(self) -> None:
        self._plans.clear()
        self._extras.clear()
        self._failures.clear()

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
                or getattr(_local, "sequence", None) is not None or _hooks_registered(None):
            return False  # (an outer call or sequence being recorded must see every launch go through `launch`)
        steps, scratch = plan
        if any(kernel.pre_run_hooks for kernel, *_ in steps):
            return False
        stream = torch._C._cuda_getCurrentRawStream(sig[1])
        made = [spec.make(next(t for t in tensors if t is not None).device) for spec in scratch] if scratch else ()
        for _, compiled, grid, args, slots, views in steps:
            args = args.copy()
            for position, index in slots:
                args[position] = tensors[index]
            for position, source, index, offset, shape, stride in views:
                base = made[index] if source else tensors[index]
                args[position] = _view_arg(base, offset, shape, stride, address=base.is_cuda)
            compiled.run(*grid, stream, compiled.function, compiled.packed_metadata, None, None, None, *args)
        stats["replayed"] += 1
        return True

    @contextlib.contextmanager
    def record(self, sig: tuple | None, tensors: tuple, extra: Any = None, scratch: bool = False) -> Iterator[None]:
        """Run the block (the launcher's usual path) and keep its launches under `sig` if they can be replayed,
        with `extra` (anything the launcher decided from the signature alone and needs before a replay: the
        layout of buffers that it allocates and passes in `tensors`, say; `extra(sig)` returns it).

        A call that does device work besides its launches (an aten op that is neither an allocation nor a view: a
        copy, a fill, a GEMM) is not kept: a replay would leave that work out. A launch may take a view of one of
        `tensors` at an offset (a slice of an output). scratch=True: buffers the block allocates itself
        (torch.empty and kin) and passes to its launches are its scratch, dead once the call returns; a replay
        allocates them again from their recorded layouts. Without it such a buffer makes the call not replayable.

        A signature whose recordings failed REFUSE_AFTER times for a reason of the call itself (device work, a
        tensor made inside) is not recorded again until `clear`: it runs the usual way, without the recording's
        cost (the device-work check costs ~100 us per call on this CPU)."""
        outer = getattr(_local, "recording", None)
        if sig is None or outer is not None or self._failures.get(sig, 0) >= REFUSE_AFTER:
            if outer is not None:  # nested launchers: the outer call records nothing
                outer.append(None)
            yield
            return
        _local.recording = launches = []
        seen, made = [], []
        try:
            with _DeviceWorkSeen(seen, made if scratch else None):
                yield
        finally:
            _local.recording = None
        plan = None if seen else _plan(launches, tensors, made)
        if plan is None:
            if seen or (launches and None not in launches):  # (not a launch that missed the direct path)
                if len(self._failures) >= MAX_CACHED:
                    self._failures.clear()
                self._failures[sig] = self._failures.get(sig, 0) + 1
            return
        if len(self._plans) >= MAX_CACHED:
            self.clear()
        self._plans[sig] = plan
        if extra is not None:
            self._extras[sig] = extra


def _plan(launches: list, tensors: tuple, made: list = ()) -> tuple | None:
    """The replay plan of a recorded call: (per launch (kernel, compiled, grid, arguments with its tensors taken
    out, (position, index into tensors) of each, the view slots `_view_slot` made), the BufferSpecs of the scratch
    buffers the view slots of source 1 index); None if the call cannot be replayed."""
    if not launches or any(entry is None for entry in launches):
        return None
    ptrs = [None if t is None else t.data_ptr() for t in tensors]
    scratch: list = []
    steps = []
    for kernel, compiled, grid, args in launches:
        args, slots, views = list(args), [], []
        for position, value in enumerate(args):
            if value.__class__ not in _TENSOR_CLASSES:
                continue
            index = next((i for i, t in enumerate(tensors) if t is value), None)
            if index is None:
                p = value.data_ptr()
                index = next((i for i, q in enumerate(ptrs) if q == p), None)
            if index is not None:
                slots.append((position, index))
            else:
                view = _view_slot(position, value, tensors, made, scratch)
                if view is None:
                    return None  # made inside the launcher, not as scratch: its address changes from call to call
                views.append(view)
            args[position] = None
        steps.append((kernel, compiled, grid, args, tuple(slots), tuple(views)))
    return tuple(steps), tuple(spec for _, spec in scratch)


def _view_slot(position: int, value: torch.Tensor, tensors: tuple, made: list, scratch: list) -> tuple | None:
    """A launch argument that is a view of one of the call's tensors (source 0: the only one in its storage, so
    that the view's offset from it is a function of the signature) or of a scratch buffer the call made (source
    1; `scratch` collects (buffer, BufferSpec) once per buffer): (position, source, index, element offset from
    the base's start, shape, strides); None if it is neither, or has another dtype than its base."""
    storage = value.untyped_storage().data_ptr()
    bases = [i for i, t in enumerate(tensors) if t is not None and t.untyped_storage().data_ptr() == storage]
    if bases:
        if len(bases) > 1 or tensors[bases[0]].dtype != value.dtype:
            return None
        source, index, base = 0, bases[0], tensors[bases[0]]
    else:
        base = next((t for t in made if t.untyped_storage().data_ptr() == storage), None)
        if base is None or base.dtype != value.dtype:
            return None
        source = 1
        index = next((i for i, (t, _) in enumerate(scratch) if t is base), None)
        if index is None:
            index = len(scratch)
            scratch.append((base, BufferSpec.of(base)))
    return position, source, index, value.storage_offset() - base.storage_offset(), tuple(value.shape), \
        value.stride()


def _view_arg(base: torch.Tensor, offset: int, shape: tuple, stride: tuple, address: bool) -> torch.Tensor | int:
    """A replayed launch's view argument: the view of `base` that starts `offset` elements after base's own start
    (not its storage's), with these shape and strides. address=True (CUDA: the compiled launchers take a device
    pointer as an int): that view's address, without making the view; else the view itself (the interpreter)."""
    if address:
        return base.data_ptr() + offset * base.element_size()
    return base.as_strided(shape, stride, base.storage_offset() + offset)


class _DeviceWorkSeen(TorchDispatchMode):
    """Inside `record_launches` and `CallMemo.record`: notes every aten op that may compute (anything but
    allocations and views that really alias their input), since a replay holds the Triton launches only and would
    leave it out; with `made`, keeps the tensors allocated (a CallMemo call's scratch)."""

    ALLOCATIONS = frozenset({torch.ops.aten.empty.memory_format, torch.ops.aten.empty_strided.default,
                             torch.ops.aten.empty_like.default, torch.ops.aten.new_empty.default,
                             torch.ops.aten.new_empty_strided.default})

    def __init__(self, seen: list, made: list | None = None):
        super().__init__()
        self.seen, self.made = seen, made

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(_local, "launching", False):
            return out
        if func in self.ALLOCATIONS:
            if self.made is not None:
                self.made.append(out)
            return out
        base = args[0] if args and isinstance(args[0], torch.Tensor) else None
        outs = out if isinstance(out, (tuple, list)) else (out,)
        aliases = func.is_view and base is not None and all(
            isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
            for t in outs)  # (reshape and to are alias-annotated but copy when they must)
        if not aliases:
            self.seen.append(str(func))
        return out


@contextlib.contextmanager
def record_launches() -> Iterator[list]:
    """Run the block as usual and collect, in order, every Triton launch it makes through `launch` as (kernel,
    compiled, grid, arguments in parameter order), or None for a launch that took Triton's path uncached, or for
    any other device work (an aten op that is not an allocation or a view: a GEMM, a copy), which a replay of the
    launches would leave out. CallMemo replays are off inside (their launches are collected one by one)."""
    if getattr(_local, "sequence", None) is not None:
        raise RuntimeError("record_launches blocks do not nest")
    _local.sequence = launches = []
    seen: list = []
    try:
        with _DeviceWorkSeen(seen):
            yield launches
    finally:
        _local.sequence = None
    launches.extend([None] * len(seen))


class LaunchSequence:
    """A block's Triton launches (`record_launches`), replayed later as one fixed sequence on the stream it was
    recorded on: the compiled kernels get the recorded grids and arguments, except the `inputs`, whose
    addresses are read at each replay. It skips every launcher's Python (checks, launch configuration, argument
    lists, CallMemo signatures): an eager forward's launches at the cost of the compiled launchers alone.

    The sequence keeps the tensors its launches read or write alive (its `owned` ones: buffers and weights) and
    hands their addresses to the launchers as integers. Whoever replays it answers for the rest: the inputs have
    the shapes, strides, dtypes and alignment they had at recording, the owned tensors still hold what the
    launches should read (a weight updated in place is seen; a replaced one is not), and no replay of the same
    sequence runs on another stream at the same time (the buffers are shared). `build` returns None where a
    sequence cannot stand for the block: a launch that was not cached, device work besides the launches, a
    tensor neither owned nor an input (a temporary a launcher made: its memory is gone after the block), a launch
    hook, the direct path or replays off."""

    def __init__(self, steps: list, slots: tuple, owned: tuple, stream: int):
        self._steps, self._slots, self._owned = steps, slots, owned
        self.stream = stream

    def __len__(self) -> int:
        return len(self._steps)

    @classmethod
    def build(cls, launches: list, inputs: tuple, owned: tuple) -> LaunchSequence | None:
        if not launches or any(entry is None for entry in launches) or not (_enabled and _replay) \
                or _hooks_registered(None) or any(kernel.pre_run_hooks for kernel, *_ in launches):
            return None
        owned = tuple(t for t in owned if t is not None)
        owned_storages = {t.untyped_storage().data_ptr() for t in owned if t.numel()}
        input_ptrs = [t.data_ptr() for t in inputs]
        stream = torch._C._cuda_getCurrentRawStream(torch.cuda.current_device())
        steps, slots = [], []
        for step, (kernel, compiled, grid, args) in enumerate(launches):
            args = list(args)
            for position, value in enumerate(args):
                if value.__class__ not in _TENSOR_CLASSES:
                    continue
                storage = value.untyped_storage().data_ptr()
                index = next((i for i, t in enumerate(inputs) if t.untyped_storage().data_ptr() == storage), None)
                if index is not None:
                    offset = value.data_ptr() - input_ptrs[index]
                    if not value.is_cuda and (value is not inputs[index]):
                        return None  # an interpreted kernel takes the tensor itself, not an address
                    slots.append((step, position, index, offset))
                elif storage in owned_storages or value.numel() == 0:
                    args[position] = value.data_ptr() if value.is_cuda else value
                else:
                    return None
            steps.append(_step(compiled, grid, stream, args))
        return cls(steps, tuple(slots), owned, stream)

    def replay(self, inputs: tuple) -> None:
        """Launch the sequence with these inputs (class docstring: what the caller answers for)."""
        steps = self._steps
        if self._slots:
            steps = list(steps)
            for step, position, index, offset in self._slots:
                run, args = steps[step]
                if args is self._steps[step][1]:
                    args = list(args)
                    steps[step] = (run, args)
                t = inputs[index]
                args[position + _ARGS_AT[run is not None]] = t.data_ptr() + offset if t.is_cuda else t
        for run, args in steps:
            (run or _run_compiled)(*args)
        stats["sequences"] += 1


# A step's callable and its positional arguments: the CUDA launcher's own C function where the compiled kernel
# needs no scratch memory (triton 3.6's CudaLauncher.launch(gridX, gridY, gridZ, stream, function, cooperative, pdl,
# global_scratch, profile_scratch, packed_metadata, launch_metadata, enter_hook, exit_hook, *args)), else
# CompiledKernel.run with launch.py's usual arguments (`_run_compiled`). _ARGS_AT: where the kernel's arguments
# start in each form (True: the launcher's C function).
_ARGS_AT = {True: 13, False: 5}


def _step(compiled, grid: tuple, stream: int, args: list) -> tuple:
    launcher = compiled.run
    c_launch = getattr(launcher, "launch", None)
    if c_launch is not None and getattr(launcher, "global_scratch_size", 1) == 0 \
            and getattr(launcher, "profile_scratch_size", 1) == 0:
        return c_launch, (*grid, stream, compiled.function, launcher.launch_cooperative_grid, launcher.launch_pdl,
                          None, None, compiled.packed_metadata, None, None, None, *args)
    return None, (compiled, *grid, stream, *args)


def _run_compiled(compiled, gx, gy, gz, stream, *args) -> None:
    compiled.run(gx, gy, gz, stream, compiled.function, compiled.packed_metadata, None, None, None, *args)
