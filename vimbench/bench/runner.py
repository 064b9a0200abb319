"""Run one case: build the model at the case's resolution (compiled for the case's compile mode), one untimed
first call, the memory pass, the timing pass; everything goes into a CaseResult.

Compiled modes (vimbench.bench.compiler): one eager call first fills the model's lazy caches (Vim's stacked
weights) as an eager run would, then the model is wrapped by torch.compile; the first compiled call (tracing,
compilation, autotuning) is timed with the wall clock into compile_s and never enters the timing samples.
Training cases compile the model inside their step instead (bench/train.py `compile_train_step`: forward and
backward, no freezing), and the first step's wall time is their compile_s (eager: the kernels' JIT and lazy init).

Precision modes: fp32 = TF32 off for matmul (the paper's torch 1.12 default) and for cuDNN (1.12 left it on; off
here so fp32 means fp32; it only touches the patch-embedding conv); tf32 = TF32 on;
bf16 / fp16 = torch.autocast over fp32 weights, TF32 off. cudnn.benchmark is off. The flags are set around the
case and restored afterwards, never left changed.

Failures are results: an out-of-memory case gets status "oom", any other exception status "error", and the sweep
goes on. An error that leaves the CUDA context unusable (illegal address, device-side assert) is recorded and then
raised as ContextCorrupted, so the sweep stops instead of recording a cascade of failures.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from vimbench.bench import compiler
from vimbench.bench.env import device_identity, gpu_conditions, host_us_per_op, now
from vimbench.bench import train
from vimbench.bench.memory import Memory, measure_memory
from vimbench.bench.timing import Timing, time_forward
from vimbench.bench.train import TrainStep
from vimbench.models.registry import count_params, create_model, get_spec, num_tokens
from vimbench import precision
from vimbench.results import CaseKey, CaseResult

_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
# Sticky CUDA errors: after one of these every later CUDA call in the process fails.
_CORRUPTING_MARKERS = ("illegal memory access", "illegal address", "device-side assert", "unspecified launch failure",
                       "misaligned address", "illegal instruction", "hardware exception", "uncorrectable ecc")
_MAX_MESSAGE = 500


class ContextCorrupted(Exception):
    """A case broke the CUDA context; `result` is its row (status "error"). The sweep must stop."""

    def __init__(self, result: CaseResult):
        super().__init__(result.error)
        self.result = result


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def _context_broken(device: str, message: str) -> bool:
    if any(m in message.lower() for m in _CORRUPTING_MARKERS):
        return True
    if device != "cuda":
        return False
    try:  # a sticky error surfaces again on the next synchronizing call
        torch.cuda.synchronize()
        (torch.ones(1, device="cuda") + 1).item()
        return False
    except Exception:
        return True


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    message = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return message if len(message) <= _MAX_MESSAGE else message[:_MAX_MESSAGE - 3] + "..."


@contextmanager
def precision_flags(dtype: str) -> Iterator[None]:
    """TF32 on only for the tf32 mode; cudnn.benchmark off. Restores the caller's flags on exit."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    tf32 = dtype == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1], saved[2]


def build_model(key: CaseKey) -> torch.nn.Module:
    """The case's model at its resolution, random weights (seed 0), on the case's device; eval mode for
    inference, train mode for training cases."""
    spec = get_spec(key.model)
    kwargs: dict[str, Any] = {"backend": key.implementation, "batch_slice": key.vim_slice,
                              "vim_memory": key.vim_memory} if spec.family == "vim" else {"attn": key.attn}
    torch.manual_seed(0)
    model = create_model(key.model, img_size=key.res, **kwargs).to(key.device)
    return model.train() if key.mode == "train" else model.eval()


