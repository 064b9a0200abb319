"""Host cost of one eager training step (zero_grad, forward, cross-entropy, backward, AdamW) with the direct launch
path simulated on CPU, as hostfast.py does for the forward: Triton launches of the interpreter go through
`kernels.launch.launch`'s cached path, whose compiled-kernel `run` is a no-op (a stand-in for the H200's ~13 us
`CompiledKernel.run`). Vim with depth 24 at 224 px (197 tokens), embed 16, batch 2, CPU tensors, fp32 (the kernels'
arithmetic never runs; every output is an uninitialised buffer, so the numbers are meaningless and only the host
path is measured). `python results/history/scripts/hosttrainfast.py [prof|cumtime]`.
HOSTFAST_COMPILE=aot_eager|inductor (session u): the model through torch.compile (AOTAutograd) instead of eager, to
compare the compiled step's host path with the eager one; HOSTFAST_TRACED_STACKED=0/1 sets
vimbench.models.vim.TRACED_STACKED_WEIGHTS (0: each mixer builds its weights in the traced graph; unset: vim's default)."""
import os, sys, time, cProfile, pstats
os.environ["TRITON_INTERPRET"] = "1"
import torch
torch.set_num_threads(1)
import kernels.launch as kl
from fakelaunch import runs  # the simulated direct path, installed on import

import vimbench.models.vim as vim
from vimbench.models.vim import VisionMamba
if "HOSTFAST_TRACED_STACKED" in os.environ:  # else vim's default (off since session y)
    vim.TRACED_STACKED_WEIGHTS = os.environ["HOSTFAST_TRACED_STACKED"] != "0"
m = VisionMamba(img_size=224, embed_dim=int(os.environ.get("HOSTFAST_DIM", 16)), depth=24, num_classes=10,
                backend="triton").train()
compile_backend = os.environ.get("HOSTFAST_COMPILE", "none")
model = m if compile_backend == "none" else torch.compile(m, backend=compile_backend, dynamic=False)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
x = torch.randn(2, 3, 224, 224)
y = torch.randint(0, 10, (2,))
def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
for _ in range(3): step()
times = []
for r in range(int(os.environ.get("HOSTFAST_ROUNDS", 6))):
    t = time.perf_counter()
    for _ in range(5): step()
    times.append((time.perf_counter() - t) / 5)
runs["n"] = 0; n0 = dict(kl.stats); step()
print(f"{compile_backend} (stacked {vim.TRACED_STACKED_WEIGHTS}): host ms per step, best / median of {len(times)} rounds of 5: {min(times)*1e3:.2f} / "
      f"{sorted(times)[len(times)//2]*1e3:.2f}; per step {runs['n']} launches, "
      f"{kl.stats['direct'] - n0['direct']} direct, {kl.stats['replayed'] - n0['replayed']} replayed calls, "
      f"{kl.stats['triton'] - n0['triton']} through Triton")
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(5): step()
    pr.disable(); pstats.Stats(pr).sort_stats(sys.argv[1] if sys.argv[1] != "prof" else "tottime").print_stats(45)
