"""Why Vim-Ti's training step under torch.compile (default mode) is slower than its eager step (1248/8 bf16 on an
H100, session t: forward 49.4 vs 23.6 ms, backward 91.5 vs 69.4): per mode, the p50 of the step's forward and
backward (CUDA events, 5 steps), our launches per step by path (kernels.launch.stats), a cProfile of one step,
and one profiled step's CUDA kernels (count, us) and host ops (self and total time), built as the sweep builds the
step (make_train_step, compile_train_step). Session u.
usage (repo root): OUT=... python results/history/scripts/trainprof.py [model] [res] [batch] [modes] [device] [backend]
CPU dry run: ... trainprof.py vim_test 32 2 none,default cpu aot_eager (TRITON_INTERPRET=1).
TRACED_STACKED=0: vimbench.models.vim.TRACED_STACKED_WEIGHTS off (each mixer builds its weights in the traced
graph, as before session u's change); the rows record it."""
import collections, cProfile, io, json, os, pstats, statistics, sys, time
import torch
from torch.profiler import ProfilerActivity, profile
from kernels import launch as kernel_launch
from vimbench.bench import compiler
from vimbench.bench.train import compile_train_step, make_train_step
from vimbench.models import vim
from vimbench.models.registry import create_model
OUT = os.environ.get("OUT", "/tmp")
name, res, batch = (sys.argv[1:4] + ["vim_t", "1248", "8"][len(sys.argv[1:4]):])
res, batch = int(res), int(batch)
modes = (sys.argv[4] if len(sys.argv) > 4 else "none,default").split(",")
device = sys.argv[5] if len(sys.argv) > 5 else "cuda"
backend = sys.argv[6] if len(sys.argv) > 6 else "inductor"
cuda = device == "cuda"
vim.TRACED_STACKED_WEIGHTS = os.environ.get("TRACED_STACKED", "1") != "0"
rows = []
for mode in modes:
    torch.manual_seed(0)
    kw = {"backend": "triton"} if name.startswith("vim") else {}
    model = create_model(name, img_size=res, **kw).to(device)
    step = make_train_step(model, batch, res, "bf16", device)
    if mode != "none":
        compiler.reset()
        compile_train_step(step, mode, backend)
    t0 = time.perf_counter()
    step()
    first_s = time.perf_counter() - t0
    for _ in range(2):
        step()
    fwd, bwd = [], []
    stats0 = dict(kernel_launch.stats)
    for _ in range(5):
        if cuda:
            e = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            e[0].record(); loss = step.forward_loss(); e[1].record(); step.backward_update(loss); e[2].record()
            torch.cuda.synchronize()
            fwd.append(e[0].elapsed_time(e[1])); bwd.append(e[1].elapsed_time(e[2]))
        else:
            t = time.perf_counter(); loss = step.forward_loss(); t1 = time.perf_counter(); step.backward_update(loss)
            fwd.append((t1 - t) * 1e3); bwd.append((time.perf_counter() - t1) * 1e3)
    launches = {k: (v - stats0[k]) / 5 for k, v in kernel_launch.stats.items()}
    prof_py = cProfile.Profile()
    prof_py.enable(); step(); prof_py.disable()
    if cuda:
        torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof_py, stream=text).sort_stats('tottime').print_stats(25)
    pstats.Stats(prof_py, stream=text).sort_stats('cumtime').print_stats(40)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        step()
        if cuda:
            torch.cuda.synchronize()
    kernels = collections.defaultdict(lambda: [0, 0.0])
    host = collections.Counter()
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels[ev.name[:100]]
            k[0] += 1
            k[1] += ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
        elif ev.name.startswith(("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy", "vimbench::")):
            host[ev.name] += 1
    total = sum(v[1] for v in kernels.values())
    averages = [a for a in prof.key_averages() if a.device_type == torch.autograd.DeviceType.CPU]
    host_top = sorted(averages, key=lambda a: -a.self_cpu_time_total)[:30]
    host_top = [dict(name=a.key[:90], calls=a.count, self_us=a.self_cpu_time_total, total_us=a.cpu_time_total)
                for a in host_top]
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:40]
    row = dict(model=name, res=res, batch=batch, mode=mode, traced_stacked_weights=vim.TRACED_STACKED_WEIGHTS,
               first_step_s=first_s,
               forward_ms_p50=statistics.median(fwd), backward_ms_p50=statistics.median(bwd),
               kernels_per_step=sum(v[0] for v in kernels.values()), kernel_us_per_step=total, host_ops=dict(host),
               host_top=host_top, launches_per_step=launches, cprofile=text.getvalue(),
               top=[dict(name=n, calls=c, us=t) for n, (c, t) in top],
               gpu=torch.cuda.get_device_name() if cuda else "cpu")
    rows.append(row)
    print(f"=== {name} {res}/{batch} {mode}: forward p50 {row['forward_ms_p50']:.1f} ms, backward "
          f"{row['backward_ms_p50']:.1f} ms, first step {first_s:.0f} s; {row['kernels_per_step']} kernels, "
          f"{total / 1e3:.1f} ms of kernel time per step", flush=True)
    print("  host:", dict(host), "launches per step:", launches, flush=True)
    print(text.getvalue()[:9000], flush=True)
    for h in host_top:
        print(f"  host {h['calls']:5d} x self {h['self_us'] / 1e3:7.2f} ms, total {h['total_us'] / 1e3:7.2f} ms  "
              f"{h['name']}", flush=True)
    for n, (c, t) in top[:30]:
        print(f"  {c:5d} x {t / 1e3:8.2f} ms  {n}", flush=True)
    tag = os.environ.get("TRAINPROF_TAG", "")
    json.dump(rows, open(f"{OUT}/trainprof-{name}-{res}-b{batch}{tag}.json", "w"), indent=1)
    del step, model
    if cuda:
        torch.cuda.empty_cache()