def make_forward(model: Callable[[torch.Tensor], torch.Tensor], key: CaseKey) -> Callable[[], torch.Tensor]:
    """A no-argument forward with its input prepared once: on the device, or in pinned host memory and copied
    inside the call when key.h2d. Autocast for bf16/fp16 (its weight-cast cache off under vimbench's CUDA-graph
    capture, which cannot capture a cache filled outside the graph)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(key.batch, 3, key.res, key.res, generator=gen)  # (B, 3, H, W) fp32
    if key.h2d:
        host = images.pin_memory() if key.device == "cuda" else images
        device_images = None
    else:
        host, device_images = None, images.to(key.device)
    autocast_dtype = precision.autocast_dtype(key.dtype)
    device_type = "cuda" if key.device == "cuda" else "cpu"

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            x = device_images if host is None else host.to(key.device)
            if autocast_dtype is None:
                return model(x)
            with torch.autocast(device_type, dtype=autocast_dtype, cache_enabled=key.compile != compiler.CUDA_GRAPHS):
                return model(x)

    return forward


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    """Between cases: drop the case's objects and hand the allocator's cache back, so that the next case's
    baseline and peak hold only its own memory. cuBLAS keeps one workspace per (handle, stream) for the life of
    the process, allocated through torch's allocator; each CUDA-graph capture (a fresh warm-up side stream, the
    capture stream) added one, and on the H200 every graph-captured training case left ~65 MiB allocated into
    every later case's numbers (results/train-host-h200-2026-12-02.jsonl). Clearing them is safe here: the
    case's graphs are gone and never replayed again; the next case allocates its own on its first call."""
    gc.collect()
    if device == "cuda":
        try:
            clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
            if clear_workspaces is not None:
                clear_workspaces()
            torch.cuda.empty_cache()
        except Exception:  # a broken context cannot free; the sweep is stopping anyway
            pass


@dataclass
class _TrainMeasured:
    timing: Timing
    memory: Memory
    step: TrainStep   # holds the model's optimizer state: dropped with this object


def _measure_train(model: torch.nn.Module, key: CaseKey, warmup: int, iters: int, result: CaseResult,
                   compile_backend: str = "inductor") -> _TrainMeasured:
    """A training case (bench/train.py): first step untimed (its wall time into compile_s) and its gradients
    checked, the memory pass over one step (the AdamW state exists by then), the timing pass. Fills the row's
    training fields. A torch.compile mode compiles the model (forward and backward; no freezing: the weights are
    trained), never the loss or the optimizer (`train.compile_train_step`)."""
    train.record_step_fields(result, model)
    graphs = key.compile == compiler.CUDA_GRAPHS  # the whole step captured (bench/train.py)
    step = train.make_train_step(model, key.batch, key.res, key.dtype, key.device, capturable=graphs)
    compiled = compiler.is_torch_compile(key.compile)
    if compiled:
        compiler.reset()
        train.compile_train_step(step, key.compile, compile_backend)
        result.compile_backend = compile_backend
        if compile_backend == "inductor":
            result.compile_settings = compiler.inductor_settings(key.compile)
    # gradients and AdamW state allocated, kernels (and a compiled model) compiled; never a timing sample
    result.compile_s = _first_call(step, key.device)
    if compiled:
        stats = compiler.stats()
        result.compiled_graphs, result.graph_breaks = stats.graphs, stats.graph_breaks
        result.graph_break_reasons = stats.break_reasons
    train.check_gradients(model, key.implementation)
    memory = measure_memory(step, key.device)
    timing = train.time_train_steps(step, key.device, warmup, iters, cuda_graphs=graphs)
    result.forward_ms_samples, result.backward_ms_samples = timing.forward_ms_samples, timing.backward_ms_samples
    result.forward_ms_p50, result.backward_ms_p50 = timing.forward_ms_p50, timing.backward_ms_p50
    return _TrainMeasured(timing.step, memory, step)


def effective_res(res: int) -> int:
    """The image side the model's 16 px patches cover (1250 px -> 1248 px; the rest is cropped by the stride)."""
    from vimbench.geometry import PATCH

    return res // PATCH * PATCH


def _first_call(forward: Callable[[], torch.Tensor], device: str) -> float:
    """Wall seconds of one call, synchronized: what compilation and autotuning cost (never a timing sample)."""
    start = time.perf_counter()
    forward()
    _sync(device)
    return time.perf_counter() - start


