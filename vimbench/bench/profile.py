"""Where a forward pass or a training step spends its time: torch.profiler over one warmed-up call, kernel time
grouped into categories (vimbench.analysis.trace: annotations, then kernel-name rules), the GPU's busy and idle
time over that call, analytic FLOPs next to it, a Chrome trace per case. Rows go to a results file (kind
"profile") like sweep rows; the stacked-bar figure across resolutions is vimbench.report.profile_figure.

Mode "infer": warm-up forwards, timed forwards (their p50 is the latency), one profiled forward.
Mode "train" (one step as vimbench.bench.train defines it: zero_grad, forward under autocast, cross-entropy,
backward, AdamW): the first step untimed (it allocates the gradients and the AdamW state and, on the triton
backend, compiles the backward kernels; every trainable parameter must then hold a gradient), more untimed
warm-up steps (at least TRAIN_MIN_WARMUP in all), timed steps with vimbench.bench.train.time_train_steps (the
step's p50 is the latency, with the forward / backward split), then one profiled step. The optimizer's step runs
inside a "vimbench::optimizer" range, so its kernels form the category "optimizer".

Achieved TFLOP/s = analytic FLOPs (vimbench.analysis.flops, MAC = 2 FLOPs, scan 9*B*L*E*N per direction; a
training step: 3 x forward by convention, flops.TRAIN_FLOP_CONVENTION) divided by the p50 of the separately timed
calls (not by profiled time: the profiler adds overhead); per category, analytic FLOPs of that category divided
by its profiled kernel time (a training step: only the categories counted exactly, gemm and attention).
"""
from __future__ import annotations

import dataclasses
import gc
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vimbench.analysis.trace import (ANNOTATION_PREFIX, CATEGORIES, PROFILED_RANGE, cpu_events, gpu_events,
                                     gpu_timeline, summarize)
from vimbench.errors import VimbenchError
from vimbench.results import ProfileResult

# Analytic FLOP categories (vimbench.analysis.flops) feeding each profile category's achieved TFLOP/s.
PROFILE_WARMUP = 2   # untimed calls before the timed ones
PROFILE_ITERS = 5    # timed calls (their p50 is the latency); then one profiled call
TRAIN_MIN_WARMUP = 2  # untimed steps at least: the first allocates AdamW state and compiles the backward kernels
MODES = ("infer", "train")
FORWARD_FLOP_CONVENTION = "MAC = 2 FLOPs; scan 9*B*L*E*N per direction (Mamba convention)"
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
        # dataclasses.replace keeps every other field (zgate, the dt_proj fusion flag): a rebuilt VimOps once
        # dropped zgate, so that a lean-gated profile silently ran lean
        wrapped = dataclasses.replace(ops, add_rmsnorm=_annotated(ops.add_rmsnorm, "norm"),
                                      conv1d_silu_bidir=_annotated(ops.conv1d_silu_bidir, "conv"),
                                      bimamba_scan=_annotated(ops.bimamba_scan, "scan"),
                                      zgate=None if ops.zgate is None else _annotated(ops.zgate, "gemm"),
                                      conv_xproj=None if ops.conv_xproj is None else
                                      _annotated(ops.conv_xproj, "conv"))
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


def annotate_optimizer(optimizer) -> None:
    """Run the optimizer's step inside a "vimbench::optimizer" range (rule 1 of vimbench.analysis.trace), so its
    kernels (multi_tensor_apply on the GPU, per-tensor ops on the CPU) form their own category. Modifies it."""
    optimizer.step = _annotated(optimizer.step, "optimizer")


