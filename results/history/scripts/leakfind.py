"""Which CUDA tensors outlive a compiled case, and who holds them (the DeiT-Ti compiled-case carry-over: 6-14 MiB
per case on the H200, results/headline-rerun-h200-2026-12-02.jsonl; the pattern fits the last two cases' frozen
bf16 weights + fp32 pos_embed). Runs DeiT-Ti (and Vim-Ti) compiled cases through the sweep's own runner, then
after the runner's cleanup lists live CUDA tensors (gc) with their sizes and a referrer chain, and the allocator's
allocated bytes. Usage: python results/history/scripts/leakfind.py; writes $OUT/leakfind.txt."""
import gc, os, sys, types
import torch
from vimbench.bench import runner
from vimbench.results import CaseKey

OUT = os.environ.get("OUT", "/tmp")
lines = []


def say(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    lines.append(s)


def live_cuda():
    gc.collect()
    out = []
    for o in gc.get_objects():
        try:
            if isinstance(o, torch.Tensor) and type(o) in (torch.Tensor, torch.nn.Parameter) and o.is_cuda:
                out.append(o)
        except Exception:
            pass
    return out


def describe(o):
    name = type(o).__name__
    if isinstance(o, dict):
        keys = [str(k)[:40] for k in list(o)[:5]]
        return f"dict({len(o)}) keys={keys}"
    if isinstance(o, types.ModuleType):
        return f"module {o.__name__} file={getattr(o, '__file__', None)}"
    if isinstance(o, types.FunctionType):
        return f"function {o.__qualname__} in {o.__module__}"
    if isinstance(o, (list, tuple)):
        return f"{name}({len(o)})"
    return f"{name} {getattr(o, '__qualname__', '')}"[:160]


def chain(o, depth=0, seen=None, limit=8):
    seen = seen if seen is not None else {id(lines)}
    if depth >= limit:
        return
    for r in gc.get_referrers(o):
        if id(r) in seen or isinstance(r, types.FrameType):
            continue
        seen.add(id(r))
        say("  " * (depth + 2) + describe(r))
        chain(r, depth + 1, seen, limit)
        return


def key(model, res, compile_mode, impl="timm", attn="sdpa"):
    return CaseKey(model=model, res=res, batch=64, dtype="bf16", implementation=impl, attn=attn, device="cuda",
                   compile=compile_mode)


base = {id(t) for t in live_cuda()}
say("allocated at start MiB", torch.cuda.memory_allocated() / 2**20)
cases = [key("deit_t", 512, "none"), key("deit_t", 512, "default"), key("deit_t", 1024, "default"),
         key("deit_t", 1536, "default"), key("vim_t", 512, "default", "triton", None)]
for k in cases:
    r = runner.run_case(k, warmup=2, iters=5)
    left = [t for t in live_cuda() if id(t) not in base]
    say(f"after {k.label()}: status={r.status} allocated MiB={torch.cuda.memory_allocated() / 2**20:.2f}"
        f" live new CUDA tensors={len(left)} bytes={sum(t.numel() * t.element_size() for t in left) / 2**20:.2f} MiB")
    for t in sorted(left, key=lambda t: -t.numel())[:3]:
        say(f"    {tuple(t.shape)} {t.dtype} {t.numel() * t.element_size() / 2**20:.2f} MiB; held by:")
        chain(t)
open(os.path.join(OUT, "leakfind.txt"), "w").write("\n".join(lines) + "\n")
