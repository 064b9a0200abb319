"""The direct launch path vs Triton's launches with the box's drifting host speed taken out: 12 rounds, each
timing the eager Vim-Ti bf16 forward at 224 px, batch 1 and 64 (host ms per forward: wall clock of 20 back-to-back
forwards, then a synchronize), with and without the direct path in alternating order, plus eager DeiT-Ti sdpa
batch 1 in the same round as the host's yardstick; paired differences per round. Then cProfile's top functions
(own time) over 20 Vim forwards with the direct path. Writes $OUT/fastab2.json."""
import cProfile, io, json, os, pstats, statistics, time
import torch
import kernels.launch as L
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")


def host_ms(fn, n=20):
    torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e3


vim = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
deit = create_model("deit_t", img_size=224, attn="sdpa").cuda().eval()
img = torch.randn(1, 3, 224, 224, device="cuda")
img64 = torch.randn(64, 3, 224, 224, device="cuda")
rounds = []
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    for direct in (False, True):
        with L.fast_launch(direct):
            for _ in range(5):
                vim(img)
    for i in range(12):
        r = {}
        for direct in ((False, True) if i % 2 == 0 else (True, False)):
            with L.fast_launch(direct):
                r["direct" if direct else "triton"] = host_ms(lambda: vim(img))
                r["b64_direct" if direct else "b64_triton"] = host_ms(lambda: vim(img64), n=10)
        r["deit_t"] = host_ms(lambda: deit(img))
        rounds.append(r)
        print(i, {k: round(v, 3) for k, v in r.items()}, flush=True)
    with L.fast_launch(True):
        prof = cProfile.Profile(); prof.enable()
        for _ in range(20):
            vim(img)
        torch.cuda.synchronize(); prof.disable()
s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(30)
ratio = [r["direct"] / r["triton"] for r in rounds]
summary = dict(triton_ms=statistics.median(r["triton"] for r in rounds),
               direct_ms=statistics.median(r["direct"] for r in rounds),
               deit_t_ms=statistics.median(r["deit_t"] for r in rounds),
               paired_ratio_median=statistics.median(ratio), paired_ratio_min=min(ratio), paired_ratio_max=max(ratio),
               b64_paired_ratio_median=statistics.median(r["b64_direct"] / r["b64_triton"] for r in rounds))
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               rounds=rounds, summary=summary, cprofile=s.getvalue()), open(f"{OUT}/fastab2.json", "w"), indent=1)
print(s.getvalue()[:3500])
print(summary)
