"""Host cost of Vim-Ti eager training (224/128) and batch-1 inference on the H200: step p50, host phases,
torch.profiler CPU self time per op (incl. CUDA runtime calls), cProfile top; Triton launch us/call."""
import cProfile, io, json, os, pstats, statistics, sys, time
import torch
from vimbench.models.registry import create_model
from vimbench.bench.train import make_train_step

OUT = os.environ.get("OUT", "/tmp")
res_all = {}

def cuda_ms(fn, n):
    ts = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    return statistics.median(ts)

def host_phases(step, n=5):
    rows = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter(); loss = step.forward_loss(); t1 = time.perf_counter()
        loss.backward(); t2 = time.perf_counter(); step.optimizer.step(); t3 = time.perf_counter()
        torch.cuda.synchronize(); t4 = time.perf_counter()
        rows.append([round((t1-t0)*1e3, 2), round((t2-t1)*1e3, 2), round((t3-t2)*1e3, 2), round((t4-t3)*1e3, 2)])
    return rows

def prof_table(fn, label):
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        fn(); torch.cuda.synchronize()
    ka = p.key_averages()
    cpu = sorted(ka, key=lambda e: -e.self_cpu_time_total)[:45]
    rows = [(e.key[:80], e.count, round(e.self_cpu_time_total / 1e3, 3)) for e in cpu]
    gpu = sorted(ka, key=lambda e: -getattr(e, "self_device_time_total", 0))[:25]
    grows = [(e.key[:80], e.count, round(getattr(e, "self_device_time_total", 0) / 1e3, 3)) for e in gpu]
    tot_cpu = sum(e.self_cpu_time_total for e in ka) / 1e3
    tot_gpu = sum(getattr(e, "self_device_time_total", 0) for e in ka) / 1e3
    return dict(cpu_self_top=rows, gpu_self_top=grows, cpu_self_total_ms=round(tot_cpu, 2), gpu_total_ms=round(tot_gpu, 2))

def cprof(fn, label):
    pr = cProfile.Profile(); pr.enable(); fn(); torch.cuda.synchronize(); pr.disable()
    s = io.StringIO(); st = pstats.Stats(pr, stream=s); st.sort_stats("tottime").print_stats(40)
    s2 = io.StringIO(); st2 = pstats.Stats(pr, stream=s2); st2.sort_stats("cumulative").print_stats(60)
    open(f"{OUT}/cprofile-{label}.txt", "w").write(s.getvalue() + "\n\n" + s2.getvalue())
    return st.total_calls

# 1) training step 224/128 bf16 eager
torch.manual_seed(0)
for res, batch in ((224, 128), (1248, 8)):
    model = create_model("vim_t", img_size=res, backend="triton").cuda()
    step = make_train_step(model, batch, res, "bf16", "cuda")
    for _ in range(3): step()
    torch.cuda.synchronize()
    r = dict(step_ms_p50=cuda_ms(step, 7), host_phases_fwd_bwd_opt_wait=host_phases(step))
    r["profile"] = prof_table(step, f"train{res}")
    r["cprofile_calls"] = cprof(step, f"train{res}_{batch}")
    res_all[f"train_{res}_{batch}"] = r
    print(f"train {res}/{batch}: step p50 {r['step_ms_p50']:.1f} ms; phases {r['host_phases_fwd_bwd_opt_wait'][-2:]}; "
          f"profiler cpu self {r['profile']['cpu_self_total_ms']} gpu {r['profile']['gpu_total_ms']}; calls {r['cprofile_calls']}", flush=True)
    del model, step; torch.cuda.empty_cache()

# 2) batch-1 inference 224 eager
model = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
x = torch.randn(1, 3, 224, 224, device="cuda")
def fwd():
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        return model(x)
for _ in range(5): fwd()
torch.cuda.synchronize()
r = dict(latency_ms_p50=cuda_ms(fwd, 20))
t0 = time.perf_counter()
for _ in range(20): fwd()
t1 = time.perf_counter(); torch.cuda.synchronize()
r["host_ms_per_forward"] = (t1 - t0) / 20 * 1e3
r["profile"] = prof_table(fwd, "b1")
r["cprofile_calls"] = cprof(fwd, "infer224_b1")
res_all["infer_224_1"] = r
print(f"infer 224/1: p50 {r['latency_ms_p50']:.2f} ms host {r['host_ms_per_forward']:.2f} ms; gpu {r['profile']['gpu_total_ms']} ms", flush=True)

# 3) launch cost: one triton op on tiny tensors, host time per call (no sync inside)
from kernels.rmsnorm.op import add_rmsnorm
from kernels.rmsnorm import fwd as nfwd
xs = torch.randn(1, 4, 192, device="cuda", dtype=torch.bfloat16); w = torch.ones(192, device="cuda")
launch = {}
for name, f in (("add_rmsnorm(op)", lambda: add_rmsnorm(xs, None, w, 1e-5, torch.bfloat16)),
                ("torch.add", lambda: torch.add(xs, xs)),
                ("F.linear 4x192", lambda: torch.nn.functional.linear(xs, xs[0])),):
    for _ in range(50): f()
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(2000): f()
    t1 = time.perf_counter(); torch.cuda.synchronize()
    launch[name] = round((t1 - t0) / 2000 * 1e6, 2)
res_all["host_us_per_call"] = launch
print("host us/call", launch, flush=True)
json.dump(res_all, open(f"{OUT}/hostprof.json", "w"), indent=1)
for k in ("train_224_128", "infer_224_1"):
    print("==", k, "cpu self top")
    for row in res_all[k]["profile"]["cpu_self_top"][:25]: print("  ", row)
