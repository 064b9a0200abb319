"""dt_proj's GEMMs in the training op at Vim-Ti shapes (H200): delta = dt @ dt_proj_t with dt the strided R = 12
columns of x_dbl (K = 12, rows 96 B apart) vs the 16 columns dt + pad (K = 16, with zero weight rows for the pad);
d_dt = ddelta @ dt_proj_t^T with N = 12 vs 16; out_proj as the K = 2E halves GEMM vs the halves' add + a K = E GEMM.
CUDA-graph replays of 20 calls, us per call (median of 7). Writes $OUT/dtpad.json."""
import functools, json, os
import torch
from timing import record_graph

OUT = os.environ.get("OUT", "/tmp")
dev, bf = "cuda", torch.bfloat16
torch.manual_seed(0)


rows = []
rec = functools.partial(record_graph, rows)

for M in (128 * 197, 8 * 6085):
    x_dbl = torch.randn(2, M, 48, device=dev, dtype=bf)
    x_dbl[..., 44:] = 0
    w12 = torch.randn(2, 12, 384, device=dev, dtype=bf)
    w16 = torch.cat([w12, w12.new_zeros(2, 4, 384)], 1)
    ref = torch.bmm(x_dbl[..., 32:44].float(), w12.float())
    rec(f"delta M={M}", "bmm K=12 (strided dt columns)", lambda: torch.bmm(x_dbl[..., 32:44], w12), ref)
    rec(f"delta M={M}", "bmm K=16 (dt + pad columns)", lambda: torch.bmm(x_dbl[..., 32:48], w16), ref)
    rec(f"delta M={M}", "pad weight + bmm K=16", lambda: torch.bmm(x_dbl[..., 32:48], torch.nn.functional.pad(w12, (0, 0, 0, 4))), ref)
    dd = torch.randn(M, 2, 384, device=dev, dtype=bf).transpose(0, 1)  # (2, M, E) laid out (M, 2, E)
    ref = torch.bmm(dd.float(), w12.float().transpose(1, 2))
    rec(f"d_dt M={M}", "bmm N=12", lambda: torch.bmm(dd, w12.transpose(1, 2)), ref)
    rec(f"d_dt M={M}", "bmm N=16", lambda: torch.bmm(dd, w16.transpose(1, 2))[..., :12], ref)
    halves = torch.randn(M, 2, 384, device=dev, dtype=bf)  # (B*L, 2, E)
    wo = torch.randn(192, 384, device=dev, dtype=bf)
    wo2 = torch.cat([wo, wo], 1)
    ref = (halves[:, 0].float() + halves[:, 1].float()) @ wo.float().t()
    rec(f"out_proj M={M}", "K=2E halves GEMM", lambda: torch.nn.functional.linear(halves.view(M, 768), wo2), ref)
    rec(f"out_proj M={M}", "halves add (y)", lambda: torch.add(halves[:, 0], halves[:, 1]))
    y = torch.add(halves[:, 0], halves[:, 1])
    rec(f"out_proj M={M}", "K=E GEMM on y", lambda: torch.nn.functional.linear(y, wo), ref)
json.dump(rows, open(f"{OUT}/dtpad.json", "w"), indent=1)
