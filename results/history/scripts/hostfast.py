"""Host cost per eager forward with the direct launch path simulated on CPU (kernels/launch.py): Triton launches
of the interpreter are sent through `kernels.launch.launch`'s cached path, whose compiled-kernel `run` is a no-op
(a stand-in for the H200's ~13 us `CompiledKernel.run`). Vim with depth 24 at 224 px (197 tokens), embed 16,
batch 1, CPU tensors, under torch.inference_mode (HOSTFAST_GRAD=no_grad: torch.no_grad), replayed calls
(kernels.launch.CallMemo) on and off in alternated rounds.
`python results/history/scripts/hostfast.py [prof]` (prof: cProfile's top 30 by own time).
What it measures: vimbench's and torch's Python per forward, launches included up to the compiled launcher."""
import os, sys, time, cProfile, pstats
os.environ["TRITON_INTERPRET"] = "1"
import torch
torch.set_num_threads(1)
import kernels.launch as kl
from fakelaunch import runs  # noqa: F401 (the simulated direct path, installed on import)

from vimbench.models.vim import VisionMamba
m = VisionMamba(img_size=224, embed_dim=int(os.environ.get("HOSTFAST_DIM", 16)), depth=24, num_classes=10,
                backend="triton").eval()
dtype = getattr(torch, os.environ.get("HOSTFAST_DTYPE", "float32"))  # bfloat16: the halves scan (slow CPU GEMMs)
m = m.to(dtype)
x = torch.randn(1, 3, 224, 224, dtype=dtype)
GRAD = torch.no_grad if os.environ.get("HOSTFAST_GRAD") == "no_grad" else torch.inference_mode
def fwd():
    with GRAD():
        return m(x)
for _ in range(5): fwd()
times = {"on": [], "off": []}
for r in range(int(os.environ.get("HOSTFAST_ROUNDS", 12))):  # alternated: this machine's speed drifts
    for name in (("on", "off") if r % 2 == 0 else ("off", "on")):
        kl._replay = name == "on"
        fwd()
        t = time.perf_counter()
        for _ in range(10): fwd()
        times[name].append((time.perf_counter() - t) / 10)
med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
ratios = sorted(a / b for a, b in zip(times["on"], times["off"]))
print(f"host ms per forward, median of {len(times['on'])} alternated rounds of 10: replayed {med['on']:.3f}, "
      f"not replayed {med['off']:.3f}; paired ratio median {ratios[len(ratios) // 2]:.3f} "
      f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f}); {kl.stats['replayed']} calls replayed in all")
if len(sys.argv) > 1:
    pr = cProfile.Profile(); pr.enable()
    for _ in range(20): fwd()
    pr.disable(); pstats.Stats(pr).sort_stats(sys.argv[1] if sys.argv[1] != "prof" else "tottime").print_stats(30)
