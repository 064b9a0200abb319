"""Session aj: why the host time of Vim-Ti's eager training step (224 px, batch 128, bf16, backend triton) moves
between sweeps on the same card and commit (60-89 ms on H100s: results/hostrows-h100-2026-12-06ae.jsonl,
results/train224-long-h100-2026-12-06ad.jsonl, results/train-h100-2026-12-07aj.jsonl). Three suspects, one process:
  - Python's cyclic GC: each mode rotates per round: gc as usual ("on"), gc.freeze() of everything alive before
    the timed steps ("frozen"), gc disabled ("off"); gc.callbacks time every collection during the timed steps;
  - the CUDA launch path: host us per tiny CUDA op (torch.add on 1-element device tensors, no sync), beside the
    sweep's CPU-op probe (vimbench.bench.env.host_us_per_op);
  - the step itself: host ms (perf_counter from the step's start to its return, device idle at the start) and the
    GPU's ms (CUDA events) of every timed step.
usage (repo root, on the box): python results/history/scripts/boxgc.py [model] [res] [batch] [rounds] [steps]
Writes $OUT/boxgc-{model}-{res}-{batch}-{pid}.json; prints one line per mode and round, then medians."""
import gc, json, os, statistics, sys, time
import torch
from vimbench.bench import train
from vimbench.bench.env import host_us_per_op
from vimbench.models import create_model

name = sys.argv[1] if len(sys.argv) > 1 else "vim_t"
res, batch = (int(v) for v in (sys.argv[2:4] if len(sys.argv) > 3 else (224, 128)))
rounds, steps = (int(v) for v in (sys.argv[4:6] if len(sys.argv) > 5 else (3, 12)))
kw = {"backend": "triton"} if name.startswith("vim") else {"attn": "sdpa"}
model = create_model(name, img_size=res, **kw).cuda()
step = train.make_train_step(model, batch, res, "bf16", "cuda")
for _ in range(4):
    step()
torch.cuda.synchronize()

pauses = []  # (generation, seconds) of each collection while `collecting`
state = {"t": None, "on": False}


def on_gc(phase, info):
    if not state["on"]:
        return
    if phase == "start":
        state["t"] = time.perf_counter()
    elif state["t"] is not None:
        pauses.append((info["generation"], time.perf_counter() - state["t"]))
        state["t"] = None


gc.callbacks.append(on_gc)


def cuda_op_us(calls=2000):
    a, b, out = (torch.ones(1, device="cuda") for _ in range(3))
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        torch.add(a, b, out=out)
    us = (time.perf_counter() - t) / calls * 1e6
    torch.cuda.synchronize()
    return us


def timed(mode):
    if mode == "frozen":
        gc.collect(); gc.freeze()
    elif mode == "off":
        gc.disable()
    del pauses[:]
    state["on"] = True
    host, gpu = [], []
    for _ in range(steps):
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
        torch.cuda.synchronize()
        t0 = time.perf_counter(); ev[0].record()
        step()
        t1 = time.perf_counter(); ev[1].record()
        torch.cuda.synchronize()
        host.append((t1 - t0) * 1e3); gpu.append(ev[0].elapsed_time(ev[1]))
    state["on"] = False
    gc.enable(); gc.unfreeze()
    by_gen = {g: [round(sum(s for gg, s in pauses if gg == g) * 1e3 / steps, 3),
                  sum(1 for gg, _ in pauses if gg == g)] for g in (0, 1, 2)}
    return {"mode": mode, "host_ms": host, "gpu_ms": gpu, "gc_ms_per_step_and_count_by_gen": by_gen,
            "host_us_per_cpu_op": host_us_per_op(), "host_us_per_cuda_op": cuda_op_us(),
            "objects": len(gc.get_objects())}


modes = ["on", "frozen", "off"]
runs = []
for r in range(rounds):
    for mode in modes[r % 3:] + modes[:r % 3]:
        row = timed(mode)
        runs.append(row)
        print(f"round {r} {mode:6s} host p50 {statistics.median(row['host_ms']):6.1f} ms  gpu p50 "
              f"{statistics.median(row['gpu_ms']):6.1f} ms  gc ms/step by gen {row['gc_ms_per_step_and_count_by_gen']}"
              f"  cpu-op {row['host_us_per_cpu_op']:.2f} us  cuda-op {row['host_us_per_cuda_op']:.2f} us", flush=True)
for mode in modes:
    rows = [x for x in runs if x["mode"] == mode]
    print(f"{mode:6s} median host {statistics.median(h for x in rows for h in x['host_ms']):6.1f} ms, gpu "
          f"{statistics.median(g for x in rows for g in x['gpu_ms']):6.1f} ms")
meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": name, "res": res,
        "batch": batch, "commit": os.environ.get("VIMBENCH_GIT_COMMIT"), "gc_threshold": gc.get_threshold()}
with open(os.path.join(os.environ.get("OUT", "."), f"boxgc-{name}-{res}-{batch}-{os.getpid()}.json"), "w") as f:
    json.dump({"meta": meta, "runs": runs}, f, indent=1)
