"""aten ops (views not counted) dispatched by one bf16-autocast training step (forward, loss, backward) of a 24-layer
Vim at 197 tokens, tiny width, CPU tensors, every Triton launch a no-op; ops inside StackedMixerWeights tagged.
CPU only: `python results/history/scripts/opcount.py`."""
import os, collections
os.environ["TRITON_INTERPRET"] = "1"
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from triton.runtime.interpreter import InterpretedFunction
InterpretedFunction.__getitem__ = lambda self, grid: (lambda *a, **k: None)
from vimbench.models.vim import VisionMamba
import vimbench.models.vim as V
m = VisionMamba(img_size=224, embed_dim=16, depth=24, num_classes=10, backend="triton").train()
x = torch.randn(2, 3, 224, 224); y = torch.randint(0, 10, (2,))
VIEWS = {"view", "transpose", "t", "select", "slice", "as_strided", "permute", "unsqueeze", "squeeze", "expand", "alias", "_unsafe_view", "reshape", "detach", "split", "unbind"}
class Count(TorchDispatchMode):
    def __init__(s): super().__init__(); s.c = collections.Counter(); s.tag = "other"
    def __torch_dispatch__(s, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS: s.c[(s.tag, name)] += 1
        return func(*args, **(kwargs or {}))
mode = Count()
orig_f, orig_b = V.StackedMixerWeights.forward, V.StackedMixerWeights.backward
def f(*a):
    old = mode.tag; mode.tag = "stack_fwd"
    try: return orig_f(*a)
    finally: mode.tag = old
def b(ctx, *g):
    old = mode.tag; mode.tag = "stack_bwd"
    try: return orig_b(ctx, *g)
    finally: mode.tag = old
V.StackedMixerWeights.forward = staticmethod(f); V.StackedMixerWeights.backward = staticmethod(b)
def step():
    for p in m.parameters(): p.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
step()
with mode: step()
tot = collections.Counter()
for (tag, name), n in mode.c.items(): tot[tag] += n
print(dict(tot), "total", sum(tot.values()))
for (tag, name), n in sorted(mode.c.items(), key=lambda kv: -kv[1])[:40]: print(tag, name, n)
