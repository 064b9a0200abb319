"""Small-batch inference kernels at 197 tokens on the H200, kernel time only (20 launches captured in a CUDA graph,
replays timed): the one-pass scan at BLOCK_C 2..32, the conv rows kernel at (block_c, chunk) variants; then
whole-model batch-1 forward latency (CUDA graph) per combination."""
import json, os, statistics, torch
from vimbench.kerneltools.kernel_ops import _scan_inputs, _conv_inputs
from vimbench.kerneltools.registry import OpShape
from kernels.selective_scan import fwd
from kernels.conv1d import fwd as cfwd
from kernels.runtime import LaunchConfig
from vimbench.models.registry import create_model
OUT = os.environ.get("OUT", "/tmp")
orig_blocks, orig_conv = fwd._blocks_for, cfwd.conv1d_launch_config

def graph_us(fn, reps=20, n=30):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        for _ in range(reps): fn()
    g.replay(); torch.cuda.synchronize(); ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts) * 1e3 / reps

def set_scan(bc):
    fwd._blocks_for = (lambda p, bc=bc: bc) if bc else orig_blocks

def set_conv(v):
    if v is None:
        cfwd.conv1d_launch_config = orig_conv; return
    bc, ch = v
    def cfg(batch, channels, length, width, channel_last, interpreted):
        return LaunchConfig(kernel="_conv1d_silu_bidir_rows_kernel",
                            grid=((channels + bc - 1) // bc, (length + ch - 1) // ch, batch),
                            constexprs=dict(BLOCK_C=bc, CHUNK=ch), num_warps=1)
    cfwd.conv1d_launch_config = cfg

rows = []
for E, batches in ((384, (1, 2, 4, 8, 16, 32, 64)), (768, (1, 4, 16)), (1536, (1, 4))):
    for B in batches:
        args = _scan_inputs(dirs=2, halves=True)(OpShape(batch=B, channels=E, length=197), torch.bfloat16, "cuda")
        set_scan(None); ref = fwd.bimamba_scan(**args)
        for bc in (None, 2, 4, 8, 16, 32):
            set_scan(bc)
            try:
                out = fwd.bimamba_scan(**args)
                err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                rows.append(dict(kind="scan", E=E, B=B, bc=bc, us=round(graph_us(lambda: fwd.bimamba_scan(**args)), 2), err=err))
            except Exception as e:
                rows.append(dict(kind="scan", E=E, B=B, bc=bc, error=repr(e)[:200]))
            print(rows[-1], flush=True)
        set_scan(None)
for E, batches in ((384, (1, 8, 64)), (768, (1,))):
    for B in batches:
        a = _conv_inputs(OpShape(batch=B, channels=E, length=197), torch.bfloat16, "cuda")
        set_conv(None); ref = cfwd.conv1d_silu_bidir(**a)
        for v in (None, (128, 8), (64, 16), (32, 32), (32, 16), (32, 8), (64, 8)):
            set_conv(v)
            out = cfwd.conv1d_silu_bidir(**a)
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            rows.append(dict(kind="conv", E=E, B=B, v=v, us=round(graph_us(lambda: cfwd.conv1d_silu_bidir(**a)), 2), err=err))
            print(rows[-1], flush=True)
        set_conv(None)

for name in ("vim_t", "vim_s", "vim_b"):
    model = create_model(name, img_size=224, backend="triton").cuda().eval()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return model(x)
    combos = [(None, None), (4, None), (2, None), (8, None), (4, (32, 8)), (4, (64, 16)), (2, (32, 8))]
    for bc, cv in combos:
        set_scan(bc); set_conv(cv)
        ms = graph_us(f, reps=5, n=40) / 1e3
        rows.append(dict(kind="model_b1_graph", model=name, bc=bc, conv=cv, ms=round(ms, 4)))
        print(rows[-1], flush=True)
    set_scan(None); set_conv(None)
    del model; torch.cuda.empty_cache()
json.dump(rows, open(f"{OUT}/smallgrid.json", "w"), indent=1)
