"""Where a Triton launch's host time goes (issue 11's eager batch 1): the scan at Vim-Ti batch 1, 197 tokens, bf16
halves, host us per call (wall clock of 300 back-to-back calls before one synchronize, median of 5) for: our
launcher `bimamba_scan`; `_scan_kernel[grid](**kwargs)` (Triton's JIT run); its binder alone; the compiled
kernel's `run` with prebuilt positional arguments (a direct launch); and the tiny torch op as the host's speed.
Then the eager Vim-Ti batch-1 forward at 224 px: host ms per forward and Triton launches per forward.
Writes $OUT/hostlaunch.json."""
import json, os, statistics, time
import torch
import triton
from triton.runtime.jit import JITFunction
from kernels.selective_scan import fwd
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")


def host_us(fn, n=300, repeats=5):
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        ts.append((time.perf_counter() - t0) / n * 1e6)
        torch.cuda.synchronize()
    return statistics.median(ts)


args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=1, channels=384, length=197), torch.bfloat16, "cuda")
out = torch.empty_like(args["u"])
captured = {}
orig_run = fwd._scan_kernel.run


def spy(*a, **kw):
    captured.clear(); captured.update(kw)
    return orig_run(*a, **kw)


fwd._scan_kernel.run = spy
fwd.bimamba_scan(**args, out=out)
del fwd._scan_kernel.run
grid = captured.pop("grid"); captured.pop("warmup")
kw = captured
dev = torch.cuda.current_device()
binder = fwd._scan_kernel.device_caches[dev][4]
bound, _, _ = binder(**kw)
compiled = fwd._scan_kernel.run(grid=grid, warmup=False, **kw)
vals = tuple(bound.values())
stream = torch.cuda.current_stream().cuda_stream
x = torch.ones(4, device="cuda")
ptrs = [v for v in vals if isinstance(v, torch.Tensor)]

rows = {
    "torch.add (tiny)": host_us(lambda: torch.add(x, 1.0)),
    "bimamba_scan (our launcher)": host_us(lambda: fwd.bimamba_scan(**args, out=out)),
    "_scan_kernel[grid](**kw) (triton JIT run)": host_us(lambda: fwd._scan_kernel[grid](**kw)),
    "binder(**kw) alone": host_us(lambda: binder(**kw)),
    "compiled.run(*prebuilt) (direct)": host_us(lambda: compiled.run(grid[0], grid[1], grid[2], stream,
                                                compiled.function, compiled.packed_metadata, None, None, None,
                                                *vals)),
    "current stream lookup": host_us(lambda: torch.cuda.current_stream().cuda_stream),
    "data_ptr & 15 of the tensors": host_us(lambda: [t.data_ptr() & 15 for t in ptrs]),
}
n_args = len(vals)

# The eager Vim-Ti forward at batch 1: host ms and Triton launches per forward.
count = [0]
jit_run = JITFunction.run


def counting(self, *a, **k):
    count[0] += 1
    return jit_run(self, *a, **k)


model = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
img = torch.randn(1, 3, 224, 224, device="cuda")
with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
    fwd_ms = host_us(lambda: model(img), n=20, repeats=5) / 1000
    JITFunction.run = counting
    model(img)
    JITFunction.run = jit_run
    torch.cuda.synchronize()
    t = []
    for _ in range(20):
        torch.cuda.synchronize(); t0 = time.perf_counter(); model(img); torch.cuda.synchronize()
        t.append((time.perf_counter() - t0) * 1e3)
rows_fwd = {"forward host ms (20 back-to-back)": fwd_ms, "forward wall ms with sync (median of 20)": statistics.median(t),
            "triton launches per forward": count[0]}
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
               scan_kernel_args=n_args, host_us_per_call=rows, vim_t_b1_224=rows_fwd),
          open(f"{OUT}/hostlaunch.json", "w"), indent=1)
for k, v in rows.items():
    print(f"{k:45s} {v:8.2f} us")
for k, v in rows_fwd.items():
    print(f"{k:45s} {v}")
