"""kernels/launch.py: the direct launch path's cache (CPU, with a stand-in kernel that records how it was launched)
and, on the GPU, that the direct path gives the same outputs and gradients as Triton's own launches."""
from __future__ import annotations

import inspect
import os
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import kernels.launch as launch_mod
from kernels.launch import fast_launch, launch


def _signature(x_ptr, y_ptr, n, scale, BLOCK, FLAG=False):  # the stand-in kernel's parameters
    pass


class _Compiled:
    function, packed_metadata = "function", "packed"

    def __init__(self):
        self.direct = []

    def run(self, *args):
        self.direct.append(args)


class _Kernel:
    """Records Triton-path launches (kernel[grid](...)) and returns one compiled stand-in."""

    def __init__(self):
        self.signature = inspect.signature(_signature)
        self.arg_names = list(self.signature.parameters)
        self.pre_run_hooks = []
        self.compiled = _Compiled()
        self.triton = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.triton.append((grid, args, kwargs))
            return self.compiled
        return run


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setattr(launch_mod, "_JIT_FUNCTION", _Kernel)
    monkeypatch.setattr(launch_mod, "_enabled", True)
    monkeypatch.setattr(launch_mod, "_TRITON_RUNTIME", SimpleNamespace(
        launch_enter_hook=SimpleNamespace(calls=[]), launch_exit_hook=SimpleNamespace(calls=[])))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 1234, raising=False)
    launch_mod.clear_cache()
    yield _Kernel()
    launch_mod.clear_cache()


def _launch(kernel, x, y, n=5, scale=0.5, **extra):
    launch(kernel, (3, 2), x, y_ptr=y, n=n, scale=scale, BLOCK=4, num_warps=1, **extra)


def test_a_repeated_specialization_launches_directly_in_parameter_order(kernel):
    _launch(kernel, torch.zeros(8), torch.zeros(8))
    assert len(kernel.triton) == 1 and not kernel.compiled.direct
    x, y = torch.ones(8), torch.ones(16)  # new tensors, same dtype and alignment
    _launch(kernel, x, y)
    assert len(kernel.triton) == 1
    (call,) = kernel.compiled.direct
    assert call[:9] == (3, 2, 1, 1234, "function", "packed", None, None, None)
    assert call[9] is x and call[10] is y and call[11:] == (5, 0.5, 4, False)  # FLAG from its default


@pytest.mark.parametrize("change", ["dtype", "misaligned", "int value", "int as float", "extra argument",
                                    "launch option", "unknown class"])
def test_anything_that_can_change_the_specialization_takes_tritons_path(kernel, change):
    x, y = torch.zeros(8), torch.zeros(8)
    _launch(kernel, x, y)
    kwargs = {}
    if change == "dtype":
        x = x.to(torch.bfloat16)
    elif change == "misaligned":
        x = torch.zeros(9)[1:]  # 4 bytes past an aligned allocation
    elif change == "int value":
        kwargs["n"] = 6
    elif change == "int as float":
        kwargs["n"] = 5.0
    elif change == "extra argument":
        kwargs["FLAG"] = True
    elif change == "unknown class":
        kwargs["scale"] = SimpleNamespace()
    if change == "launch option":
        launch(kernel, (3, 2), x, y_ptr=y, n=5, scale=0.5, BLOCK=4, num_warps=2)
    else:
        _launch(kernel, x, y, **kwargs)
    assert len(kernel.triton) == 2 and not kernel.compiled.direct
    if change == "unknown class":  # never cached: Triton's path every time
        _launch(kernel, x, y, **kwargs)
        assert len(kernel.triton) == 3 and not kernel.compiled.direct


def test_registered_hooks_and_the_switch_send_launches_through_triton(kernel, monkeypatch):
    x, y = torch.zeros(8), torch.zeros(8)
    _launch(kernel, x, y)
    launch_mod._TRITON_RUNTIME.launch_enter_hook.calls.append(print)
    _launch(kernel, x, y)
    launch_mod._TRITON_RUNTIME.launch_enter_hook.calls.clear()
    kernel.pre_run_hooks.append(print)
    _launch(kernel, x, y)
    kernel.pre_run_hooks.clear()
    with fast_launch(False):
        _launch(kernel, x, y)
    assert len(kernel.triton) == 4 and not kernel.compiled.direct
    _launch(kernel, x, y)
    assert len(kernel.compiled.direct) == 1


