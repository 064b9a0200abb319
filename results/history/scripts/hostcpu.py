"""Host cost of vimbench's own Python per eager forward (Triton launches replaced by no-ops; CPU tensors, tiny
dims so the torch ops are cheap): Vim with depth 24 at 224 px (197 tokens), embed 16, batch 1. CPU only:
`python results/history/scripts/hostcpu.py [prof]` (prof: cProfile's top 25 by own time)."""
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
m = VisionMamba(img_size=224, embed_dim=16, depth=24, num_classes=10, backend="triton").eval()
x = torch.randn(1, 3, 224, 224)
def fwd():
    with torch.inference_mode():
        return m(x)
for _ in range(5): fwd()
n = 20; best = 1e9
for _ in range(15):
    t = time.perf_counter()
    for _ in range(n): fwd()
    best = min(best, (time.perf_counter() - t) / n)
dt = best
calls["n"] = 0
fwd()
print(f"{dt*1e3:.3f} ms per forward (best of 15 x 20), {calls['n']} Triton launches per forward (no-ops)")
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(20): fwd()
    pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25)
