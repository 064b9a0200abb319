"""The direct launch path (kernels/launch.py) vs Triton's own launches, A B B A in one process (H200): eager
Vim-Ti bf16 forward at 224 px, batch 1 and 64 (latency p50, CUDA events around each forward, like the sweep),
host ms per forward (wall clock of 20 back-to-back forwards), eager training step at 224 px, batch 128 (p50 ms);
DeiT-Ti sdpa eager batch 1 as the host's yardstick; the scan launcher's host us per call. Writes $OUT/fastab.json."""
import json, os, statistics, time
import torch
import torch.nn.functional as F
import kernels.launch as L
from kernels.selective_scan import fwd
from vimbench.kerneltools.kernel_ops import _scan_inputs
from vimbench.kerneltools.registry import OpShape
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")


def p50_ms(fn, n=30, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def host_ms(fn, n=20):
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter(); torch.cuda.synchronize()
    return (t1 - t0) / n * 1e3


vim = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
deit = create_model("deit_t", img_size=224, attn="sdpa").cuda().eval()
imgs = {b: torch.randn(b, 3, 224, 224, device="cuda") for b in (1, 64)}
train_model = create_model("vim_t", img_size=224, backend="triton").cuda().train()
opt = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
timgs, labels = torch.randn(128, 3, 224, 224, device="cuda"), torch.randint(0, 1000, (128,), device="cuda")


def train_step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(train_model(timgs), labels)
    loss.backward(); opt.step()


scan_args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=1, channels=384, length=197), torch.bfloat16, "cuda")
scan_out = torch.empty_like(scan_args["u"])
rows = []
for direct in (False, True, True, False):
    with L.fast_launch(direct):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            r = dict(direct=direct)
            for b in (1, 64):
                r[f"vim_t_b{b}_p50_ms"] = p50_ms(lambda: vim(imgs[b]))
            r["vim_t_b1_host_ms"] = host_ms(lambda: vim(imgs[1]))
            r["deit_t_b1_p50_ms"] = p50_ms(lambda: deit(imgs[1]))
            r["scan_launcher_host_us"] = host_ms(lambda: fwd.bimamba_scan(**scan_args, out=scan_out), n=300) * 1e3
        r["vim_t_train_224_128_p50_ms"] = p50_ms(train_step, n=10, warm=3)
        rows.append(r)
        print(r, flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               launches=dict(L.stats), rows=rows), open(f"{OUT}/fastab.json", "w"), indent=1)
for k in rows[0]:
    if k != "direct":
        off = statistics.mean(r[k] for r in rows if not r["direct"]); on = statistics.mean(r[k] for r in rows if r["direct"])
        print(f"{k:32s} triton {off:9.3f}  direct {on:9.3f}  ({on / off:.2f}x)")