def test_the_direct_path_refuses_unchecked_triton_versions(monkeypatch):
    monkeypatch.setattr(launch_mod, "FAST_TRITON_VERSIONS", ("0.0.",))
    with pytest.raises(RuntimeError, match="checked for triton"):
        with fast_launch(True):
            pass


# CallMemo: calls replayed by signature

@pytest.fixture
def memo(kernel, monkeypatch):
    monkeypatch.setattr(launch_mod, "_on_gpu", lambda t: True)  # CPU tensors stand in for CUDA ones
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    return launch_mod.CallMemo("stand-in")


def _launcher(memo, kernel, x, out, scale=0.5, made_inside=False):
    """A launcher in the shape CallMemo expects: one launch with x, a view of out, ints from the shapes."""
    tensors = (x, out)
    sig = memo.signature(tensors, scale)
    if memo.replay(sig, tensors):
        return "replayed"
    with memo.record(sig, tensors):
        y = torch.zeros_like(out) if made_inside else out.view(-1)  # a view: the same address as out
        launch(kernel, (x.shape[0],), x, y_ptr=y, n=x.shape[0], scale=scale, BLOCK=4, num_warps=1)
    return "launched"


def test_a_recorded_call_replays_with_the_new_calls_tensors(memo, kernel):
    assert _launcher(memo, kernel, torch.zeros(8), torch.zeros(8)) == "launched"  # Triton's path, recorded
    launches = len(kernel.triton), len(kernel.compiled.direct)
    x, out = torch.ones(8), torch.ones(8)
    replayed = launch_mod.stats["replayed"]
    assert _launcher(memo, kernel, x, out) == "replayed"
    assert launch_mod.stats["replayed"] == replayed + 1 and len(kernel.triton) == launches[0]
    assert len(kernel.compiled.direct) == launches[1] + 1 and launches == (1, 0)
    call = kernel.compiled.direct[-1]
    assert call[:9] == (8, 1, 1, 1234, "function", "packed", None, None, None)
    assert call[9] is x and call[10] is out and call[11:] == (8, 0.5, 4, False)


@pytest.mark.parametrize("change", ["shape", "stride", "dtype", "misaligned", "aliased", "scalar"])
def test_a_call_with_another_signature_is_not_replayed(memo, kernel, change):
    _launcher(memo, kernel, torch.zeros(8), torch.zeros(8))
    x, out, scale = torch.zeros(8), torch.zeros(8), 0.5
    if change == "shape":
        x = torch.zeros(16)
    elif change == "stride":
        x = torch.zeros(16)[::2]
    elif change == "dtype":
        out = out.to(torch.bfloat16)
    elif change == "misaligned":
        x = torch.zeros(9)[1:]
    elif change == "aliased":
        out = x
    elif change == "scalar":
        scale = 0.25
    assert _launcher(memo, kernel, x, out, scale) == "launched"


def test_calls_that_cannot_be_replayed_are_not_recorded(memo, kernel):
    x, out = torch.zeros(8), torch.zeros(8)
    for _ in range(3):  # a tensor made inside the launcher: its address is new on every call
        assert _launcher(memo, kernel, x, out, made_inside=True) == "launched"
    assert len(memo) == 0
    with pytest.raises(RuntimeError, match="boom"):  # a call that raised
        with memo.record(memo.signature((x, out)), (x, out)):
            launch(kernel, (8,), x, y_ptr=out, n=8, scale=0.5, BLOCK=4, num_warps=1)
            raise RuntimeError("boom")
    assert len(memo) == 0
    with memo.record(memo.signature((x, out)), (x, out)):
        pass  # no launch
    assert len(memo) == 0


def test_a_recording_keeps_its_extra_only_with_a_replayable_plan(memo, kernel):
    """`record(..., extra=)`: what a launcher decided from the signature (a buffer's layout, here) comes back from
    `extra(sig)` once the call was recorded, a buffer made from it replays like the recorded one, and a call that
    cannot be replayed, or `clear`, keeps none."""
    x = torch.zeros(8)
    sig = memo.signature((x,), "extra")
    assert memo.extra(sig) is None and memo.extra(None) is None
    out = torch.zeros(8)
    with memo.record(sig, (x, out), extra=launch_mod.BufferSpec.of(out)):
        launch(kernel, (8,), x, y_ptr=out, n=8, scale=0.5, BLOCK=4, num_warps=1)
    spec = memo.extra(sig)
    assert spec == launch_mod.BufferSpec((8,), (1,), torch.float32)
    made = spec.make(x.device)
    assert made.shape == (8,) and made.stride() == (1,) and made is not out
    assert memo.replay(sig, (x, made)) and kernel.compiled.direct[-1][10] is made
    zeroed = launch_mod.BufferSpec((2, 3), (1, 2), torch.float32, zero=True).make("cpu")
    assert zeroed.stride() == (1, 2) and torch.equal(zeroed, torch.zeros(2, 3))
    memo.clear()
    assert memo.extra(sig) is None
    with memo.record(sig, (x,), extra="not kept"):  # out is not among the tensors: not replayable
        launch(kernel, (8,), x, y_ptr=torch.zeros(8), n=8, scale=0.5, BLOCK=4, num_warps=1)
    assert memo.extra(sig) is None and len(memo) == 0