def profile_case(key, out_dir: Path, warmup: int = PROFILE_WARMUP, iters: int = PROFILE_ITERS) -> ProfileResult:
    """Profile one case (a results.CaseKey; key.mode: infer or train): warm-up, timed calls, one profiled call
    (module docstring); write its Chrome trace into out_dir and return its row (a ProfileResult; to_row() gives
    the kind "profile" dict)."""
    from vimbench.bench.env import now
    from vimbench.bench.runner import build_model, make_forward, precision_flags
    from vimbench.bench.timing import MIN_ITERS, time_forward

    if key.mode not in MODES:
        raise VimbenchError(f"unknown profile mode {key.mode!r}; choose from {', '.join(MODES)}")
    cuda = key.device == "cuda"
    result = ProfileResult(**_key_fields(key), status="ok", timestamp=now())
    with precision_flags(key.dtype):
        model = build_model(key)  # train() mode for key.mode == "train"
        annotate_model(model)
        if key.mode == "train":
            call, timing = _warm_and_time_steps(model, key, warmup, max(iters, MIN_ITERS), result)
        else:
            call = make_forward(model, key)
            timing = time_forward(call, key.device, warmup, max(iters, MIN_ITERS))
            result.warmup = warmup
        prof = _profile_once(call, cuda)
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_path = out_dir / f"trace_{_slug(key.label())}.json"
    prof.export_chrome_trace(str(trace_path))
    trace = json.loads(trace_path.read_text())
    events = gpu_events(trace) if cuda else cpu_events(trace)
    if not events:
        raise VimbenchError(f"the profiler recorded no {'kernels' if cuda else 'operators'} for {key.label()}")
    summary = summarize(events)
    result.timing_method, result.iters, result.latency_ms_p50 = timing.method, len(timing.samples_ms), timing.p50_ms
    result.profiled_ms, result.trace, result.top_kernels = summary["total_ms"], str(trace_path), summary["top_kernels"]
    timeline = gpu_timeline(trace) if cuda else None
    if timeline is not None:
        result.gpu_span_ms, result.gpu_busy_ms, result.gpu_idle_ms = \
            timeline.span_ms, timeline.busy_ms, timeline.idle_ms
    category_flops = _add_flops(key, result)
    for cat in CATEGORIES:
        result.ms[cat] = summary["ms"][cat]
        result.pct[cat] = summary["pct"][cat]
        flop_cat = _FLOP_CATEGORY.get(cat)
        if flop_cat in category_flops:
            result.flops_by[cat] = category_flops[flop_cat]
            t = summary["ms"][cat]
            result.tflops_by[cat] = category_flops[flop_cat] / (t / 1e3) / 1e12 if t > 0 else None
    del model, call
    return result


def _warm_and_time_steps(model, key, warmup: int, iters: int, result: ProfileResult):
    """Mode train: the step (optimizer annotated), its first untimed step with the gradient check, the other
    warm-up steps and the timed steps; fills the row's training fields. Returns (step, its Timing)."""
    import torch

    from vimbench.bench import train

    train.record_step_fields(result, model)
    step = train.make_train_step(model, key.batch, key.res, key.dtype, key.device)
    annotate_optimizer(step.optimizer)
    step()  # gradients and AdamW state allocated, backward kernels compiled; never measured
    if key.device == "cuda":
        torch.cuda.synchronize()
    try:
        train.check_gradients(model, key.implementation)
    except RuntimeError as exc:
        raise VimbenchError(f"{exc}; profile the training step with another backend") from None
    warmup = max(warmup, TRAIN_MIN_WARMUP)
    timing = train.time_train_steps(step, key.device, warmup - 1, iters)  # the first step was one warm-up step
    result.warmup = warmup
    result.forward_ms_p50, result.backward_ms_p50 = timing.forward_ms_p50, timing.backward_ms_p50
    return step, timing.step


