"""Lean-gated inference before and after session ak's two memory cuts, in one process (A B B A): A = x and the conv
over the whole batch and the gate into a new buffer (X_CONV_SLICE_ROWS huge, zgate without out=), B = today's
defaults (x and the conv in slices of <= X_CONV_SLICE_ROWS token rows, the gated sum written over the scan's first
half). Vim-Ti, bf16 autocast, eager, default 1248 px batch 64 (LEANPEAK_RES, LEANPEAK_BATCH). Per arm: peak
allocated over one forward after a reset (torch allocator, as the sweep's memory pass), p50 of 10 forwards by CUDA
events, and the largest difference of its logits from arm A's first run. Writes $OUT/leanpeak-<res>-<batch>.json.
usage (repo root, on the box): python results/history/scripts/leanpeak.py"""
import dataclasses, json, os, statistics
import torch
import vimbench.models.vim as vim
from vimbench.models.registry import create_model

RES = int(os.environ.get("LEANPEAK_RES", 1248))
BATCH = int(os.environ.get("LEANPEAK_BATCH", 64))
OUT = os.environ.get("OUT", "/tmp")
torch.manual_seed(0)
model = create_model("vim_t", img_size=RES, backend="triton", vim_memory="lean-gated").cuda().eval()
images = torch.randn(BATCH, 3, RES, RES, device="cuda")
ops = model.layers[0].mixer.ops
zgate_new = ops.zgate
slice_rows = vim.X_CONV_SLICE_ROWS


def arm(name):
    old = name == "A"
    vim.X_CONV_SLICE_ROWS = 1 << 40 if old else slice_rows
    zg = (lambda y, h, w, out=None: zgate_new(y, h, w)) if old else zgate_new
    for layer in model.layers:
        layer.mixer.ops = dataclasses.replace(ops, zgate=zg)


def forward():
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        return model(images)


rows, ref = [], None
for name in "ABBA":
    arm(name)
    for _ in range(3):
        out = forward()
    torch.cuda.synchronize()
    del out
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = forward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    ref = out.float() if ref is None else ref
    diff = (out.float() - ref).abs().max().item()
    del out
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); o = forward(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e)); del o
    p50 = statistics.median(times)
    rows.append(dict(arm=name, peak_allocated_gib=peak / 2**30, allocated_before_gib=base / 2**30, p50_ms=p50,
                     img_per_s=BATCH / p50 * 1e3, max_abs_diff_vs_first_A=diff))
    print(f"{name}: peak allocated {peak / 2**30:.3f} GiB (before {base / 2**30:.3f}), p50 {p50:.2f} ms, "
          f"{BATCH / p50 * 1e3:.1f} img/s, max |logits - A| {diff:.2e}")
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, res=RES, batch=BATCH,
               x_conv_slice_rows=slice_rows, commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows),
          open(f"{OUT}/leanpeak-{RES}-{BATCH}.json", "w"), indent=1)