def _scratch_launcher(memo, kernel, x, out, scratch=True):
    """A launcher that launches with a scratch buffer it allocates itself and a slice of out at an offset."""
    tensors = (x, out)
    sig = memo.signature(tensors)
    if memo.replay(sig, tensors):
        return "replayed"
    with memo.record(sig, tensors, scratch=scratch):
        work = torch.empty(8)
        launch(kernel, (8,), work, y_ptr=out[4:], n=8, scale=0.5, BLOCK=4, num_warps=1)
    return "launched"


def test_scratch_buffers_and_offset_views_are_replayed(memo, kernel):
    """`record(..., scratch=True)`: a buffer the launcher allocates is allocated again, with the recorded layout,
    at every replay; a view at an offset into one of the call's tensors is taken at that offset from the new
    call's tensor. Without scratch=True the buffer makes the call not replayable."""
    x, out = torch.zeros(8), torch.zeros(12)
    assert _scratch_launcher(memo, kernel, x, out, scratch=False) == "launched"
    assert len(memo) == 0
    assert _scratch_launcher(memo, kernel, x, out) == "launched"
    recorded_work = kernel.compiled.direct[-1][9]  # (the first call took Triton's path, the second the direct one)
    new_out = torch.ones(12)
    assert _scratch_launcher(memo, kernel, x, new_out) == "replayed"
    call = kernel.compiled.direct[-1]
    work, y = call[9], call[10]
    assert work is not recorded_work and work.shape == (8,) and work.stride() == (1,) and work.dtype == x.dtype
    assert work.data_ptr() not in (x.data_ptr(), out.data_ptr(), new_out.data_ptr())
    assert y.data_ptr() == new_out.data_ptr() + 4 * new_out.element_size() and y.shape == (8,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_replayed_view_has_the_same_address_on_both_paths(dtype):
    """A view argument of a replay is an address on CUDA (`_view_arg(..., address=True)`) and a view on the
    interpreter; the GPU's form is checked here against the view's own address, with the offset in elements
    counted from a base that itself starts inside its storage (as `checkpoints[:, :, 1:]`'s base may)."""
    storage = torch.zeros(5, 3, 8, dtype=dtype)
    base = storage[1:]  # starts 24 elements into its storage
    view = base[:, 1:]  # (4, 2, 8) at 8 elements from base's start
    offset = view.storage_offset() - base.storage_offset()
    assert offset == 8
    as_view = launch_mod._view_arg(base, offset, tuple(view.shape), view.stride(), address=False)
    assert as_view.data_ptr() == view.data_ptr() and as_view.shape == view.shape
    assert as_view.stride() == view.stride()
    assert launch_mod._view_arg(base, offset, tuple(view.shape), view.stride(), address=True) == view.data_ptr()


@pytest.mark.parametrize("case", ["device work", "two bases", "other dtype"])
def test_calls_with_device_work_or_unclear_views_are_not_recorded(memo, kernel, case):
    """A call that computes with torch besides its launches (a replay would skip it), or that launches with a
    view whose base is not one clear tensor of the call, runs the usual way every time."""
    x, out = torch.zeros(8), torch.zeros(16)
    tensors = (x, out) if case != "two bases" else (x, out[:8], out[8:])
    for _ in range(2):
        with memo.record(memo.signature(tensors), tensors, scratch=True):
            if case == "device work":
                out.zero_()
                y = out
            elif case == "two bases":
                y = out[2:10]  # in the storage of both out[:8] and out[8:]
            else:
                y = out.view(torch.int32)[4:]
            launch(kernel, (8,), x, y_ptr=y, n=8, scale=0.5, BLOCK=4, num_warps=1)
    assert len(memo) == 0


def test_a_signature_that_keeps_failing_is_no_longer_recorded(memo, kernel, monkeypatch):
    """After REFUSE_AFTER recordings that failed for the call's own reason (device work here), a signature runs
    without recording (no device-work check on every call), even once its calls could be replayed; `clear`
    forgets that."""
    x, out = torch.zeros(8), torch.zeros(8)
    sig = memo.signature((x, out))
    entered = []
    monkeypatch.setattr(launch_mod, "_DeviceWorkSeen", lambda *a, real=launch_mod._DeviceWorkSeen: entered.append(1)
                        or real(*a))

    def call(device_work):
        with memo.record(sig, (x, out)):
            if device_work:
                out.zero_()
            launch(kernel, (8,), x, y_ptr=out, n=8, scale=0.5, BLOCK=4, num_warps=1)

    for _ in range(launch_mod.REFUSE_AFTER):
        call(device_work=True)
    assert len(memo) == 0 and len(entered) == launch_mod.REFUSE_AFTER
    call(device_work=False)
    assert len(memo) == 0 and len(entered) == launch_mod.REFUSE_AFTER
    memo.clear()
    call(device_work=False)
    assert len(memo) == 1 and memo.replay(sig, (x, out))


def test_replays_stop_with_the_direct_path_hooks_and_outer_recordings(memo, kernel):
    x, out = torch.zeros(8), torch.zeros(8)
    for _ in range(2):
        _launcher(memo, kernel, x, out)
    assert _launcher(memo, kernel, x, out) == "replayed"
    with fast_launch(False):
        assert _launcher(memo, kernel, x, out) == "launched"
    with launch_mod.call_replay(False):
        assert _launcher(memo, kernel, x, out) == "launched"
    kernel.pre_run_hooks.append(print)
    assert _launcher(memo, kernel, x, out) == "launched"
    kernel.pre_run_hooks.clear()
    launch_mod._TRITON_RUNTIME.launch_enter_hook.calls.append(print)
    assert _launcher(memo, kernel, x, out) == "launched"
    launch_mod._TRITON_RUNTIME.launch_enter_hook.calls.clear()
    outer = launch_mod.CallMemo("outer")
    with outer.record(outer.signature((x,)), (x,)):
        assert _launcher(memo, kernel, x, out) == "launched"  # an outer recording sees every launch
    assert len(outer) == 0  # and records nothing: a nested launcher's checks are its own
    assert _launcher(memo, kernel, x, out) == "replayed"


def test_the_memo_keeps_no_tensors(memo, kernel):
    import gc
    import weakref
    x, out = torch.zeros(8), torch.zeros(8)
    _launcher(memo, kernel, x, out)
    _launcher(memo, kernel, x, out)
    assert len(memo) == 1
    refs = [weakref.ref(x), weakref.ref(out)]
    kernel.compiled.direct.clear()
    kernel.triton.clear()  # the stand-in's own records of the launches
    del x, out
    gc.collect()
    assert all(r() is None for r in refs)


# LaunchSequence: a block's launches recorded once, replayed as one fixed sequence

def test_a_recorded_block_replays_its_launches_with_the_new_input(memo, kernel):
    x, out, weight = torch.zeros(8), torch.zeros(8), torch.ones(4)
    _launch(kernel, x, out)  # Triton's path: cached
    assert _launcher(memo, kernel, x, out) == "launched"
    with launch_mod.record_launches() as launches:
        _launch(kernel, x, out)
        assert _launcher(memo, kernel, x, out) == "launched", "no CallMemo replay inside: each launch is recorded"
        launch(kernel, (1,), weight, y_ptr=out[2:], n=5, scale=1.0, BLOCK=4, num_warps=1)
    sequence = launch_mod.LaunchSequence.build(launches, (x,), (out, weight))
    assert sequence is not None and len(sequence) == 3
    kernel.compiled.direct.clear()
    triton_before, sequences = len(kernel.triton), launch_mod.stats["sequences"]
    x2 = torch.ones(8)
    sequence.replay((x2,))
    assert len(kernel.triton) == triton_before and launch_mod.stats["sequences"] == sequences + 1
    first, second, third = kernel.compiled.direct
    assert first[:9] == (3, 2, 1, 1234, "function", "packed", None, None, None)
    # CPU tensors go in as themselves (CUDA ones as their addresses); the input is this replay's
    assert first[9] is x2 and first[10] is out and first[11:] == (5, 0.5, 4, False)
    assert second[:3] == (8, 1, 1) and second[9] is x2
    assert third[:3] == (1, 1, 1) and third[9] is weight and third[10].data_ptr() == out[2:].data_ptr()
    sequence.replay((x,))
    assert kernel.compiled.direct[-3][9] is x


@pytest.mark.parametrize("spoiler", ["uncached launch", "device work", "temporary", "replays off", "hook"])
def test_a_block_that_a_replay_would_not_reproduce_builds_no_sequence(memo, kernel, spoiler):
    x, out = torch.zeros(8), torch.zeros(8)
    _launch(kernel, x, out)
    with launch_mod.record_launches() as launches:
        _launch(kernel, x, out)
        if spoiler == "uncached launch":
            _launch(kernel, x, out, scale=SimpleNamespace())  # a class the cache key does not cover
        elif spoiler == "device work":
            x.view(2, 4).t().reshape(8)  # a reshape that copies: the sequence holds launches only
        elif spoiler == "temporary":
            _launch(kernel, x, torch.zeros(8))  # made inside the block: gone after it
    if spoiler == "hook":
        kernel.pre_run_hooks.append(print)
    with launch_mod.call_replay(spoiler != "replays off"):
        assert launch_mod.LaunchSequence.build(launches, (x,), (out,)) is None
    kernel.pre_run_hooks.clear()
    assert launch_mod.LaunchSequence.build(launches[:1], (x,), (out,)) is not None  # the first launch alone
    with launch_mod.record_launches() as views_only:
        _launch(kernel, x, out.view(2, 4).view(-1))  # views and allocations are no device work
        x.view(2, 4).transpose(0, 1), x.view(2, 4).reshape(8), x.to(torch.float32)
        torch.empty(3)
    assert launch_mod.LaunchSequence.build(views_only, (x,), (out,)) is not None


def test_recorded_blocks_do_not_nest(kernel):
    with launch_mod.record_launches():
        with pytest.raises(RuntimeError, match="do not nest"):
            with launch_mod.record_launches():
                pass


needs_interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                       reason="needs TRITON_INTERPRET=1 (the test setup sets it)")


