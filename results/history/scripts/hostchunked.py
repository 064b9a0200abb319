"""Session af: the host cost of eager forwards whose scan runs the chunk-parallel passes, simulated on CPU
(fakelaunch.py: the direct launch path with a no-op compiled kernel), in two source trees A B B A (fresh
processes, PYTHONPATH per tree). On the GPU the automatic choice chunks long sequences on small grids (Vim-Ti at
1248/8); here every scan with at least 8 tokens is forced into chunks of 4, and the delta GEMM is kept in the
mixer (FUSE_DT_MAX_ROWS = 0, as at 1248/8). Vim depth 24, embed 16, 64 px (17 tokens), batch 1, fp32 (the per-op
path), inference mode. Prints per tree: host ms per forward (median of 8 rounds of 10) and launches per forward by
path. usage: python hostchunked.py OLD_TREE NEW_TREE; writes $OUT/hostchunked.json"""
import json, os, subprocess, sys

OUT = os.environ.get("OUT", "/tmp")
HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = r'''
import os, sys, time, functools, json
os.environ["TRITON_INTERPRET"] = "1"
import torch
torch.set_num_threads(1)
import kernels.launch as kl
from fakelaunch import runs
from kernels.selective_scan import chunked
import vimbench.models.vim as vim
import kernels.bimamba_inner.op as inner_op
import kernels.selective_scan.op as scan_op
train = sys.argv[1] == "train"
if train:
    inner_op.CHECKPOINT_CHUNK = scan_op.CHECKPOINT_CHUNK = 4
orig = chunked.chunked_scan_launch_config
def forced(batch, channels, length, n_dir, n_state, interpreted, sm_count, split=None, save_every=0, *a, **k):
    if split is None and length >= 8:
        split = 4
    return orig(batch, channels, length, n_dir, n_state, interpreted, sm_count, split, save_every, *a, **k)
chunked.chunked_scan_launch_config = forced
vim.FUSE_DT_MAX_ROWS = 0
m = vim.VisionMamba(img_size=64, embed_dim=16, depth=24, num_classes=10, backend="triton")
m = m.train() if train else m.eval()
x = torch.randn(2 if train else 1, 3, 64, 64)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
labels = torch.tensor([1, 2])
def fwd():
    if train:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), labels).backward()
        opt.step()
        return
    with torch.inference_mode():
        return m(x)
for _ in range(3): fwd()
before = dict(kl.stats)
fwd()
per = {k: kl.stats[k] - before[k] for k in before}
ts = []
for _ in range(8):
    t = time.perf_counter()
    for _ in range(10): fwd()
    ts.append((time.perf_counter() - t) / 10 * 1e3)
print("ROW " + json.dumps(dict(host_ms=sorted(ts)[len(ts) // 2], per_forward=per)))
'''
old, new = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "infer"
rows = []
for tag, tree in (("old", old), ("new", new), ("new", new), ("old", old)):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(tree), HERE]))
    p = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, cwd=tree, capture_output=True, text=True, timeout=900)
    line = [l for l in p.stdout.splitlines() if l.startswith("ROW ")]
    row = dict(tree=tag, **(json.loads(line[0][4:]) if line else dict(error=p.stderr[-1500:])))
    rows.append(row)
    print(row, flush=True)
json.dump(rows, open(f"{OUT}/hostchunked-{mode}.json", "w"), indent=1)
