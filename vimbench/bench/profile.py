"""Where a forward pass spends its time: torch.profiler over one warmed-up forward, kernel time grouped into
categories (vimbench.analysis.trace: annotations, then kernel-name rules), analytic FLOPs next to it, a Chrome
trace per case. Rows go to a results file (kind "profile") like sweep rows; the stacked-bar figure across
resolutions is vimbench.report.profile_figure.

Achieved TFLOP/s = analytic FLOPs (vimbench.analysis.flops, MAC = 2 FLOPs, scan 9*B*L*E*N per direction) divided
by the median latency of separately timed forwards (not by profiled time: the profiler adds overhead);
per category, analytic FLOPs of that category divided by its profiled kernel time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vimbench.analysis.trace import ANNOTATION_PREFIX, CATEGORIES, cpu_events, gpu_events, summarize
from vimbench.errors import VimbenchError
from vimbench.results import ProfileResult

# Analytic FLOP categories (vimbench.analysis.flops) feeding each profile category's achieved TFLOP/s.
PROFILE_WARMUP = 2   # untimed forwards before the timed ones
PROFILE_ITERS = 5    # timed forwards (their p50 is the latency); then one profiled forward
_FLOP_CATEGORY = {"scan": "scan", "conv": "conv", "norm": "norm", "gemm": "gemm", "attention": "attention"}


# ---------------------------------------------------------------------------------------------- annotation

def _annotated(fn: Callable, category: str) -> Callable:
    from torch.profiler import record_function

    def wrapper(*args, **kwargs):
        with record_function(ANNOTATION_PREFIX + category):
            return fn(*args, **kwargs)

    return wrapper


def annotate_model(model) -> None:
    """Put record_function ranges around the model's categorized parts (rule 1 of vimbench.analysis.trace). Modifies the model."""
    import torch.nn as nn
    from torch.profiler import record_function

    from vimbench.models.ops import VimOps

    ops = getattr(model, "ops", None)
    if isinstance(ops, VimOps):
        # bimamba_inner (training: GEMMs, conv and scan in one op) stays unannotated: its kernels are
        # categorized by name (vimbench.analysis.trace), not as one range
        wrapped = VimOps(ops.name, _annotated(ops.add_rmsnorm, "norm"), _annotated(ops.conv1d_silu_bidir, "conv"),
                         _annotated(ops.bimamba_scan, "scan"), ops.bimamba_inner, ops.scan_fuses_dt_proj)
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


# ---------------------------------------------------------------------------------------------- one case

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def profile_case(key, out_dir: Path, warmup: int = PROFILE_WARMUP, iters: int = PROFILE_ITERS) -> ProfileResult:
    """Profile one case (a results.CaseKey): warm-up, timed forwards, one profiled forward; write its Chrome
    trace into out_dir and return its row (a ProfileResult; to_row() gives the kind "profile" dict)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vimbench.bench.env import now
    from vimbench.analysis.flops import model_counts
    from vimbench.bench.runner import build_model, make_forward, precision_flags
    from vimbench.bench.timing import MIN_ITERS, time_forward

    cuda = key.device == "cuda"
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
    result = ProfileResult(
        **_key_fields(key), status="ok", latency_ms_p50=latency_ms, timing_method=timing.method,
        profiled_ms=summary["total_ms"], flops=counts.flops, bytes=counts.bytes,
        tflops=counts.flops / (latency_ms / 1e3) / 1e12, trace=str(trace_path), top_kernels=summary["top_kernels"],
        timestamp=now(), flop_convention="MAC = 2 FLOPs; scan 9*B*L*E*N per direction (Mamba convention)")
    for cat in CATEGORIES:
        result.ms[cat] = summary["ms"][cat]
        result.pct[cat] = summary["pct"][cat]
        flop_cat = _FLOP_CATEGORY.get(cat)
        if flop_cat:
            result.flops_by[cat] = by[flop_cat]["flops"]
            t = summary["ms"][cat]
            result.tflops_by[cat] = by[flop_cat]["flops"] / (t / 1e3) / 1e12 if t > 0 else None
    del model, forward
    return result


def _key_fields(key) -> dict[str, Any]:
    return {k: getattr(key, k) for k in ("model", "res", "batch", "dtype", "implementation", "attn", "device")}


# ---------------------------------------------------------------------------------------------- several cases

@dataclass
class ProfileRun:
    results: list[ProfileResult]
    results_path: Path

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The rows as written to the results file."""
        return [r.to_row() for r in self.results]


def run_profile(model: str, resolutions: list[int], batch: int, dtype: str, backend: str = "torch",
                attn: str = "sdpa", device: str = "cuda", out_dir: Path = Path("results/profiles"),
                command: str = "", progress: Callable[[str, int], None] | None = None) -> ProfileRun:
    """Profile one model at several resolutions; rows written (and flushed) to a results file as each finishes,
    traces next to it (the share figure: vimbench.report.profile_figure). OOM rows are recorded as status "oom"
    and the run continues."""
    import torch

    from vimbench.bench.env import collect_env, now
    from vimbench.models import get_spec
    from vimbench.results import new_run_id, open_run

    spec = get_spec(model)
    if device == "cuda" and not torch.cuda.is_available():
        raise VimbenchError("no CUDA GPU is available; use --device cpu")
    if not resolutions:
        raise VimbenchError("give at least one resolution")
    run_id = new_run_id()
    out_dir = Path(out_dir)
    results_path = out_dir / f"profile-{spec.alias}-{run_id}.jsonl"
    settings = {"warmup": PROFILE_WARMUP, "iters": PROFILE_ITERS, "model": spec.alias, "batch": batch,
                "dtype": dtype, "backend": backend, "attn": attn, "device": device}
    store = open_run(results_path, "profile", command, collect_env(device), settings, run_id=run_id, created=now())
    with store:
        results = _profile_all(spec, resolutions, batch, dtype, backend, attn, device, out_dir, store, progress)
    return ProfileRun(results, results_path)


def _profile_all(spec, resolutions, batch, dtype, backend, attn, device, out_dir, store,
                 progress) -> list[ProfileResult]:
    import torch

    from vimbench.bench.runner import is_oom
    from vimbench.results import CaseKey

    results = []
    for i, res in enumerate(resolutions):
        key = CaseKey(spec.alias, res, batch, dtype, backend if spec.family == "vim" else "timm",
                      None if spec.family == "vim" else attn, device)
        if progress:
            progress(key.label(), i)
        try:
            result = profile_case(key, out_dir, PROFILE_WARMUP, PROFILE_ITERS)
        except Exception as exc:
            if not is_oom(exc):
                raise
            result = ProfileResult(**_key_fields(key), status="oom", error=str(exc).splitlines()[0][:300])
            if device == "cuda":
                torch.cuda.empty_cache()
        store.append(result)
        results.append(result)
    if progress:
        progress("done", len(resolutions))
    return results