@pytest.fixture
def interpreted_direct_path(monkeypatch):
    """The direct path and replays on CPU: launches of interpreted kernels are cached as if compiled, and the
    stand-in compiled kernel runs the interpreter with the positional arguments it is handed (so a replayed call
    computes for real)."""
    import operator
    from triton.runtime.interpreter import InterpretedFunction

    class Interpreted:
        function, packed_metadata = None, None

        def __init__(self, kernel):
            self.kernel = kernel

        def run(self, gx, gy, gz, stream, function, metadata, hook_meta, enter, exit, *args):
            self.kernel[(gx, gy, gz)](*args)

    def triton_launch(kernel, grid, kwargs, key):
        launch_mod.stats["triton"] += 1
        kernel[grid](**kwargs)
        params = inspect.signature(kernel.fn).parameters
        defaults = {n: p.default for n, p in params.items() if p.default is not p.empty and n not in kwargs}
        launch_mod._cache[key] = (Interpreted(kernel), operator.itemgetter(*params), defaults)

    monkeypatch.setattr(launch_mod, "_JIT_FUNCTION", InterpretedFunction)
    monkeypatch.setattr(launch_mod, "_enabled", True)
    monkeypatch.setattr(launch_mod, "_triton_launch", triton_launch)
    monkeypatch.setattr(launch_mod, "_on_gpu", lambda t: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 0, raising=False)
    launch_mod.clear_cache()
    yield
    launch_mod.clear_cache()


