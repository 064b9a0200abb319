"""The memory pass, separate from timing: one forward after the allocator is emptied and its peaks reset.

Three different numbers on CUDA, each named for what it is:
  peak allocated  torch.cuda.max_memory_allocated: tensors alive at the worst moment (weights, input, activations)
  peak reserved   torch.cuda.max_memory_reserved: what the caching allocator held from the driver
  NVML used       device memory in use as the driver sees it (CUDA context, allocator cache, other processes),
                  sampled by a background thread about every millisecond; NVML has no peak counter.
On CPU: the peak resident set size of the process during the pass (Linux VmHWM, reset before the pass).
MiB = 2^20 bytes.
"""
from __future__ import annotations

import gc
import resource
import sys
import threading
from dataclasses import dataclass
from typing import Callable

MIB = 2 ** 20
ALLOCATOR_NVML = "torch_allocator+nvml"
ALLOCATOR_ONLY = "torch_allocator"
PROCESS_RSS = "process_rss"
PROCESS_RSS_LIFETIME = "process_rss_lifetime"   # the peak could not be reset: a peak over the process's life
# A case that begins with more than this still allocated (CaseResult.allocated_at_start_mib) carries memory from
# earlier cases of the process in its numbers: the sweep marks it "carry-over".
CARRY_OVER_MIB = 1.0


@dataclass
class Memory:
    method: str
    peak_alloc_mib: float | None = None
    peak_reserved_mib: float | None = None
    baseline_alloc_mib: float | None = None
    activation_mib: float | None = None
    nvml_used_mib: float | None = None
    nvml_baseline_mib: float | None = None
    cpu_peak_rss_mib: float | None = None


def nvml_handle(device_index: int = 0):
    """The NVML handle of torch's CUDA device `device_index`, or None when NVML is unavailable.

    torch and NVML number GPUs differently under CUDA_VISIBLE_DEVICES; the device's UUID ties them together."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
    except Exception:
        pass
    try:
        return pynvml.nvmlDeviceGetHandleByIndex(device_index)
    except Exception:
        return None


def nvml_used_bytes(handle) -> int | None:
    if handle is None:
        return None
    try:
        import pynvml

        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:
        return None


class NvmlSampler:
    """Background thread keeping the largest NVML 'used' reading until stopped (one more reading at stop)."""

    def __init__(self, handle, interval_s: float = 0.001):
        self.handle, self.interval_s = handle, interval_s
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vimbench-nvml", daemon=True)

    def _sample(self) -> None:
        used = nvml_used_bytes(self.handle)
        if used is not None and (self.peak is None or used > self.peak):
            self.peak = used

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "NvmlSampler":
        if self.handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            self._stop.set()
            self._thread.join()
            self._sample()


def _mib(n: int | float | None) -> float | None:
    return None if n is None else n / MIB


def measure_cuda(fn: Callable[[], object], device_index: int = 0) -> Memory:
    import torch

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    handle = nvml_handle(device_index)
    baseline = torch.cuda.memory_allocated()
    nvml_baseline = nvml_used_bytes(handle)
    with NvmlSampler(handle) as sampler:
        out = fn()
        torch.cuda.synchronize()
    del out
    peak = torch.cuda.max_memory_allocated()
    return Memory(method=ALLOCATOR_NVML if handle is not None else ALLOCATOR_ONLY,
                  peak_alloc_mib=_mib(peak), peak_reserved_mib=_mib(torch.cuda.max_memory_reserved()),
                  baseline_alloc_mib=_mib(baseline), activation_mib=_mib(peak - baseline),
                  nvml_used_mib=_mib(sampler.peak), nvml_baseline_mib=_mib(nvml_baseline))


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets the process's peak RSS (VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def measure_cpu(fn: Callable[[], object]) -> Memory:
    gc.collect()
    was_reset = _reset_peak_rss()
    out = fn()
    del out
    return Memory(method=PROCESS_RSS if was_reset else PROCESS_RSS_LIFETIME, cpu_peak_rss_mib=_mib(_peak_rss_bytes()))


def measure_memory(fn: Callable[[], object], device: str, device_index: int = 0) -> Memory:
    """One forward of fn under the memory instruments of `device` ('cuda' or 'cpu')."""
    return measure_cuda(fn, device_index) if device == "cuda" else measure_cpu(fn)
