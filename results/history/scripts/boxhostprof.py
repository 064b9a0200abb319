"""Session ad: where the host time of Vim-Ti's eager training step goes on the box (224 px, batch 128, bf16 autocast,
backend triton). Per step: host ms of forward+loss and of backward+AdamW (perf_counter, no sync inside the step)
against the GPU ms of the same parts (CUDA events); then cProfile of 5 steps (tottime and cumtime tops).
usage: python results/history/scripts/boxhostprof.py [model] [res] [batch]   (writes $OUT/boxhostprof-*.txt)"""
import cProfile, io, os, pstats, sys, time
import torch
from vimbench.models import create_model
from vimbench.bench import train

name = sys.argv[1] if len(sys.argv) > 1 else "vim_t"
res = int(sys.argv[2]) if len(sys.argv) > 2 else 224
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 128
kw = {"backend": "triton"} if name.startswith("vim") else {"attn": "sdpa"}
model = create_model(name, img_size=res, **kw).cuda()
step = train.make_train_step(model, batch, res, "bf16", "cuda")
for _ in range(5):
    step()
torch.cuda.synchronize()
rows = []
for _ in range(12):
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
    torch.cuda.synchronize()
    t0 = time.perf_counter(); ev[0].record()
    loss = step.forward_loss()
    t1 = time.perf_counter(); ev[1].record()
    step.backward_update(loss)
    t2 = time.perf_counter(); ev[2].record()
    torch.cuda.synchronize()
    t3 = time.perf_counter()
    rows.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, ev[0].elapsed_time(ev[1]), ev[1].elapsed_time(ev[2])))
out = [f"{name} {res}px b{batch} bf16: per step host fwd ms, host bwd ms, wait after ms | GPU-event fwd ms, bwd ms"]
out += [" ".join(f"{v:7.1f}" for v in r) for r in rows]
srt = lambda i: sorted(r[i] for r in rows)[len(rows) // 2]
out.append("medians: " + " ".join(f"{srt(i):.1f}" for i in range(5)))
pr = cProfile.Profile()
pr.enable()
for _ in range(5):
    step()
torch.cuda.synchronize()
pr.disable()
for key in ("tottime", "cumtime"):
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats(key).print_stats(40)
    out.append(s.getvalue())
text = "\n".join(out)
print(text[:6000])
open(os.path.join(os.environ.get("OUT", "."), f"boxhostprof-{name}-{res}-{batch}.txt"), "w").write(text)