@needs_interpreter
def test_replayed_vim_forwards_equal_launched_ones(interpreted_direct_path):
    """A small Vim (depth 2, 5 tokens) on backend triton, interpreted, fp32 (the per-op path): the forward whose
    add_rmsnorm, conv1d and scan calls are all replayed gives the very outputs of the one that launched them."""
    from vimbench.models.vim import VisionMamba

    torch.manual_seed(0)
    model = VisionMamba(img_size=32, embed_dim=16, depth=2, num_classes=5, backend="triton").eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        with fast_launch(False):
            want = model(images)
        model(images)  # the direct path's first launches (Triton's path), recorded
        before = launch_mod.stats["replayed"]
        got = model(images)
    assert launch_mod.stats["replayed"] - before == 2 * 3 + 1  # per layer norm, conv, scan; the final norm
    assert torch.equal(want, got)


@needs_interpreter
@pytest.mark.parametrize("combine", [True, False])
def test_chunk_parallel_scans_replay_with_their_scratch(interpreted_direct_path, combine):
    """The chunk-parallel scan (forced: split=4, 11 tokens) allocates its link states as scratch, and with
    checkpoints saved every 4 tokens writes the entry states into a slice of the checkpoints: both calls are
    replayed (the scratch allocated again, the slice taken at its offset) and give the very outputs of Triton's
    launches, for new input values too."""
    from test_selective_scan import stack_directions
    from kernels.selective_scan import fwd

    def calls(x):
        out = None if combine else torch.empty_like(x["u"])  # (the halves need their buffer given to replay)
        scanned = fwd.bimamba_scan(**x, combine=combine, out=out, split=4)
        saved, checkpoints = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=4, split=4)
        return scanned.clone(), saved.clone(), checkpoints.clone()

    for seed in (0, 1):
        torch.manual_seed(seed)
        x = stack_directions(1, 5, 11)
        with fast_launch(False):
            want = calls(x)
        if seed == 0:
            calls(x)  # recorded
        before = launch_mod.stats["replayed"]
        got = calls(x)
        assert launch_mod.stats["replayed"] - before == 2
        for g, w in zip(got, want):
            assert torch.equal(g, w)


