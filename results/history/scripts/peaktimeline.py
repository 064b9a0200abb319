"""Live tensor bytes after each op of one Vim-Ti inference forward on the meta device (the Triton backend's
allocations, `vimbench.bench.live_memory`), in a memory mode: where the peak sits and what is alive there (session
ak). No GPU. Usage (repo root): python results/history/scripts/peaktimeline.py MODE RES BATCH [OPS]
(MODE: default, split, lean, lean-gated; OPS: how many ops to list, 80 by default: the first layer and a bit)."""
import torch, sys
from vimbench.bench import live_memory as lm
from vimbench.models.registry import create_model
from vimbench.models.vim import set_memory_mode
GIB = 2**30
class Rec(lm.LiveBytes):
    log = []
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        self._sweep()
        self.log.append((str(func).replace('aten.', ''), self.current))
        return out
mode_name = sys.argv[1]; res=int(sys.argv[2]); batch=int(sys.argv[3])
with torch.device("meta"):
    model = create_model("vim_t", img_size=res, backend="torch").eval()
    images = torch.empty(batch, 3, res, res)
ops = lm.allocation_twin_ops()
model.ops = ops
for layer in model.layers: layer.mixer.ops = ops
set_memory_mode(model, mode_name)
model._activation_dtype = lambda: torch.bfloat16
m = Rec(autocast_dtype=torch.bfloat16)
m.track(*model.parameters(), *model.buffers(), images)
with torch.inference_mode(), m:
    model(images)
print(mode_name, f"peak {m.peak/GIB:.3f} GiB, {len(m.log)} ops")
n = len(m.log)
for i, (name, cur) in enumerate(m.log[: min(n, int(sys.argv[4]) if len(sys.argv) > 4 else 80)]):
    print(f"{i:3d} {cur/GIB:7.3f}  {name}")
