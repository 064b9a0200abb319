"""Where a forward pass spends its time: torch.profiler over one warmed-up forward, kernel time grouped into
categories, analytic FLOPs next to it, a Chrome trace per case, a table and a stacked-bar figure across
resolutions. Rows go to a results file (kind "profile") like sweep rows.

How a kernel (GPU) or an operator's self time (CPU) gets its category, first rule that applies:
1. Annotation: vimbench wraps the Vim op table's calls (add_rmsnorm -> norm, conv1d_silu_bidir -> conv,
   bimamba_scan -> scan) and DeiT's modules (Attention -> attention, nn.Linear -> gemm, LayerNorm -> norm) in
   torch.profiler.record_function ranges named "vimbench::<category>". A kernel (or CPU op) inside such a range
   takes the innermost range's category. This is what puts the torch backend's scan (cumsum, exp, mul kernels)
   under "scan", and eager DeiT's Q K^T / P V matmuls under "attention" while qkv/proj stay "gemm".
2. Kernel-name rules, on the lower-cased name, in the order of NAME_RULES (regular expressions): our Triton
   kernels and the official CUDA ones by name, then cuBLAS/CUTLASS/cuDNN GEMM names (gemm, gemv, cutlass,
   cublas, xmma, wgmma, nvjet, splitk, implicit fprop convs such as the patch embedding), flash/efficient
   attention names and softmax, then the elementwise/copy family (elementwise, vectorized/unrolled kernels,
   copies, memcpy/memset, cat, flip, fill, index, reductions, activations, Triton's fused pointwise kernels).
3. Anything else is "other".
GPU: kernels, memcpy and memset events of the trace count, by their device duration. CPU: each aten op's self
time (its duration minus its children's), so nested ops are not counted twice. On CPU, convolutions run as
mkldnn/slow conv ops: outside annotations they count as "conv" (that includes Vim's patch embedding, a GEMM
on the GPU and in the analytic FLOPs).

Achieved TFLOP/s = analytic FLOPs (vimbench.bench.flops, MAC = 2 FLOPs, scan 9*B*L*E*N per direction) divided
by the median latency of separately timed forwards (not by profiled time: the profiler adds overhead);
per category, analytic FLOPs of that category divided by its profiled kernel time.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vimbench.errors import VimbenchError

CATEGORIES = ("scan", "conv", "norm", "gemm", "attention", "elementwise/copy", "other")
ANNOTATION_PREFIX = "vimbench::"
# Analytic FLOP categories (vimbench.bench.flops) feeding each profile category's achieved TFLOP/s.
_FLOP_CATEGORY = {"scan": "scan", "conv": "conv", "norm": "norm", "gemm": "gemm", "attention": "attention"}

NAME_RULES: tuple[tuple[str, str], ...] = (
    # vimbench's Triton kernels (kernels/*/fwd.py: _scan_kernel, _conv1d_silu_bidir_kernel,
    # _add_rmsnorm_kernel) and the official CUDA ones (selective_scan_fwd_kernel, causal_conv1d_fwd_kernel)
    ("scan", r"_scan_kernel|selective_scan|bimamba|scan_fwd|ssm_scan|chunk_scan|state_passing"),
    ("conv", r"_conv1d_silu_bidir_kernel|conv1d|conv_silu|causal_conv|depthwise|conv_depthwise|grouped_direct"),
    ("norm", r"_add_rmsnorm_kernel|rmsnorm|rms_norm|_norm_kernel|layer_norm|layernorm|group_norm|batch_norm"),
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("gemm", r"gemm|gemv|cutlass|cublas|xmma|wgmma|nvjet|splitk|matmul|aten::mm$|aten::bmm|aten::addmm|"
             r"aten::baddbmm|aten::linear|fprop|implicit"),
    ("conv", r"conv"),
    ("elementwise/copy", r"elementwise|vectorized|unrolled|copy|memcpy|memset|cat|flip|fill|index|reduce|"
                         r"silu|gelu|sigmoid|softplus|exp|add|mul|div|sub|neg|where|clamp|pow|sqrt|mean|sum|"
                         r"transpose|contiguous|clone|stack|pad|zero|triton_poi|triton_per|triton_red|"
                         r"aten::to$|_to_copy|empty|view|reshape|expand|slice|select|permute|unsqueeze|split|"
                         r"chunk|narrow|as_strided|aten::t$|flatten"),
)
_COMPILED_RULES = tuple((cat, re.compile(pattern)) for cat, pattern in NAME_RULES)


def categorize(name: str) -> str:
    """Category of one kernel or operator by name alone (rule 2 of the module docstring)."""
    low = name.lower()
    for category, pattern in _COMPILED_RULES:
        if pattern.search(low):
            return category
    return "other"


# ---------------------------------------------------------------------------------------------- annotation

def _annotated(fn: Callable, category: str) -> Callable:
    from torch.profiler import record_function

    def wrapper(*args, **kwargs):
        with record_function(ANNOTATION_PREFIX + category):
            return fn(*args, **kwargs)

    return wrapper


def annotate_model(model) -> None:
    """Put record_function ranges around the model's categorized parts (rule 1). Modifies the model."""
    import torch.nn as nn
    from torch.profiler import record_function

    from vimbench.models.ops import VimOps

    ops = getattr(model, "ops", None)
    if isinstance(ops, VimOps):
        wrapped = VimOps(ops.name, _annotated(ops.add_rmsnorm, "norm"), _annotated(ops.conv1d_silu_bidir, "conv"),
                         _annotated(ops.bimamba_scan, "scan"))
        for module in model.modules():
            if isinstance(getattr(module, "ops", None), VimOps):
                module.ops = wrapped
        return
    try:
        from timm.models.vision_transformer import Attention
    except ImportError:  # no timm: DeiT cannot have been built either
        return
    for module in model.modules():
        if isinstance(module, Attention):
            category = "attention"
        elif isinstance(module, nn.Linear):
            category = "gemm"
        elif isinstance(module, nn.LayerNorm):
            category = "norm"
        else:
            continue
        stack: list = []

        def pre(_module, _args, name=ANNOTATION_PREFIX + category, stack=stack):
            rf = record_function(name)
            rf.__enter__()
            stack.append(rf)

        def post(_module, _args, _out, stack=stack):
            stack.pop().__exit__(None, None, None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


# ---------------------------------------------------------------------------------------------- trace parsing

@dataclass(frozen=True)
class TimedEvent:
    name: str
    category: str
    us: float


def _innermost(intervals: list[tuple[float, float, str]], ts: float, end: float) -> str | None:
    best = None
    for start, stop, cat in intervals:
        if start <= ts + 1e-3 and end <= stop + 1e-3 and (best is None or stop - start < best[1] - best[0]):
            best = (start, stop, cat)
    return best[2] if best else None


def _annotation_intervals(events: list[dict], cat_name: str) -> list[tuple[float, float, str]]:
    out = []
    for e in events:
        if e.get("cat") == cat_name and str(e.get("name", "")).startswith(ANNOTATION_PREFIX) and "dur" in e:
            category = e["name"][len(ANNOTATION_PREFIX):]
            if category in CATEGORIES:
                out.append((float(e["ts"]), float(e["ts"]) + float(e["dur"]), category))
    return out


def gpu_events(trace: dict) -> list[TimedEvent]:
    """Kernels, memcpy and memset of a Chrome trace, each with its category and device duration (us)."""
    events = trace.get("traceEvents", [])
    ranges = _annotation_intervals(events, "gpu_user_annotation")
    out = []
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            ts, dur = float(e["ts"]), float(e.get("dur", 0.0))
            cat = _innermost(ranges, ts, ts + dur) or categorize(e["name"])
            out.append(TimedEvent(e["name"], cat, dur))
    return out


def cpu_events(trace: dict) -> list[TimedEvent]:
    """Each aten op's self time (us) on the CPU, with its category."""
    events = trace.get("traceEvents", [])
    ranges = _annotation_intervals(events, "user_annotation")
    by_thread: dict[Any, list[dict]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "cpu_op":
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out = []
    for ops in by_thread.values():
        ops.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
        stack: list[list] = []  # [end, event, children_us]
        done: list[tuple[dict, float]] = []

        def close(entry):
            done.append((entry[1], float(entry[1].get("dur", 0.0)) - entry[2]))
            if stack:
                stack[-1][2] += float(entry[1].get("dur", 0.0))

        for e in ops:
            ts, dur = float(e["ts"]), float(e.get("dur", 0.0))
            while stack and ts >= stack[-1][0] - 1e-3:
                close(stack.pop())
            stack.append([ts + dur, e, 0.0])
        while stack:
            close(stack.pop())
        for e, self_us in done:
            ts = float(e["ts"])
            cat = _innermost(ranges, ts, ts + float(e.get("dur", 0.0))) or categorize(e["name"])
            out.append(TimedEvent(e["name"], cat, max(self_us, 0.0)))
    return out


def summarize(events: list[TimedEvent], top: int = 15) -> dict[str, Any]:
    """ms and % per category, plus the top kernels by time (name, category, ms, calls)."""
    total_us = sum(e.us for e in events)
    ms = {c: 0.0 for c in CATEGORIES}
    kernels: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        ms[e.category] += e.us / 1e3
        k = kernels[(e.name, e.category)]
        k[0] += e.us / 1e3
        k[1] += 1
    pct = {c: (100.0 * ms[c] * 1e3 / total_us if total_us else 0.0) for c in CATEGORIES}
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return {"total_ms": total_us / 1e3, "ms": ms, "pct": pct,
            "top_kernels": [{"name": n[:200], "category": c, "ms": v[0], "calls": v[1]} for (n, c), v in ranked]}


# ---------------------------------------------------------------------------------------------- one case

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def profile_case(key, out_dir: Path, warmup: int = 2, iters: int = 5) -> dict[str, Any]:
    """Profile one case (a results.CaseKey): warm-up, timed forwards, one profiled forward; write its Chrome
    trace into out_dir and return the row (kind "profile")."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vimbench.bench.env import now
    from vimbench.bench.flops import model_counts
    from vimbench.bench.runner import build_model, make_forward, precision_flags
    from vimbench.bench.timing import MIN_ITERS, time_forward

    cuda = key.device == "cuda"
    row: dict[str, Any] = {"kind": "profile", **{k: getattr(key, k) for k in ("model", "res", "batch", "dtype",
                                                                              "implementation", "attn", "device")}}
    with precision_flags(key.dtype):
        model = build_model(key)
        annotate_model(model)
        forward = make_forward(model, key)
        timing = time_forward(forward, key.device, warmup, max(iters, MIN_ITERS))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            forward()
            if cuda:
                torch.cuda.synchronize()
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_path = out_dir / f"trace_{_slug(key.label())}.json"
    prof.export_chrome_trace(str(trace_path))
    trace = json.loads(trace_path.read_text())
    events = gpu_events(trace) if cuda else cpu_events(trace)
    if not events:
        raise VimbenchError(f"the profiler recorded no {'kernels' if cuda else 'operators'} for {key.label()}")
    summary = summarize(events)
    spec_attn = key.attn or "sdpa"
    counts = model_counts(key.model, key.res, key.batch, key.dtype, attn=spec_attn)
    by = counts.by_category()
    latency_ms = timing.p50_ms
    row.update({
        "status": "ok",
        "latency_ms_p50": latency_ms,
        "timing_method": timing.method,
        "profiled_ms": summary["total_ms"],
        "flops": counts.flops,
        "bytes": counts.bytes,
        "tflops": counts.flops / (latency_ms / 1e3) / 1e12,
        "trace": str(trace_path),
        "top_kernels": summary["top_kernels"],
        "timestamp": now(),
        "flop_convention": "MAC = 2 FLOPs; scan 9*B*L*E*N per direction (Mamba convention)",
    })
    for cat in CATEGORIES:
        row[f"ms_{cat}"] = summary["ms"][cat]
        row[f"pct_{cat}"] = summary["pct"][cat]
        flop_cat = _FLOP_CATEGORY.get(cat)
        if flop_cat:
            row[f"flops_{cat}"] = by[flop_cat]["flops"]
            t = summary["ms"][cat]
            row[f"tflops_{cat}"] = by[flop_cat]["flops"] / (t / 1e3) / 1e12 if t > 0 else None
    del model, forward
    return row


# ---------------------------------------------------------------------------------------------- several cases

def plot_shares(rows: list[dict[str, Any]], path: Path) -> Path:
    """Stacked bars of each category's share (%) of profiled time vs resolution, one bar per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["res"])
    labels = [str(r["res"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 2), 4.2))
    bottom = [0.0] * len(rows)
    colors = plt.get_cmap("tab10").colors
    for i, cat in enumerate(CATEGORIES):
        values = [r[f"pct_{cat}"] for r in rows]
        ax.bar(labels, values, bottom=bottom, label=cat, color=colors[i % len(colors)])
        bottom = [b + v for b, v in zip(bottom, values)]
    first = rows[0]
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("share of profiled kernel time (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{first['model']} {first['implementation']} b{first['batch']} {first['dtype']} "
                 f"{first['device']}", fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass
class ProfileRun:
    rows: list[dict[str, Any]]
    results_path: Path
    figure_path: Path | None


def run_profile(model: str, resolutions: list[int], batch: int, dtype: str, backend: str = "torch",
                attn: str = "sdpa", device: str = "cuda", out_dir: Path = Path("results/profiles"),
                command: str = "", progress: Callable[[str, int], None] | None = None) -> ProfileRun:
    """Profile one model at several resolutions; rows written (and flushed) to a results file as each finishes,
    traces and the share figure next to it. OOM rows are recorded as status "oom" and the run continues."""
    import torch

    from vimbench.bench.env import collect_env, now
    from vimbench.bench.runner import is_oom
    from vimbench.models import get_spec
    from vimbench.results import CaseKey, ResultsFile, new_run_id

    spec = get_spec(model)
    if device == "cuda" and not torch.cuda.is_available():
        raise VimbenchError("no CUDA GPU is available; use --device cpu")
    if not resolutions:
        raise VimbenchError("give at least one resolution")
    run_id = new_run_id()
    out_dir = Path(out_dir)
    results_path = out_dir / f"profile-{spec.alias}-{run_id}.jsonl"
    store = ResultsFile(results_path, {"run_id": run_id, "created": now(), "command": command,
                                       "env": collect_env(device)})
    rows = []
    for i, res in enumerate(resolutions):
        key = CaseKey(spec.alias, res, batch, dtype, backend if spec.family == "vim" else "timm",
                      None if spec.family == "vim" else attn, device)
        if progress:
            progress(key.label(), i)
        try:
            row = profile_case(key, out_dir)
        except Exception as exc:
            if not is_oom(exc):
                raise
            row = {"kind": "profile", "model": key.model, "res": res, "batch": batch, "dtype": dtype,
                   "implementation": key.implementation, "attn": key.attn, "device": device, "status": "oom",
                   "error": str(exc).splitlines()[0][:300]}
            if device == "cuda":
                torch.cuda.empty_cache()
        store.append(row)
        rows.append(row)
    if progress:
        progress("done", len(resolutions))
    ok = [r for r in rows if r.get("status") == "ok"]
    figure = plot_shares(ok, out_dir / f"profile-{spec.alias}-{run_id}.png") if ok else None
    return ProfileRun(rows, results_path, figure)
