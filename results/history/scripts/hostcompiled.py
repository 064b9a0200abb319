"""Host cost of one Vim training step eager against torch.compile (AOTAutograd; backend aot_eager or inductor),
with the direct launch path simulated on CPU as hosttrainfast.py does (fakelaunch: the kernels' arithmetic never
runs, only the host path is measured). Depth 24 at 224 px, embed 16, batch 2, fp32, CPU. Session u: on the H200 a
compiled Vim-Ti step at 1248/8 spent +15-27 ms in the forward and +7-19 ms in the backward over eager with +4 ms of
GPU time (results/history/trainprof-h200-2026-12-05u-call*.json).
`python results/history/scripts/hostcompiled.py [none|aot_eager|inductor] [prof|cumtime]`."""
import os, sys, time, cProfile, pstats
os.environ["TRITON_INTERPRET"] = "1"
import torch
torch.set_num_threads(1)
import kernels.launch as kl
from fakelaunch import runs  # the simulated direct path, installed on import

from vimbench.models.vim import VisionMamba
backend = sys.argv[1] if len(sys.argv) > 1 else "none"
m = VisionMamba(img_size=224, embed_dim=int(os.environ.get("HOSTFAST_DIM", 16)), depth=24, num_classes=10,
                backend="triton").train()
model = m if backend == "none" else torch.compile(m, backend=backend, dynamic=False)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.randn(2, 3, 224, 224)
y = torch.randint(0, 10, (2,))
def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
t = time.perf_counter()
for _ in range(3): step()
print(f"{backend}: first 3 steps {time.perf_counter() - t:.1f} s")
times = []
for r in range(int(os.environ.get("HOSTFAST_ROUNDS", 6))):
    t = time.perf_counter()
    for _ in range(5): step()
    times.append((time.perf_counter() - t) / 5)
runs["n"] = 0; n0 = dict(kl.stats); step()
print(f"{backend}: host ms per step, best / median of {len(times)} rounds of 5: {min(times)*1e3:.2f} / "
      f"{sorted(times)[len(times)//2]*1e3:.2f}; per step {runs['n']} launches, "
      f"{kl.stats['direct'] - n0['direct']} direct, {kl.stats['replayed'] - n0['replayed']} replayed calls, "
      f"{kl.stats['triton'] - n0['triton']} through Triton")
if len(sys.argv) > 2:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(5): step()
    pr.disable(); pstats.Stats(pr).sort_stats(sys.argv[2] if sys.argv[2] != "prof" else "tottime").print_stats(45)
