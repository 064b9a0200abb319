"""The H200's direct launch path (kernels/launch.py) simulated on CPU, for the host-cost scripts hostfast.py and
hosttrainfast.py: Triton launches of the interpreter go through `launch`'s cached path, whose compiled-kernel `run`
is a no-op (a stand-in for the H200's ~13 us `CompiledKernel.run`), and CPU tensors stand in for CUDA ones.
Import it after setting TRITON_INTERPRET=1; `runs` counts the no-op runs ("n") and the first launches ("first")."""
import inspect
import operator

import torch
from triton.runtime.interpreter import InterpretedFunction

import kernels.launch as kl

runs = {"n": 0, "first": 0}


class FakeCompiled:
    function = None
    packed_metadata = None

    def run(self, *a):
        runs["n"] += 1


def fake_triton_launch(kernel, grid, kwargs, key):
    params = list(inspect.signature(kernel.fn).parameters)
    getter = operator.itemgetter(*[p for p in params if p in kwargs])  # kernel parameters (not num_warps etc.)
    kl._cache[key] = (FakeCompiled(), getter, {})
    runs["first"] += 1


kl._JIT_FUNCTION = InterpretedFunction
kl._enabled = True
kl._triton_launch = fake_triton_launch
kl._hooks_registered = lambda kernel: False
kl._on_gpu = lambda t: True  # CPU tensors stand in for CUDA ones
torch.cuda.current_device = lambda: 0
torch._C._cuda_getCurrentRawStream = lambda d: 0
torch.cuda.is_current_stream_capturing = lambda: False