def _profile_once(call: Callable, cuda: bool):
    """torch.profiler over one call (CPU + CUDA activities on the GPU, CPU alone on the CPU), the call inside the
    PROFILED_RANGE range that vimbench.analysis.trace.gpu_timeline measures the GPU's idle time against."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()  # the call starts on an idle GPU, as each timed call does
    with profile(activities=activities) as prof:
        with record_function(PROFILED_RANGE):
            call()
        if cuda:
            torch.cuda.synchronize()
    return prof


def _add_flops(key, result: ProfileResult) -> dict[str, float]:
    """The row's analytic FLOPs, TFLOP/s and convention (train: flops.train_step_flops); returns the FLOPs of
    the categories that get a per-category rate."""
    from vimbench.analysis.flops import TRAIN_FLOP_CONVENTION, model_counts, train_step_flops

    counts = model_counts(key.model, key.res, key.batch, key.dtype, attn=key.attn or "sdpa")
    if key.mode == "train":
        result.flops, category_flops = train_step_flops(counts)
        result.flop_convention = TRAIN_FLOP_CONVENTION  # no analytic bytes for a step: bytes stays empty
    else:
        result.flops, result.bytes = counts.flops, counts.bytes
        result.flop_convention = FORWARD_FLOP_CONVENTION
        category_flops = {cat: v["flops"] for cat, v in counts.by_category().items()}
    result.tflops = result.flops / (result.latency_ms_p50 / 1e3) / 1e12
    return category_flops


def _key_fields(key) -> dict[str, Any]:
    return {k: getattr(key, k) for k in ("model", "res", "batch", "dtype", "implementation", "attn", "device", "mode",
                                         "vim_memory")}


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
                command: str = "", progress: Callable[[str, int], None] | None = None,
                mode: str = "infer", vim_memory: str = "default") -> ProfileRun:
    """Profile one model at several resolutions, one forward (mode "infer") or one training step (mode "train")
    each; rows written (and flushed) to a results file as each finishes, traces next to it (the share figure:
    vimbench.report.profile_figure). OOM rows are recorded as status "oom" and the run continues. vim_memory: a
    Vim model's inference memory mode (vimbench.models.vim.MEMORY_MODES; "default" for DeiT and training)."""
    import torch

    from vimbench.bench.env import collect_env, now
    from vimbench.models import get_spec
    from vimbench.results import new_run_id, open_run

    spec = get_spec(model)
    if device == "cuda" and not torch.cuda.is_available():
        raise VimbenchError("no CUDA GPU is available; use --device cpu")
    if not resolutions:
        raise VimbenchError("give at least one resolution")
    if mode not in MODES:
        raise VimbenchError(f"unknown profile mode {mode!r}; choose from {', '.join(MODES)}")
    run_id = new_run_id()
    out_dir = Path(out_dir)
    results_path = out_dir / f"profile-{spec.alias}-{'' if mode == 'infer' else mode + '-'}{run_id}.jsonl"
    warmup = max(PROFILE_WARMUP, TRAIN_MIN_WARMUP) if mode == "train" else PROFILE_WARMUP
    settings = {"mode": mode, "warmup": warmup, "iters": PROFILE_ITERS, "model": spec.alias, "batch": batch,
                "dtype": dtype, "backend": backend, "attn": attn, "device": device, "vim_memory": vim_memory}
    if mode == "train":
        from vimbench.bench import train

        settings["protocol"] = train.PROTOCOL
    store = open_run(results_path, "profile", command, collect_env(device), settings, run_id=run_id, created=now())
    with store:
        results = _profile_all(spec, resolutions, batch, dtype, backend, attn, device, mode, out_dir, store,
                               progress, vim_memory)
    return ProfileRun(results, results_path)


def _profile_all(spec, resolutions, batch, dtype, backend, attn, device, mode, out_dir, store,
                 progress, vim_memory: str = "default") -> list[ProfileResult]:
    import torch

    from vimbench.bench.runner import is_oom
    from vimbench.results import CaseKey

    results = []
    for i, res in enumerate(resolutions):
        key = CaseKey(spec.alias, res, batch, dtype, backend if spec.family == "vim" else "timm",
                      None if spec.family == "vim" else attn, device, mode=mode, vim_memory=vim_memory)
        if progress:
            progress(key.label(), i)
        try:
            result = profile_case(key, out_dir, PROFILE_WARMUP, PROFILE_ITERS)
        except Exception as exc:
            if not is_oom(exc):
                raise
            result = ProfileResult(**_key_fields(key), status="oom", error=str(exc).splitlines()[0][:300])
        if result.status == "oom" and device == "cuda":
            # after the except block: the exception's traceback no longer holds the case's model and AdamW state
            gc.collect()
            torch.cuda.empty_cache()
        store.append(result)
        results.append(result)
    if progress:
        progress("done", len(resolutions))
    return results
