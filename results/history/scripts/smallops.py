"""The training step's small non-Triton ops at Vim-Ti 224 px batch 128 (H200): the d_dt_proj weight gradient
(K-sliced bmm, as kernels/bimamba_inner/op.py runs it, vs more slices / the transposed form) and the column sums
of the kernels' fp32 partial buffers (torch.sum(0) vs a ones-vector GEMV). Each variant captured 20 times into a
CUDA graph and replayed (the graphed training step's view: no host time); us per call, median of 7 replays.
Writes $OUT/smallops.json."""
import functools, json, os
import torch
from timing import record_graph

OUT = os.environ.get("OUT", "/tmp")
dev = "cuda"
torch.manual_seed(0)


rows = []
rec = functools.partial(record_graph, rows)

for M in (128 * 197, 8 * 6085):
    # d_dt_proj_t: dt (2, M, 12) a view of x_dbl (2, M, 48) bf16; ddelta rows (2, M, 384) bf16 (a view of (M, 2, 384))
    x_dbl = torch.randn(2, M, 48, device=dev, dtype=torch.bfloat16)
    dt = x_dbl[..., 32:44]
    ddelta = torch.randn(M, 2, 384, device=dev, dtype=torch.bfloat16).transpose(0, 1)
    ref = torch.stack([dt[d].float().t() @ ddelta[d].float() for d in range(2)])
    def sliced(S, a=dt, b=ddelta):
        out = []
        for a_d, b_d in zip(a, b):
            a_s = a_d.reshape(S, -1, a_d.shape[-1]).transpose(1, 2)
            b_s = b_d.reshape(S, -1, b_d.shape[-1])
            out.append(torch.bmm(a_s, b_s, out_dtype=torch.float32).sum(0))
        return torch.stack(out)
    def sliced_t(S, a=dt, b=ddelta):  # (b^T a)^T: M = 384 rows, N = 12
        out = []
        for a_d, b_d in zip(a, b):
            a_s = a_d.reshape(S, -1, a_d.shape[-1])
            b_s = b_d.reshape(S, -1, b_d.shape[-1]).transpose(1, 2)
            out.append(torch.bmm(b_s, a_s, out_dtype=torch.float32).sum(0).t())
        return torch.stack(out)
    divs = [s for s in (8, 16, 32, 40, 64) if M % s == 0]
    for S in divs:
        rec(f"d_dt_proj M={M}", f"sliced S={S}", lambda S=S: sliced(S), ref)
        rec(f"d_dt_proj M={M}", f"transposed S={S}", lambda S=S: sliced_t(S), ref)
    rec(f"d_dt_proj M={M}", "mm fp32 out, no slices", lambda: torch.stack([torch.mm(dt[d].t(), ddelta[d], out_dtype=torch.float32) for d in range(2)]), ref)
    # d_x_proj_t: tokens (2, M, 384) (a view of (M, 2, 384)), d_x_dbl (2, M, 48)
    tok = torch.randn(M, 2, 384, device=dev, dtype=torch.bfloat16).transpose(0, 1)
    dxd = torch.randn(2, M, 48, device=dev, dtype=torch.bfloat16)
    ref2 = torch.stack([tok[d].float().t() @ dxd[d].float() for d in range(2)])
    for S in divs:
        rec(f"d_x_proj M={M}", f"sliced S={S}", lambda S=S: sliced(S, tok, dxd), ref2)

# column sums of partial buffers (rows, cols) fp32, as produced per layer at 224/128 and 1248/8
for R, Ccols, what in ((512, 2 * 384 * 4, "conv dweight 224/128"), (512, 2 * 384, "conv dbias 224/128"),
                       (128, 2 * 384, "scan dD/dbias 224/128"), (128, 2 * 384 * 16, "scan dA 224/128"),
                       (528, 192, "norm dweight"), (12, 2 * 128 * 197 * 16, "scan dB/dC 224/128"),
                       (16, 12 * 384, "wgrad dt_proj S=16"), (64, 12 * 384, "wgrad dt_proj S=64"),
                       (16, 2 * 8 * 16 * 384, "scan dA 1248/8 (16 groups)")):
    p = torch.randn(R, Ccols, device=dev)
    ref = p.double().sum(0)
    ones = torch.ones(1, R, device=dev)
    rec(what + f" ({R}x{Ccols})", "torch.sum(0)", lambda p=p: p.sum(0), ref)
    rec(what + f" ({R}x{Ccols})", "ones @ p (mm)", lambda p=p, o=ones: torch.mm(o, p)[0], ref)
    rec(what + f" ({R}x{Ccols})", "p.t() @ ones (mv)", lambda p=p, o=ones: torch.mv(p.t(), o[0]), ref)

json.dump(rows, open(f"{OUT}/smallops.json", "w"), indent=1)