def _training_grads(model, images, labels, autocast_dtype=None):
    """The parameters' gradients of one training step (fresh, not accumulated), cloned."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# Replayed calls per layer of a training step (the fused training op): forward, the norm, the conv and the scan
# with checkpoints; backward, the norm and the conv recomputed, the scan's, the conv's and the norm's backward. Plus
# the final norm's forward and backward.
REPLAYS_PER_TRAIN_LAYER = 8


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # the scan's combined output / its halves
def test_replayed_training_steps_equal_launched_ones(interpreted_direct_path, dtype):
    """A tiny Vim (depth 2, 2 tokens) on backend triton, interpreted: a training step whose launchers (the
    forward's norm, conv and scan with checkpoints; the backward's recomputations and its scan, conv and norm
    backward) are all replayed, their buffers allocated from the recorded plans, gives the very gradients of the
    step that launched them through Triton; the first step with the direct path records, the next replays, also
    for new input values."""
    from vimbench.models.vim import VisionMamba

    torch.manual_seed(0)
    model = VisionMamba(img_size=16, embed_dim=8, depth=2, num_classes=3, backend="triton").to(dtype).train()
    images, labels = torch.randn(2, 3, 16, 16, dtype=dtype), torch.tensor([1, 2])
    with fast_launch(False):
        want = _training_grads(model, images, labels)
    _training_grads(model, images, labels)  # the direct path's first launches, recorded
    before = launch_mod.stats["replayed"]
    got = _training_grads(model, images, labels)
    assert launch_mod.stats["replayed"] - before == REPLAYS_PER_TRAIN_LAYER * len(model.layers) + 2
    for name, grad in want.items():
        assert torch.equal(got[name], grad), name
    images = torch.randn_like(images)  # new values, the same signatures: replayed with the new tensors
    with fast_launch(False):
        want = _training_grads(model, images, labels)
    got = _training_grads(model, images, labels)
    for name, grad in want.items():
        assert torch.equal(got[name], grad), name


@needs_interpreter
@pytest.mark.parametrize("conv_xproj", [True, False])  # the conv with x_proj as one launch, or as two
def test_the_front_path_replays_its_recorded_launches(interpreted_direct_path, monkeypatch, conv_xproj):
    """The bf16 front path (VisionMamba._forward_front) records its layers' launches once per key and replays
    them as one sequence: the same outputs as Triton's own launches, for new input values, after a norm weight
    changes in place (read by address), and after a mixer parameter changes (the mixer rebuilds its weights: the
    plan is recorded again); another batch is another key; a forward off the path, or a copy, keeps none."""
    import copy

    import vimbench.models.vim as vim

    monkeypatch.setattr(vim, "FRONT_CONV_XPROJ", conv_xproj)
    torch.manual_seed(0)
    model = vim.VisionMamba(img_size=32, embed_dim=16, depth=2, num_classes=5, backend="triton").eval()
    model = model.to(torch.bfloat16)

    def pair(images):
        with torch.inference_mode():
            with fast_launch(False):
                want = model(images)
            before = launch_mod.stats["sequences"]
            got = model(images)
            replayed = launch_mod.stats["sequences"] - before
        assert torch.equal(want, got)
        return replayed

    images = torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)
    assert pair(images) == 0, "the first forward records"
    plan = vim._FRONT_PLANS[model]
    per_layer = 3 if vim.FRONT_CONV_XPROJ else 4  # norm_in_proj, conv_xproj or the conv op and x_proj_rows, scan
    assert plan.sequence is not None and len(plan.sequence) == per_layer * len(model.layers)
    assert pair(images) == 1
    if conv_xproj:
        return  # the rest does not depend on the conv's form (CPU time: each interpreted forward takes ~1-2 s)
    images = torch.randn_like(images)
    with torch.no_grad():
        model.layers[1].norm.weight.mul_(0.5)
    assert pair(images) == 1 and vim._FRONT_PLANS[model] is plan, "new input values, a norm weight read by address"
    with torch.no_grad():
        model.layers[0].mixer.in_proj.weight.mul_(0.5)
    assert pair(images) == 0 and vim._FRONT_PLANS[model] is not plan, "new mixer weights: recorded again"
    assert vim._front_key(torch.zeros(2, 5, 16, dtype=torch.bfloat16), torch.bfloat16) != vim._FRONT_PLANS[model].key
    assert copy.deepcopy(model) not in vim._FRONT_PLANS, "a copy carries no plan"
    monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 0)
    with torch.inference_mode():
        model(images)
    assert model not in vim._FRONT_PLANS, "the buffers go with the first forward off the path"


@pytest.mark.gpu
@pytest.mark.skipif(not launch_mod.triton.__version__.startswith(launch_mod.FAST_TRITON_VERSIONS),
                    reason="the direct launch path is off for this Triton version")
def test_direct_launches_match_tritons_on_the_gpu():
    """Vim-Ti inference (batch 2 and 64: the small-grid and one-pass kernels), the chunk-parallel scan, and a
    bf16 training step (every backward kernel): the same outputs and gradients with and without the direct path,
    and the direct path was taken."""
    import vimbench
    from kernels.selective_scan.fwd import bimamba_scan
    from vimbench.kerneltools.kernel_ops import _scan_inputs
    from vimbench.kerneltools.registry import OpShape

    torch.manual_seed(0)
    model = vimbench.create_model("vim_t", img_size=224, backend="triton").cuda()
    scan_args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=2, channels=384, length=1025), torch.bfloat16,
                                                  "cuda")

    def run():
        outs = []
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            model.eval()
            for batch in (2, 64):
                outs.append(model(torch.randn(batch, 3, 224, 224, device="cuda",
                                              generator=torch.Generator("cuda").manual_seed(batch))))
        outs.append(bimamba_scan(**scan_args, split=128))
        model.train()
        model.zero_grad(set_to_none=True)
        images = torch.randn(4, 3, 224, 224, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            F.cross_entropy(model(images), torch.arange(4, device="cuda")).backward()
        outs += [p.grad.float().clone() for p in model.parameters()]
        return outs

    with fast_launch(False):
        want = run()
    with fast_launch(True):
        run()  # fills the cache
        before, replayed = launch_mod.stats["direct"], launch_mod.stats["replayed"]
        got = run()
        assert launch_mod.stats["direct"] > before and launch_mod.stats["replayed"] > replayed
    for w, g in zip(want, got):
        scale = w.float().abs().max().item() + 1e-12
        assert (w.float() - g.float()).abs().max().item() <= 1e-2 * scale


@pytest.mark.gpu
@pytest.mark.skipif(not launch_mod.triton.__version__.startswith(launch_mod.FAST_TRITON_VERSIONS),
                    reason="the direct launch path is off for this Triton version")
@pytest.mark.parametrize("train_boundary", ["fused", "fused-combined"])  # the scan's halves / combined output
def test_replayed_training_steps_match_tritons_launches_on_the_gpu(train_boundary):
    """Vim-Ti at 224 px, batch 8, bf16 autocast: a training step whose launchers all replay (8 calls per layer and
    the final norm's 2) gives the very gradients of Triton's own launches, for new input values too."""
    import vimbench

    torch.manual_seed(0)
    model = vimbench.create_model("vim_t", img_size=224, backend="triton",
                                  train_boundary=train_boundary).cuda().train()
    labels = torch.arange(8, device="cuda")
    for step in range(2):
        images = torch.randn(8, 3, 224, 224, device="cuda")
        with fast_launch(False):
            want = _training_grads(model, images, labels, torch.bfloat16)
        with fast_launch(True):
            _training_grads(model, images, labels, torch.bfloat16)  # recorded (first step), else replayed
            before = launch_mod.stats["replayed"]
            got = _training_grads(model, images, labels, torch.bfloat16)
        assert launch_mod.stats["replayed"] - before == REPLAYS_PER_TRAIN_LAYER * len(model.layers) + 2
        for name, grad in want.items():
            assert torch.equal(got[name], grad), f"step {step}: {name}"


@pytest.mark.gpu
@pytest.mark.skipif(not launch_mod.triton.__version__.startswith(launch_mod.FAST_TRITON_VERSIONS),
                    reason="the direct launch path is off for this Triton version")
@pytest.mark.parametrize("combine", [True, False])
def test_chunk_parallel_scans_replay_on_the_gpu(combine):
    """Vim-Ti's scan at 1248 px, batch 8, bf16 (E = 384, L = 6085: the automatic chunk-parallel path): the
    inference scan and the training forward's scan with checkpoints (entry states written into them) replay
    with their scratch allocated again, and give the very outputs of Triton's own launches, for new values too."""
    from kernels.selective_scan import fwd
    from kernels.selective_scan.op import CHECKPOINT_CHUNK
    from vimbench.kerneltools.kernel_ops import _scan_inputs
    from vimbench.kerneltools.registry import OpShape

    def calls(x):
        out = None if combine else torch.empty_like(x["u"])
        scanned = fwd.bimamba_scan(**x, combine=combine, out=out)
        # (the model's checkpoint interval: the chunks are as long, so the entry states are the checkpoints)
        saved, checkpoints = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=CHECKPOINT_CHUNK)
        return scanned.clone(), saved.clone(), checkpoints.clone()

    x = _scan_inputs(dirs=2)(OpShape(batch=8, channels=384, length=6085), torch.bfloat16, "cuda")
    x.pop("combine", None)
    for seed in (0, 1):
        if seed:
            x["u"].mul_(-0.5)  # new values in the same tensors
        with fast_launch(False):
            want = calls(x)
        with fast_launch(True):
            calls(x)  # recorded (first seed), else replayed
            before = launch_mod.stats["replayed"]
            got = calls(x)
        assert launch_mod.stats["replayed"] - before == 2
        for g, w in zip(got, want):
            assert torch.equal(g, w), f"seed {seed}"


