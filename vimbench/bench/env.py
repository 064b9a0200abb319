"""The environment fingerprint written into every results file header, and the GPU's conditions per case.

Every field is best-effort: a missing tool (no GPU, no NVML, no git, no triton) gives None, never an error."""
from __future__ import annotations

import datetime as _dt
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _module_version(module: str) -> str | None:
    """Version of an importable module (its __version__, else its distribution's); None when not installed."""
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", None) or _version(module))
    except Exception:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout vimbench runs from; dirty = tracked files differ from the commit.

    VIMBENCH_GIT_COMMIT, when set, wins over the checkout's own .git (dirty then unknown): a tree copied to a GPU
    box can carry a stale .git whose HEAD is not the commit the tree was taken from."""
    from vimbench.settings import git_commit_override

    override = git_commit_override()
    if override:
        return override, None
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        return driver.decode() if isinstance(driver, bytes) else str(driver)
    except Exception:
        return None


def _tf32_flags(torch) -> dict[str, Any]:
    flags: dict[str, Any] = {"float32_matmul_precision": None, "tf32_matmul": None, "tf32_cudnn": None}
    try:
        flags["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        flags["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        flags["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    except Exception:  # torch's newer fp32_precision API refuses the legacy getters after it was used
        pass
    return flags


def collect_env(device: str = "cuda") -> dict[str, Any]:
    """Everything needed to tell two runs apart. `device` is 'cuda' or 'cpu' (what the run measures on)."""
    import torch

    import vimbench

    from vimbench.settings import cuda_visible_devices

    commit, dirty = git_state()
    cuda = torch.cuda.is_available()
    identity = device_identity("cuda" if cuda and device == "cuda" else "cpu")
    visible = cuda_visible_devices()
    env: dict[str, Any] = {
        "device": device,
        "gpu_name": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_index": identity["gpu_index"],
        "gpu_uuid": identity["gpu_uuid"],
        "cuda_visible_devices": ",".join(visible) if visible is not None else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_memory_mib": (torch.cuda.get_device_properties(0).total_memory / 2 ** 20) if cuda else None,
        "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "driver": _nvml_driver() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "torch": torch.__version__,
        "triton": _module_version("triton"),
        "timm": _module_version("timm"),
        "vimbench": vimbench.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        **_tf32_flags(torch),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cpu": _cpu_name(),
        "cpu_count": _cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "timestamp": now(),
    }
    return env


def _cpu_count() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _physical_gpu_index(uuid: str | None, device_index: int) -> int | None:
    """The GPU's index as nvidia-smi and NVML number it (what CUDA_VISIBLE_DEVICES names), which differs from
    torch's index when CUDA_VISIBLE_DEVICES renumbers the devices a process sees."""
    if uuid:
        try:
            import pynvml

            pynvml.nvmlInit()
            return int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(uuid)))
        except Exception:
            pass
    from vimbench.settings import cuda_visible_devices

    visible = cuda_visible_devices()
    if visible is None:
        return device_index
    if device_index < len(visible) and visible[device_index].isdigit():
        return int(visible[device_index])
    return None


def device_identity(device: str, device_index: int = 0) -> dict[str, Any]:
    """Where a case ran: host name, and on a GPU its name, physical index and UUID (every case row carries
    these, so rows of many GPUs and hosts can be merged and still told apart). CPU runs: GPU fields None."""
    out: dict[str, Any] = {"hostname": socket.gethostname(), "gpu_name": None, "gpu_index": None,
                           "gpu_uuid": None}
    if device != "cuda":
        return out
    try:
        import torch

        props = torch.cuda.get_device_properties(device_index)
        out["gpu_name"] = props.name
        uuid = str(props.uuid)
        out["gpu_uuid"] = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    except Exception:
        return out
    out["gpu_index"] = _physical_gpu_index(out["gpu_uuid"], device_index)
    return out


HOST_PROBE_CALLS = 200
HOST_PROBE_ROUNDS = 5
# Host speeds (us per probe op) further apart than this factor within one set of rows: their host-bound rows
# (eager, small sizes) were measured at different host speeds; the sweep's caption and the report say so.
HOST_DRIFT = 1.3


def host_speed_moved(probes) -> bool:
    """Whether the host speeds recorded for some rows (host_us_per_op; None where not recorded) differ by more
    than HOST_DRIFT."""
    values = [p for p in probes if p]
    return len(values) >= 2 and max(values) > HOST_DRIFT * min(values)


def host_us_per_op() -> float:
    """How fast the host runs framework code right now: the median over HOST_PROBE_ROUNDS rounds of the mean time
    of one tiny CPU torch op called from Python (us; ~1-3 ms in all). Eager forwards at small sizes are host-bound
    (Python, the dispatcher, Triton's launcher), and on shared machines the host's speed moves between processes
    minutes apart (2x on the H200 box, kernels/NOTES.md): rows record it so that such moves are seen, not read as
    differences between models."""
    import statistics
    import time

    import torch

    a, b, out = torch.ones(1), torch.ones(1), torch.empty(1)
    rounds = []
    for _ in range(HOST_PROBE_ROUNDS):
        start = time.perf_counter()
        for _ in range(HOST_PROBE_CALLS):
            torch.add(a, b, out=out)
        rounds.append((time.perf_counter() - start) / HOST_PROBE_CALLS * 1e6)
    return statistics.median(rounds)


def gpu_conditions(device_index: int = 0) -> dict[str, int | None]:
    """SM clock (MHz) and temperature (C) of the GPU right now; None where no GPU or NVML is available."""
    from vimbench.bench.memory import nvml_handle

    out: dict[str, int | None] = {"sm_clock_mhz": None, "temp_c": None}
    try:
        import torch

        if not torch.cuda.is_available():
            return out
    except Exception:
        return out
    handle = nvml_handle(device_index)
    if handle is None:
        return out
    import pynvml

    try:
        out["sm_clock_mhz"] = int(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
    except Exception:
        pass
    try:
        out["temp_c"] = int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
    except Exception:
        pass
    return out

