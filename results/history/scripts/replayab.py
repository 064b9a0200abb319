"""Replayed calls (kernels.launch.CallMemo) on the H200 host, issue 11's eager batch 1: REPLAYAB_ROUNDS rounds (12),
each timing the eager Vim-Ti bf16 forward at 224 px (wall clock of 20 back-to-back forwards, then a synchronize;
timing.host_ms) with replays on and off (order alternated per round) at batch 1 and 64, and eager DeiT-Ti (attn
eager and sdpa) in the same round; outputs with and without replays compared bitwise. Writes $OUT/replayab.json.
REPLAYAB_INFERENCE=1: under torch.inference_mode() (as `vimbench sweep` runs forwards) instead of torch.no_grad();
then writes $OUT/replayab-inference.json."""
import json, os, statistics
import torch
import timing
import kernels.launch as kl
from vimbench.models.registry import create_model

OUT = os.environ.get("OUT", "/tmp")
vim = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
deit = create_model("deit_t", img_size=224, attn="sdpa").cuda().eval()
deit_e = create_model("deit_t", img_size=224, attn="eager").cuda().eval()
imgs = {b: torch.randn(b, 3, 224, 224, device="cuda") for b in (1, 64)}
rounds, equal = [], {}
INFERENCE = os.environ.get("REPLAYAB_INFERENCE") == "1"
with (torch.inference_mode() if INFERENCE else torch.no_grad()), torch.autocast("cuda", dtype=torch.bfloat16):
    for b, img in imgs.items():
        with kl.call_replay(False):
            want = vim(img)
        for _ in range(3):
            got = vim(img)
        equal[b] = bool(torch.equal(want, got))
    replayed = kl.stats["replayed"]; vim(imgs[1]); per_forward = kl.stats["replayed"] - replayed
    for i in range(int(os.environ.get("REPLAYAB_ROUNDS", 12))):
        r = {}
        for on in ((True, False) if i % 2 == 0 else (False, True)):
            with kl.call_replay(on):
                for b, img in imgs.items():
                    r[f"b{b}_{'replay' if on else 'no_replay'}"] = timing.host_ms(lambda: vim(img))
        r["b1_deit_t_sdpa"] = timing.host_ms(lambda: deit(imgs[1]))
        r["b1_deit_t_eager"] = timing.host_ms(lambda: deit_e(imgs[1]))
        rounds.append(r)
        print(i, {k: round(v, 3) for k, v in r.items()}, flush=True)
summary = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
for b in imgs:
    summary[f"b{b} replay/no_replay paired median"] = statistics.median(
        r[f"b{b}_replay"] / r[f"b{b}_no_replay"] for r in rounds)
summary["b1 replay/deit_t_eager paired median"] = statistics.median(r["b1_replay"] / r["b1_deit_t_eager"] for r in rounds)
json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, commit=os.environ.get("VIMBENCH_GIT_COMMIT"),
               grad_mode="inference_mode" if INFERENCE else "no_grad", rounds=rounds, summary=summary, outputs_bitwise_equal=equal, calls_replayed_per_b1_forward=per_forward),
          open(f"{OUT}/replayab{'-inference' if INFERENCE else ''}.json", "w"), indent=1)
print("outputs bitwise equal with and without replays:", equal, "; calls replayed per batch-1 forward:", per_forward)
for k, v in summary.items():
    print(f"{k:40s} {v:.3f}")