@pytest.mark.gpu
@pytest.mark.skipif(not launch_mod.triton.__version__.startswith(launch_mod.FAST_TRITON_VERSIONS),
                    reason="the direct launch path is off for this Triton version")
@pytest.mark.parametrize("conv_xproj", [True, False])
def test_front_path_replays_match_tritons_launches_on_the_gpu(monkeypatch, conv_xproj):
    """Vim-Ti at 224 px, batch 1 and 8, bf16 autocast: the front path's replayed sequence (through the CUDA
    launcher's C function, addresses as integers) gives the very logits of Triton's own launches, for new input
    values and after a norm weight changes in place; on a side stream it records a plan of its own."""
    import vimbench
    import vimbench.models.vim as vim

    monkeypatch.setattr(vim, "FRONT_CONV_XPROJ", conv_xproj)
    torch.manual_seed(0)
    model = vimbench.create_model("vim_t", img_size=224, backend="triton").cuda().eval()

    def forward(images, fast=True):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16), fast_launch(fast):
            return model(images).float()

    for batch in (1, 8):
        images = torch.randn(batch, 3, 224, 224, device="cuda")
        for _ in range(2):
            forward(images)  # Triton's first launches, then the recorded plan
        plan = vim._FRONT_PLANS[model]
        per_layer = 3 if vim.FRONT_CONV_XPROJ else 4
        assert plan.sequence is not None and len(plan.sequence) == per_layer * len(model.layers)
        assert all(run is not None for run, _ in plan.sequence._steps), "the launcher's C function, no scratch"
        for step in range(3):
            if step == 1:
                images = torch.randn_like(images)
            if step == 2:
                with torch.no_grad():
                    model.layers[5].norm.weight.mul_(1.5)
            want = forward(images, fast=False)
            sequences = launch_mod.stats["sequences"]
            got = forward(images)
            assert launch_mod.stats["sequences"] == sequences + 1 and vim._FRONT_PLANS[model] is plan
            assert torch.equal(got, want), f"batch {batch}, step {step}"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = forward(images)
        got_again = forward(images)
    torch.cuda.synchronize()
    assert vim._FRONT_PLANS[model] is not plan and vim._FRONT_PLANS[model].sequence.stream == side.cuda_stream
    assert torch.equal(got, want) and torch.equal(got_again, want)
