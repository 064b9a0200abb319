"""Session z: the front path (`VisionMamba._forward_front`: per layer norm_in_proj, conv_xproj and the scan) against
the per-op path (FRONT_MAX_ROWS = 0) and the front path with the conv op and the x_proj GEMM (FRONT_CONV_XPROJ off),
in eager inference at 224 px, bf16 autocast (as the sweep runs it: weight cache on; FRONTAB_CACHE=0 turns it off), batch 1 and 8, beside DeiT-Ti (timm, sdpa) in
the same process (FRONTAB_BATCHES: other batches, e.g. 16,32,64; the front variants are forced on at any batch).
Per variant: the logits' max abs difference from the per-op path, the eager p50 latency (one
CUDA-event pair per call, as the sweep times it), the host ms per call (wall clock of back-to-back calls) and the
GPU kernels per call (torch.profiler: count and summed kernel time; not a CUDA graph, which would take the per-op
path: the front path is for uncaptured calls). Order A B C D, then D C B A (host speed drifts).
usage (repo root, on the box): (cd results/history/scripts && python frontab.py) ; writes $OUT/frontab$FRONTAB_TAG.json"""
import json, os, torch
from timing import event_median_ms, host_ms, kernel_table
import vimbench.models.vim as vim
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
BATCHES = [int(b) for b in os.environ.get("FRONTAB_BATCHES", "1,8").split(",")]
ON = 10 ** 9  # the front path forced on at every batch (FRONT_MAX_ROWS decides it in the model)
VARIANTS = {"per-op": dict(FRONT_MAX_ROWS=0), "front": dict(FRONT_MAX_ROWS=ON, FRONT_CONV_XPROJ=True),
            "front, conv op": dict(FRONT_MAX_ROWS=ON, FRONT_CONV_XPROJ=False)}
rows = []
vim_t = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
deit_t = create_model("deit_t", img_size=224, attn="sdpa").cuda().eval()


CACHE = os.environ.get("FRONTAB_CACHE", "1") == "1"  # autocast's weight cache on, as the sweep's eager cases run


def caller(model, x):
    def f():
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=CACHE):
            return model(x)
    return f


def setvars(name):
    for k, v in VARIANTS.get(name, {}).items():
        setattr(vim, k, v)


for batch in BATCHES:
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    setvars("per-op")
    ref = caller(vim_t, x)().float()
    errs = {}
    for name in VARIANTS:
        setvars(name)
        errs[name] = float((caller(vim_t, x)().float() - ref).abs().max())
    names = list(VARIANTS) + ["deit_t"]
    for order in (names, names[::-1]):
        for name in order:
            setvars(name)
            f = caller(deit_t if name == "deit_t" else vim_t, x)
            row = dict(batch=batch, variant=name, p50_ms=event_median_ms(f, n=30), host_ms=host_ms(f, n=30),
                       err=errs.get(name))
            if order is names:
                table = kernel_table(f, n=3, top=12)
                row.update(kernels=table["kernels_per_fwd"], gpu_us=table["gpu_us_per_fwd"], top=table["top"])
            rows.append(row)
            print(row, flush=True)
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, batches=BATCHES,
                           commit=os.environ.get("VIMBENCH_GIT_COMMIT"), autocast_cache=CACHE, rows=rows),
                      open(f"{OUT}/frontab{os.environ.get('FRONTAB_TAG', '')}.json", "w"), indent=1)
print("eager bf16 at 224 px: p50 ms (CUDA events) / host ms per call, both passes; kernels and GPU us per call")
for batch in BATCHES:
    for name in list(VARIANTS) + ["deit_t"]:
        rs = [r for r in rows if r["batch"] == batch and r["variant"] == name]
        print(f"b{batch} {name:15s} " + "  ".join(f"{r['p50_ms']:.2f} / {r['host_ms']:.2f}" for r in rs)
              + f"   {rs[0]['kernels']:.0f} kernels {rs[0]['gpu_us']:.0f} us   err {rs[0]['err']}")
