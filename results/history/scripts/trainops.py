"""Where the non-Triton GPU time of a Vim-Ti training step goes (H200): one eager step (bf16, backend triton) under
torch.profiler with record_shapes, aten ops grouped by input shape, sorted by self CUDA time. Writes
$OUT/trainops-<res>.txt. Usage: python trainops.py 224 128"""
import os, sys
import torch
from torch.profiler import ProfilerActivity, profile
from vimbench.bench import runner, train
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
res, batch = int(sys.argv[1]), int(sys.argv[2])
key = CaseKey(model="vim_t", res=res, batch=batch, dtype="bf16", implementation="triton", attn=None,
              device="cuda", mode="train", compile="none")
model = runner.build_model(key)
step = train.make_train_step(model, batch, res, "bf16", "cuda")
for _ in range(3):
    step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
    step()
    torch.cuda.synchronize()
table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cuda_time_total", row_limit=60,
                                                           max_name_column_width=40, max_shapes_column_width=110)
kern = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=90)
open(f"{OUT}/trainops-{res}.txt", "w").write(table + "\n\n" + kern)
print(table[:12000])
