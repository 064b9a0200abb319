"""Where the chunked training forward's output differs with passes 1 and 3's L1 prefetch on (chunked.DEFAULT_L1_AHEAD
= 2) and off (0): the GPU test test_chunked_l1_prefetch_changes_nothing (bitwise equality) failed in session l.
Vim-Ti 1248 px batch 8, bf16, combine=True, checkpoints every 64 (the test's case) and 128 (training's). Prints and
writes $OUT/l1diff.json: per case the number of differing elements, their token range, the largest difference
relative to the largest magnitude, and the same for the checkpoints."""
import json, os, torch
from kernels.selective_scan import chunked, fwd
from test_selective_scan import model_layout

rows = []
for chunk in (64, 128):
    x = model_layout(8, 384, 6085, dtype=torch.bfloat16, device="cuda")
    chunked.DEFAULT_L1_AHEAD = 2
    out, ck = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=chunk)
    chunked.DEFAULT_L1_AHEAD = 0
    out0, ck0 = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=chunk)
    chunked.DEFAULT_L1_AHEAD = 2
    row = dict(chunk=chunk)
    for name, a, b, axis in (("out", out, out0, -1), ("ckpt", ck, ck0, 2)):
        diff = (a.float() - b.float()).abs()
        where = diff.ne(0).nonzero()
        row[name] = dict(differing=int(where.shape[0]), of=a.numel(),
                         max_rel=float(diff.max() / a.float().abs().max()),
                         index_range_along=(None if where.shape[0] == 0 else
                                            [int(where[:, axis].min()), int(where[:, axis].max())]),
                         size_along=a.shape[axis])
    rows.append(row)
    print(row, flush=True)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
               commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows), open(f"{os.environ.get('OUT', '/tmp')}/l1diff.json", "w"), indent=1)
