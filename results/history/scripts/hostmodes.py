"""Eager host time per Vim-Ti memory mode (issue 11: eager batch 1 vs DeiT-Ti eager, same run): the dt_proj fused
into the scan removes two torch ops per layer (the dt columns' cast and the delta GEMM). HOSTMODES_ROUNDS rounds
(12), each timing the eager Vim-Ti bf16 forward at HOSTMODES_RES px (224), batch HOSTMODES_BATCH (1) (wall clock of
20 back-to-back forwards, then a synchronize) in modes default (here: the delta GEMM, fusion off) / fused-dt (dt_proj
in the scan, in_proj one GEMM) / lean, order rotated per round, plus eager DeiT-Ti (attn eager and sdpa) in the same
round; then each mode's GPU time as a CUDA-graph replay; outputs compared with default. Writes
$OUT/hostmodes-b{BATCH}.json, at other resolutions hostmodes-r{RES}-b{BATCH}.json (the first run, batch 1 before the
file name had the batch: hostmodes.json)."""
import json, os, statistics
import torch
import timing
from vimbench.models.registry import create_model
from vimbench.models.vim import set_memory_mode, set_dt_proj_fusion

OUT = os.environ.get("OUT", "/tmp")


host_ms = timing.host_ms

RES = int(os.environ.get("HOSTMODES_RES", 224))
vim = create_model("vim_t", img_size=RES, backend="triton").cuda().eval()
deit = create_model("deit_t", img_size=RES, attn="sdpa").cuda().eval()
deit_e = create_model("deit_t", img_size=RES, attn="eager").cuda().eval()
BATCH = int(os.environ.get("HOSTMODES_BATCH", 1))
img = torch.randn(BATCH, 3, RES, RES, device="cuda")
MODES = ("default", "fused-dt", "lean")  # default here: the delta GEMM (fusion off, as before 948d304)


def use(mode):
    if mode == "fused-dt":
        set_memory_mode(vim, "default"); set_dt_proj_fusion(vim, True, split_in_proj=False)
    elif mode == "default":
        set_memory_mode(vim, "default"); set_dt_proj_fusion(vim, False, split_in_proj=False)
    else:
        set_memory_mode(vim, mode)


rounds, diffs = [], {}
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    use("default"); ref = vim(img).float()
    for mode in MODES:
        use(mode)
        for _ in range(5):
            out = vim(img)
        diffs[mode] = float((out.float() - ref).abs().max())
    for i in range(int(os.environ.get("HOSTMODES_ROUNDS", 12))):
        r = {}
        order = MODES[i % 3:] + MODES[:i % 3]
        for mode in order:
            use(mode)
            r[mode] = host_ms(lambda: vim(img))
        r["deit_t_sdpa"] = host_ms(lambda: deit(img))
        r["deit_t_eager"] = host_ms(lambda: deit_e(img))
        rounds.append(r)
        print(i, {k: round(v, 3) for k, v in r.items()}, flush=True)
graph_us = {}
for mode in MODES:  # GPU time without host cost: the forward captured in a CUDA graph, replayed
    use(mode)
    def fwd():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            vim(img)
    graph_us[mode] = min(timing.graph_us(fwd, reps=10) for _ in range(3))
    print("graph us", mode, round(graph_us[mode], 1), flush=True)
summary = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
summary.update({f"graph_us/{k}": v for k, v in graph_us.items()})
for mode in MODES[1:]:
    summary[f"{mode}/default paired median"] = statistics.median(r[mode] / r["default"] for r in rounds)
summary["default/deit_t_eager paired median"] = statistics.median(r["default"] / r["deit_t_eager"] for r in rounds)
name = f"hostmodes-b{BATCH}.json" if RES == 224 else f"hostmodes-r{RES}-b{BATCH}.json"
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
               commit=os.environ.get("VIMBENCH_GIT_COMMIT"), res=RES, batch=BATCH, rounds=rounds, summary=summary,
               max_abs_diff_vs_default=diffs), open(f"{OUT}/{name}", "w"), indent=1)
print("max |diff| vs default:", diffs)
for k, v in summary.items():
    print(f"{k:40s} {v:.3f}")
