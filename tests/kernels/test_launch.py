"""kernels/launch.py: the direct launch path's cache (CPU, with a stand-in kernel that records how it was launched)
and, on the GPU, that the direct path gives the same outputs and gradients as Triton's own launches."""
from __future__ import annotations

import inspect
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
        before = launch_mod.stats["direct"]
        got = run()
        assert launch_mod.stats["direct"] > before
    for w, g in zip(want, got):
        scale = w.float().abs().max().item() + 1e-12
        assert (w.float() - g.float()).abs().max().item() <= 1e-2 * scale
