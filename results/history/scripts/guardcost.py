"""Per-call cost of dynamo's path for Vim-Ti vs DeiT-Ti on CPU (session t): torch.compile with a no-op backend that returns
a fixed output, weights frozen (inductor freezing patched around the first call) or not; us per call, median of 7
rounds of 200. Vim on backend triton under the interpreter (only the first call runs kernels). usage: python
results/history/scripts/guardcost.py"""
import os; os.environ["TRITON_INTERPRET"] = "1"
import time, torch, statistics
torch.set_num_threads(1)
import torch._inductor.config as ic
from vimbench.models.registry import create_model
def backend(gm, ex):
    out = gm(*ex)
    return lambda *a: out
def measure(m, x, freeze):
    torch._dynamo.reset()
    c = torch.compile(m, backend=backend, dynamic=False)
    with torch.inference_mode():
        if freeze:
            with ic.patch(freezing=True):
                c(x)
        else:
            c(x)
        ts = []
        for r in range(7):
            t = time.perf_counter()
            for _ in range(200):
                c(x)
            ts.append((time.perf_counter() - t) / 200 * 1e6)
    return statistics.median(ts)
for name, kw in (("vim_t", dict(backend="triton")), ("deit_t", {})):
    m = create_model(name, img_size=32, **kw).eval()
    n = sum(1 for _ in m.parameters())
    x = torch.randn(1, 3, 32, 32)
    print(name, "params tensors", n, "us per compiled call (no-op backend): frozen", round(measure(m, x, True), 1),
          "not frozen", round(measure(m, x, False), 1), flush=True)
