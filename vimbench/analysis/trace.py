"""Categories of a forward's or a training step's kernels and operators, and the GPU's busy and idle time, from a
torch.profiler Chrome trace (no measuring here: the trace comes from vimbench.bench.profile).

How a kernel (GPU) or an operator's self time (CPU) gets its category, first rule that applies:
1. Annotation: vimbench wraps the Vim op table's calls (add_rmsnorm -> norm, conv1d_silu_bidir -> conv,
   bimamba_scan -> scan), DeiT's modules (Attention -> attention, nn.Linear -> gemm, LayerNorm -> norm) and, in a
   training step, the optimizer's step (-> optimizer) in torch.profiler.record_function ranges named
   "vimbench::<category>". A kernel (or CPU op) inside such a range
   takes the innermost range's category. This is what puts the torch backend's scan (cumsum, exp, mul kernels)
   under "scan", and eager DeiT's Q K^T / P V matmuls under "attention" while qkv/proj stay "gemm".
2. Kernel-name rules, on the lower-cased name, first applying first: the @triton.jit kernels of the registered
   kernel ops (vimbench.kerneltools.registry: forward and backward kernels), each in its op's category; then
   NAME_RULES (regular expressions): the optimizer's kernels and ops (torch's multi_tensor_apply / foreach
   kernels, fused Adam), the official CUDA kernels by name, the loss (log-softmax and NLL of the cross-entropy:
   elementwise/copy, not attention), then cuBLAS/CUTLASS/cuDNN GEMM names (gemm, gemv, cutlass, cublas, xmma,
   wgmma, nvjet, splitk, implicit fprop convs such as the patch embedding), flash/efficient attention names and
   softmax, then the elementwise/copy family (elementwise, vectorized/unrolled kernels, copies, memcpy/memset,
   cat, flip, fill, index, reductions, activations, Triton's fused pointwise kernels).
3. Anything else is "other".
GPU: kernels, memcpy and memset events of the trace count, by their device duration. CPU: each aten op's self
time (its duration minus its children's), so nested ops are not counted twice. On CPU, convolutions run as
mkldnn/slow conv ops: outside annotations they count as "conv" (that includes Vim's patch embedding, a GEMM
on the GPU and in the analytic FLOPs).

GPU busy and idle (gpu_timeline): kernels of several streams can overlap, so the busy time is the length of the
union of the kernel, memcpy and memset intervals (not their sum); the span runs from the profiled call's start
(its record_function range PROFILED_RANGE on the CPU timeline, which the profiler aligns with the GPU's) or the
first kernel, whichever is earlier, to the last kernel's end or the range's end, whichever is later; idle = span -
busy: the time the GPU waited on the host (Python, launches, the autograd engine).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("scan", "conv", "norm", "gemm", "attention", "elementwise/copy", "optimizer", "other")
ANNOTATION_PREFIX = "vimbench::"
# The record_function range around the one profiled call (forward or training step): the span of gpu_timeline.
PROFILED_RANGE = "vimbench.profiled_call"

# After the registered kernel ops' own kernels (registry_rules): the official CUDA ones
# (selective_scan_fwd_kernel, causal_conv1d_fwd_kernel) and vendor library names.
NAME_RULES: tuple[tuple[str, str], ...] = (
    # before the elementwise family ("multi" contains "mul"): torch.optim's foreach and fused kernels
    ("optimizer", r"multi_tensor_apply|fused_adam|adamw|_foreach_|optimizer\.step"),
    ("scan", r"selective_scan|bimamba|scan_fwd|ssm_scan|chunk_scan|state_passing"),
    ("conv", r"conv1d|conv_silu|causal_conv|depthwise|conv_depthwise|grouped_direct"),
    ("norm", r"rmsnorm|rms_norm|_norm_kernel|layer_norm|layernorm|group_norm|batch_norm"),
    # the cross-entropy's log-softmax and NLL (cunn_SoftMaxForward<..., LogSoftMaxForwardEpilogue>): not attention
    ("elementwise/copy", r"logsoftmax|log_softmax|nll_loss"),
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


def registry_rules() -> tuple[tuple[str, str], ...]:
    """One rule per @triton.jit kernel of the registered ops (vimbench.kerneltools.registry): its name, its op's
    category."""
    from vimbench.kerneltools.registry import list_ops

    return tuple((op.category, re.escape(name.lower())) for op in list_ops() for name in op.kernel_names())


_compiled: tuple[int, tuple[tuple[str, re.Pattern], ...]] | None = None


def _rules() -> tuple[tuple[str, re.Pattern], ...]:
    global _compiled
    from vimbench.kerneltools.registry import generation

    if _compiled is None or _compiled[0] != generation():
        rules = registry_rules() + NAME_RULES
        _compiled = (generation(), tuple((cat, re.compile(pattern)) for cat, pattern in rules))
    return _compiled[1]


def categorize(name: str) -> str:
    """Category of one kernel or operator by name alone (rule 2 of the module docstring)."""
    low = name.lower()
    for category, pattern in _rules():
        if pattern.search(low):
            return category
    return "other"


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


# ---------------------------------------------------------------------------------------------- busy and idle

@dataclass(frozen=True)
class GpuTimeline:
    """The profiled call on the GPU's timeline (ms): span = busy + idle (module docstring)."""
    span_ms: float
    busy_ms: float
    idle_ms: float


def union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals: overlapping kernels (several streams) count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def gpu_timeline(trace: dict) -> GpuTimeline | None:
    """Busy and idle time of the GPU over the profiled call (module docstring); None without any kernel."""
    events = trace.get("traceEvents", [])
    kernels = [(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
               if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not kernels:
        return None
    start, end = min(s for s, _ in kernels), max(e for _, e in kernels)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "user_annotation" and e.get("name") == PROFILED_RANGE:
            start, end = min(start, float(e["ts"])), max(end, float(e["ts"]) + float(e.get("dur", 0.0)))
    busy = union_us(kernels)
    return GpuTimeline((end - start) / 1e3, busy / 1e3, (end - start - busy) / 1e3)