def run_case(key: CaseKey, warmup: int, iters: int, compile_backend: str = "inductor") -> CaseResult:
    """Measure one case. Returns its row; raises ContextCorrupted (carrying the row) when the CUDA context broke.

    compile_backend: the torch.compile backend for cases with a torch.compile mode (inductor; the debug backends
    eager and aot_eager trace without generating code)."""
    result = CaseResult(key=key, status="ok", warmup=warmup, iters=iters, timestamp=now(),
                        tokens=num_tokens(get_spec(key.model), key.res), res_effective_px=effective_res(key.res))
    identity = device_identity(key.device, torch.cuda.current_device() if key.device == "cuda" else 0)
    result.hostname, result.gpu_name = identity["hostname"], identity["gpu_name"]
    result.gpu_index, result.gpu_uuid = identity["gpu_index"], identity["gpu_uuid"]
    result.host_us_per_op = round(host_us_per_op(), 3)
    if key.device == "cuda":
        result.allocated_at_start_mib = torch.cuda.memory_allocated() / 2**20
        before = gpu_conditions(torch.cuda.current_device())
        result.sm_clock_mhz_before, result.temp_c_before = before["sm_clock_mhz"], before["temp_c"]
    model = forward = None
    corrupted = False
    compiled = compiler.is_torch_compile(key.compile)
    try:
        with precision_flags(key.dtype):
            model = build_model(key)
            result.params = count_params(model)
            if key.mode == "train":  # `forward` holds the step (optimizer state included) until freed below
                forward = _measure_train(model, key, warmup, iters, result, compile_backend)
                timing, memory = forward.timing, forward.memory
            else:
                forward = make_forward(model, key)
                if compiled:
                    compiler.reset()
                    forward()  # eager: fills lazy caches as an eager run would; then compile
                    # inference compiles freeze the weights (compiler.compile_model), every model alike
                    forward = make_forward(compiler.compile_model(model, key.compile, compile_backend, freeze=True),
                                           key)
                    result.compile_backend = compile_backend
                    if compile_backend == "inductor":
                        result.compile_settings = compiler.inductor_settings(key.compile, freeze=True)
                # the first call pays for lazy init, compilation and autotuning; never a timing sample
                result.compile_s = _first_call(forward, key.device)
                if compiled:
                    stats = compiler.stats()
                    result.compiled_graphs, result.graph_breaks = stats.graphs, stats.graph_breaks
                    result.graph_break_reasons = stats.break_reasons
                memory = measure_memory(forward, key.device)
                timing = time_forward(forward, key.device, warmup, iters,
                                      cuda_graphs=key.compile == compiler.CUDA_GRAPHS)
        result.timing_method = timing.method
        result.latency_ms_samples = timing.samples_ms
        result.latency_ms_p20, result.latency_ms_p50, result.latency_ms_p80 = timing.p20_ms, timing.p50_ms, timing.p80_ms
        result.host_ms_samples, result.host_ms_p50 = timing.host_ms_samples, timing.host_ms_p50
        result.fps = timing.fps(key.batch)
        result.memory_method = memory.method
        for name in ("peak_alloc_mib", "peak_reserved_mib", "baseline_alloc_mib", "activation_mib", "nvml_used_mib",
                     "nvml_baseline_mib", "cpu_peak_rss_mib"):
            setattr(result, name, getattr(memory, name))
    except Exception as exc:  # a failed case is a result; KeyboardInterrupt passes through
        result.error = _short(exc)
        if is_oom(exc):
            result.status = "oom"
        else:
            result.status = "error"
            corrupted = _context_broken(key.device, str(exc))
    finally:
        del model, forward
        if compiled:
            compiler.reset()
        _free(key.device)
    if corrupted:
        raise ContextCorrupted(result)
    if key.device == "cuda":
        after = gpu_conditions(torch.cuda.current_device())
        result.sm_clock_mhz_after, result.temp_c_after = after["sm_clock_mhz"], after["temp_c"]
    return result
