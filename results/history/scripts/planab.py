"""Session aa: the front path's recorded plan (`vimbench.models.vim.FrontPlan`: the layers' launches replayed as one
kernels.launch.LaunchSequence) against the front path that runs its launchers on every forward (FRONT_PLANS off) and
the per-op path (FRONT_MAX_ROWS = 0), and (variant "plan+2conv") the replayed front path with the conv op and
x_proj_rows instead of conv_xproj (FRONT_CONV_XPROJ off), and (variant "plan+nip1") that with norm_in_proj making one
in_proj tile per program (its N_TILES = 1, as before session aa's groups of tiles), in eager inference at 224 px, bf16
autocast (weight cache on, as the sweep runs it), beside DeiT-Ti (timm, sdpa) in the same process; batches from
PLANAB_BATCHES (default 1,8,16); PLANAB_MODELS=vim_s,deit_s: another pair (row "peer": the DeiT); PLANAB_VARIANTS: a
subset; the front variants are forced on at every size; PLANAB_TAG: the output file's suffix.
Per variant: the logits' max abs difference from the per-op path, the eager p50 latency (one CUDA-event pair per
call, as the sweep times it), the host ms per call (wall clock of back-to-back calls) and the GPU kernels per call
(torch.profiler: count and summed kernel time), and the
host ms of one call started with the GPU idle (`host_single_ms`). Order A B C D, then D C B A (host speed drifts).
usage (repo root, on the box): (cd results/history/scripts && python planab.py) ; writes $OUT/planab.json"""
import json, os, statistics, time, torch
from timing import event_median_ms, host_ms, kernel_table
import kernels.launch as launch
import kernels.norm_in_proj.fwd as nip
import vimbench.models.vim as vim
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
BATCHES = [int(b) for b in os.environ.get("PLANAB_BATCHES", "1,8,16").split(",")]
ON = 10 ** 9  # the front path forced on at every size (the model's own limits decide it otherwise)
VARIANTS = {"per-op": dict(FRONT_MAX_ROWS=0, FRONT_PLANS=True),
            "front": dict(FRONT_MAX_ROWS=ON, FRONT_MAX_DIM=ON, FRONT_PLANS=False, FRONT_CONV_XPROJ=True),
            "front+plan": dict(FRONT_MAX_ROWS=ON, FRONT_MAX_DIM=ON, FRONT_PLANS=True, FRONT_CONV_XPROJ=True),
            "plan+2conv": dict(FRONT_MAX_ROWS=ON, FRONT_MAX_DIM=ON, FRONT_PLANS=True, FRONT_CONV_XPROJ=False),
            "plan+nip1": dict(FRONT_MAX_ROWS=ON, FRONT_MAX_DIM=ON, FRONT_PLANS=True, FRONT_CONV_XPROJ=False,
                              NIP_N_TILES=1)}
VARIANTS = {k: v for k, v in VARIANTS.items() if k in os.environ.get("PLANAB_VARIANTS", ",".join(VARIANTS)).split(",")}
MODEL, PEER = os.environ.get("PLANAB_MODELS", "vim_t,deit_t").split(",")
rows = []
vim_t = create_model(MODEL, img_size=224, backend="triton").cuda().eval()
deit_t = create_model(PEER, img_size=224, attn="sdpa").cuda().eval()


def caller(model, x):
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x)
    return f


def host_single_ms(f, n=30):
    """ms of wall clock from a call's start to its return, the GPU idle at the start (a synchronize before each):
    the host's own time per forward, which back-to-back calls hide once the GPU is the bound."""
    ts = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        f()
        ts.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(ts)


def setvars(name):
    knobs = dict(VARIANTS.get(name, {}))
    nip.N_TILES = knobs.pop("NIP_N_TILES", None)  # norm_in_proj's in_proj tiles per program (None: its own choice)
    for k, v in knobs.items():
        setattr(vim, k, v)
    vim._FRONT_PLANS.clear()  # a recorded plan holds the launches of the knobs it was recorded under
    nip._MEMO.clear()


for batch in BATCHES:
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    setvars("per-op")
    ref = caller(vim_t, x)().float()
    errs = {}
    for name in VARIANTS:
        setvars(name)
        f = caller(vim_t, x)
        f(); f()
        errs[name] = float((f().float() - ref).abs().max())
    names = list(VARIANTS) + ["peer"]
    for order in (names, names[::-1]):
        for name in order:
            setvars(name)
            f = caller(deit_t if name == "peer" else vim_t, x)
            seq = launch.stats["sequences"]
            row = dict(batch=batch, variant=name, p50_ms=event_median_ms(f, n=40), host_ms=host_ms(f, n=40),
                       host_single_ms=host_single_ms(f), err=errs.get(name),
                       sequences=launch.stats["sequences"] - seq)
            if order is names:
                table = kernel_table(f, n=3, top=8)
                row.update(kernels=table["kernels_per_fwd"], gpu_us=table["gpu_us_per_fwd"], top=table["top"])
            rows.append(row)
            print({k: v for k, v in row.items() if k != "top"}, flush=True)
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, batches=BATCHES, model=MODEL,
                           peer=PEER,
                           commit=os.environ.get("VIMBENCH_GIT_COMMIT"), rows=rows),
                      open(f"{OUT}/planab{os.environ.get('PLANAB_TAG', '')}.json", "w"), indent=1)
print("eager bf16 at 224 px: p50 ms (CUDA events) / back-to-back ms per call / host ms of one call from an idle "
      "GPU, both passes; kernels and GPU us per call")
for batch in BATCHES:
    for name in list(VARIANTS) + ["peer"]:
        rs = [r for r in rows if r["batch"] == batch and r["variant"] == name]
        print(f"b{batch} {name:12s} " + "  ".join(f"{r['p50_ms']:.2f} / {r['host_ms']:.2f} / {r['host_single_ms']:.2f}"
                                                   for r in rs)
              + f"   {rs[0]['kernels']:.0f} kernels {rs[0]['gpu_us']:.0f} us   err {rs[0]['err']}")
