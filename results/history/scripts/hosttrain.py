"""Host cost of one eager training step (forward, loss, backward; no optimizer) with every Triton launch a no-op:
Vim depth 24, 197 tokens, tiny width, CPU tensors. `python hosttrain.py [prof]`."""
import os, sys, time, cProfile, pstats
os.environ["TRITON_INTERPRET"] = "1"
import torch
torch.set_num_threads(1)
from triton.runtime.interpreter import InterpretedFunction
calls = {"n": 0}
def noop_getitem(self, grid):
    def launch(*a, **k):
        calls["n"] += 1
    return launch
InterpretedFunction.__getitem__ = noop_getitem
from vimbench.models.vim import VisionMamba
m = VisionMamba(img_size=224, embed_dim=16, depth=24, num_classes=10, backend="triton").train()
x = torch.randn(2, 3, 224, 224); y = torch.randint(0, 10, (2,))
def step():
    for p in m.parameters(): p.grad = None
    loss = torch.nn.functional.cross_entropy(m(x), y)
    loss.backward()
for _ in range(3): step()
best = 1e9
for _ in range(8):
    t = time.perf_counter()
    for _ in range(5): step()
    best = min(best, (time.perf_counter() - t) / 5)
calls["n"] = 0; step()
print(f"{best*1e3:.2f} ms per step (best of 8 x 5), {calls['n']} Triton launches per step (no-ops)")
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(5): step()
    pr.disable(); pstats.Stats(pr).sort_stats(sys.argv[1] if sys.argv[1] != "prof" else "tottime").print_stats(35)
