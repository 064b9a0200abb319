"""Session aa: where conv_xproj's time goes (kernels/conv1d/xproj.py; 35 us per layer at Vim-Ti 224 px batch 1 and 8
on an H100, against 2.2 us for the conv op alone). Copies of the kernel with one part taken out, timed as CUDA-graph
replays (timing.graph_us) at Vim-Ti bf16 shapes (x a view of xz, x_dbl fp32), 197 tokens x batch 1, 8 and 64:
  as is; no dot (x_proj's two tl.dot left out); d=0 only (one token shift instead of 2K - 1 = 7); no dot and d=0;
  p hoisted (x_proj_t's tiles loaded but the dot on a constant tile); the conv op alone; the conv op + the bmm.
The variants compute wrong x_dbl (and u for d=0): timings only.
usage (repo root, on the box): (cd results/history/scripts && python convparts.py) ; writes $OUT/convparts.json"""
import importlib.util, json, os, pathlib, sys, tempfile, torch
from timing import graph_us
import kernels.conv1d.xproj as xproj
from kernels.conv1d.op import conv1d_silu_bidir
from vimbench.kerneltools.kernel_ops import _conv_xproj_inputs
from vimbench.kerneltools.registry import OpShape

OUT = os.environ.get("OUT", "/tmp")
SRC = pathlib.Path(xproj.__file__).read_text()
EDITS = {
    "as is": [],
    "no dot": [("acc_f = dot_acc(u_f, p_f, acc_f, IEEE, UPCAST)", "acc_f += 0.0"),
               ("acc_b = dot_acc(u_b, p_b, acc_b, IEEE, UPCAST)", "acc_b += 0.0")],
    "d=0 only": [("for s in tl.static_range(2 * K - 1):", "for s in tl.static_range(K - 1, K):")],
    "no dot, d=0": [("acc_f = dot_acc(u_f, p_f, acc_f, IEEE, UPCAST)", "acc_f += 0.0"),
                    ("acc_b = dot_acc(u_b, p_b, acc_b, IEEE, UPCAST)", "acc_b += 0.0"),
                    ("for s in tl.static_range(2 * K - 1):", "for s in tl.static_range(K - 1, K):")],
    "no u store": [("        tl.store(u_at, u_f, mask=tile)\n", ""),
                   ("        tl.store(u_at + stride_u_dir, u_b, mask=tile)\n", "")],
}
tmp = pathlib.Path(tempfile.mkdtemp())
mods = {}
for i, (name, edits) in enumerate(EDITS.items()):
    src = SRC
    for a, b in edits:
        assert a in src, (name, a)
        src = src.replace(a, b)
    path = tmp / f"xproj_variant_{i}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"xproj_variant_{i}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    mods[name] = mod
rows = []
with torch.no_grad():
    for batch in (1, 8, 64):
        a = _conv_xproj_inputs(OpShape(batch=batch, channels=384, length=197), torch.bfloat16, "cuda")
        x, w, b, p = a["x"], a["weight"], a["bias"], a["x_proj_t"]
        fns = {name: (lambda m=m: m.conv_xproj(x, w, b, p, torch.float32)) for name, m in mods.items()}
        fns["conv op"] = lambda: conv1d_silu_bidir(x, w, b)

        def conv_bmm():
            u = conv1d_silu_bidir(x, w, b)
            return torch.bmm(u.transpose(2, 3).reshape(2, -1, u.shape[2]), p, out_dtype=torch.float32)
        fns["conv op + bmm"] = conv_bmm
        for rep in range(2):
            for name, fn in (list(fns.items()) if rep == 0 else list(fns.items())[::-1]):
                fn()
                rows.append(dict(batch=batch, variant=name, us=graph_us(fn, reps=10)))
                print(rows[-1], flush=True)
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows,
                       commit=os.environ.get("VIMBENCH_GIT_COMMIT")), open(f"{OUT}/convparts.json", "w"), indent=1)
print("conv_xproj parts, us per call (CUDA-graph replays), two passes")
for batch in (1, 8, 64):
    for name in list(EDITS) + ["conv op", "conv op + bmm"]:
        rs = [r["us"] for r in rows if r["batch"] == batch and r["variant"] == name]
        print(f"b{batch:<3d} {name:14s} " + " / ".join(f"{u:.1f}" for u in rs))
