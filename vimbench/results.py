"""The results store: one JSON-lines file per run, append-only, one writer at a time.

Line 1 is the header: {"kind": "header", "schema": SCHEMA, "run_kind", "run_id", "created", "command", "env",
"settings"}. Every later line is one measured row, written and flushed as soon as it is measured:
{"kind": "case", ...} for model sweeps (CaseResult), {"kind": "kernel", ...} for kernel benchmarks
(KernelResult), {"kind": "profile", ...} for profiles (ProfileResult). A resumed run adds a {"kind": "resume"}
line (its command and environment, and its settings when they differ from the header's) before its first row.

Writing: `open_run(path, kind, command, env, settings)` -> RunWriter (append(row), close()). It holds an exclusive
lock on the file for the whole run, so a second run on the same file stops with one line before measuring
anything; it checks on resume that the settings match the recorded ones; it repairs the tail a killed run left
(a half-written last line is cut, a complete last row only gets its missing newline; the header is never cut);
an OSError while writing becomes a ResultsWriteError naming the file.

Reading: `read_header`, `iter_rows` (each row's key fields checked, errors name the file and line),
`load_results` (files or folders -> one pandas DataFrame), `protocol_changes` (a file resumed with other
settings).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from vimbench.errors import VimbenchError

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

SCHEMA = "vimbench.results/1"
RUN_KINDS = ("sweep", "kernels", "profile", "anchors")
# Headers written before "settings" existed keep these settings at the top level.
_LEGACY_SETTINGS = ("protocol", "warmup", "iters", "sweep")


# ---------------------------------------------------------------------------------------------------- rows

@dataclass(frozen=True)
class CaseKey:
    """What identifies a case: a resumed sweep skips keys already in its file.

    New fields must have defaults (rows written before they existed load with the default)."""
    model: str            # alias: vim_t, deit_s, ...
    res: int              # input image side, px
    batch: int
    dtype: str            # fp32 | tf32 | bf16 | fp16
    implementation: str   # Vim: backend (torch | triton); DeiT: "timm"
    attn: str | None      # DeiT: sdpa | eager; Vim: None
    device: str           # cuda | cpu
    mode: str = "infer"
    compile: str = "none"  # none | cuda-graphs | a torch.compile mode (vimbench.bench.compiler)
    h2d: bool = False     # the timed call includes copying the input from (pinned) host memory
    vim_slice: int = 0    # Vim: images per mixer slice at inference (0: the whole batch at once); DeiT: 0
    vim_memory: str = "default"  # Vim: the mixers' inference memory mode (vimbench.models.vim.MEMORY_MODES)

    def label(self) -> str:
        impl = self.implementation + (f"/{self.attn}" if self.attn else "")
        extras = (f" {self.compile}" if self.compile != "none" else "") + (" +h2d" if self.h2d else "") \
            + (f" slice{self.vim_slice}" if self.vim_slice else "") \
            + (f" mem-{self.vim_memory}" if self.vim_memory != "default" else "") \
            + ("" if self.mode == "infer" else f" {self.mode}")
        return f"{self.model} {impl} {self.res}px b{self.batch} {self.dtype} {self.device}{extras}"


@dataclass
class CaseResult:
    """One measured case. Units are in the field names: ms, img/s (fps), MiB (2^20 bytes)."""
    key: CaseKey
    status: str                        # ok | oom | error | skipped
    error: str | None = None
    params: int | None = None
    tokens: int | None = None
    res_effective_px: int | None = None  # the image side the 16 px patches cover (res rounded down to 16)
    # timing
    timing_method: str | None = None   # "cuda_events" | "cuda_graph_replay+cuda_events" | "perf_counter"
    warmup: int | None = None
    iters: int | None = None
    latency_ms_samples: list[float] = field(default_factory=list)
    latency_ms_p20: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p80: float | None = None
    fps: float | None = None           # batch / p50 latency, img/s
    host_ms_samples: list[float] | None = None  # CUDA: per call (train: step), the host's submission time: from the
    #                                             call's start to its return, before the synchronize (bench.timing)
    host_ms_p50: float | None = None   # about latency_ms_p50: host-bound (bench.timing.host_bound); None on CPU
    # compilation (never timed): the first call's wall time, and what dynamo made of the forward
    compile_s: float | None = None     # first untimed call, s: tracing + compilation + autotuning (none: JIT, init)
    compile_backend: str | None = None  # torch.compile backend for compiled modes (inductor, aot_eager, eager)
    compile_settings: dict[str, Any] | None = None  # inductor settings in effect for this case's mode
    compiled_graphs: int | None = None  # graphs dynamo compiled for the forward
    graph_breaks: int | None = None
    graph_break_reasons: list[str] | None = None
    # memory (a separate pass from timing)
    memory_method: str | None = None   # "torch_allocator+nvml" | "process_rss"
    peak_alloc_mib: float | None = None       # torch.cuda.max_memory_allocated during one forward (train: step)
    peak_reserved_mib: float | None = None    # torch.cuda.max_memory_reserved during one forward (train: step)
    baseline_alloc_mib: float | None = None   # allocated before the forward: weights + input (train: + grads and
    #                                           AdamW state)
    activation_mib: float | None = None       # peak_alloc - baseline
    nvml_used_mib: float | None = None        # device memory in use seen by NVML, max of samples in the pass
    nvml_baseline_mib: float | None = None    # NVML used before the pass
    cpu_peak_rss_mib: float | None = None     # CPU runs: peak resident set of the process
    allocated_at_start_mib: float | None = None  # torch allocator, allocated when the case began (before its
    #                                              model): memory left by earlier cases of the process, included
    #                                              in this row's baseline and peak; ~0 when nothing leaked
    # training steps (mode "train", vimbench/bench/train.py; None for inference). The timing and memory fields
    # above then describe whole steps: latency = one step, fps = batch / p50 step, memory over one step.
    optimizer: str | None = None              # "adamw"
    lr: float | None = None
    loss: str | None = None                   # "cross_entropy"
    activation_checkpointing: bool | None = None
    train_boundary: str | None = None         # Vim: what the mixers keep for backward (models.vim.TRAIN_BOUNDARIES)
    forward_ms_samples: list[float] | None = None    # per step: zero_grad + forward + loss
    forward_ms_p50: float | None = None
    backward_ms_samples: list[float] | None = None   # per step: loss.backward() + optimizer.step()
    backward_ms_p50: float | None = None
    # conditions
    sm_clock_mhz_before: int | None = None
    sm_clock_mhz_after: int | None = None
    temp_c_before: int | None = None
    temp_c_after: int | None = None
    host_us_per_op: float | None = None  # host speed when the case began (bench.env.host_us_per_op): us per tiny
    #                                      CPU torch op called from Python; eager rows at small sizes move with it
    timestamp: str | None = None
    # where it ran (a file's rows can come from several hosts and GPUs once resumed elsewhere)
    hostname: str | None = None
    gpu_name: str | None = None
    gpu_index: int | None = None       # as nvidia-smi numbers it (not torch's index under CUDA_VISIBLE_DEVICES)
    gpu_uuid: str | None = None

    def to_row(self) -> dict[str, Any]:
        row = {"kind": "case", **asdict(self.key)}
        row.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "key"})
        return row


@dataclass
class KernelResult:
    """One kernel microbenchmark case (`vimbench kernels`): a do_bench median and its roofline shares."""
    op: str
    model: str
    res: int
    batch: int
    dtype: str
    impl: str                          # triton | torch | cuda
    tokens: int | None = None          # L
    E: int | None = None               # mixer channels
    D: int | None = None               # model width
    N: int | None = None               # state size
    status: str = "ok"                 # ok | skipped | oom | error
    error: str | None = None
    ms_p50: float | None = None
    gbps: float | None = None
    bytes: int | None = None
    pct_hbm: float | None = None
    pct_mufu: float | None = None
    pct_fma: float | None = None
    pct_floor: float | None = None
    bound: str | None = None
    timing_method: str | None = None
    warmup_ms: float | None = None
    rep_ms: float | None = None
    gpu_name: str | None = None
    timestamp: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {"kind": "kernel", **asdict(self)}


@dataclass
class ProfileResult:
    """One profiled case (`vimbench profile`): per-category kernel time, FLOPs and achieved rates.

    The per-category dicts are keyed by category name and written flat (ms_scan, pct_scan, flops_scan, ...).
    New fields must have defaults (rows written before they existed load with the default: mode "infer")."""
    model: str
    res: int
    batch: int
    dtype: str
    implementation: str
    attn: str | None
    device: str
    mode: str = "infer"                # infer: one forward | train: one training step (vimbench.bench.train)
    vim_memory: str = "default"        # Vim: the mixers' inference memory mode (vimbench.models.vim.MEMORY_MODES)
    status: str = "ok"                 # ok | oom
    error: str | None = None
    timing_method: str | None = None
    latency_ms_p50: float | None = None  # infer: p50 forward; train: p50 step
    profiled_ms: float | None = None     # summed kernel time of the profiled call (CPU: summed op self time)
    # the profiled call on the GPU's timeline (vimbench.analysis.trace.gpu_timeline; None on CPU): span = busy + idle
    gpu_span_ms: float | None = None     # from the call's start (or first kernel) to its last kernel's end
    gpu_busy_ms: float | None = None     # union of the kernel intervals (overlapping streams count once)
    gpu_idle_ms: float | None = None     # span - busy: the GPU waiting on the host
    # training steps (mode "train"; None for inference), as sweep rows record them (vimbench.bench.train)
    optimizer: str | None = None
    lr: float | None = None
    loss: str | None = None
    activation_checkpointing: bool | None = None
    train_boundary: str | None = None
    forward_ms_p50: float | None = None  # zero_grad + forward + loss, same timed steps
    backward_ms_p50: float | None = None  # loss.backward() + optimizer.step()
    warmup: int | None = None            # untimed calls before the timed ones (train: the first step included)
    iters: int | None = None             # timed calls
    flops: float | None = None
    bytes: float | None = None
    tflops: float | None = None
    flop_convention: str | None = None
    ms: dict[str, float] = field(default_factory=dict)
    pct: dict[str, float] = field(default_factory=dict)
    flops_by: dict[str, float] = field(default_factory=dict)
    tflops_by: dict[str, float | None] = field(default_factory=dict)
    top_kernels: list[Any] | None = None
    trace: str | None = None
    timestamp: str | None = None

    _FLAT = {"ms": "ms_", "pct": "pct_", "flops_by": "flops_", "tflops_by": "tflops_"}

    def to_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"kind": "profile"}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._FLAT:
                row.update({self._FLAT[f.name] + cat: v for cat, v in value.items()})
            elif value is not None or f.name in ("status", "attn"):
                row[f.name] = value
        return row


Row = CaseResult | KernelResult | ProfileResult
KEY_FIELDS = tuple(f.name for f in fields(CaseKey))


def upgrade_row(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row in today's key fields. Files written before the compile axis recorded CUDA-graph replays as
    `cuda_graphs: true`; that is the compile mode "cuda-graphs" now."""
    if row.get("kind") == "case" and "compile" not in row:
        row = dict(row)
        row["compile"] = "cuda-graphs" if row.pop("cuda_graphs", False) else "none"
    return row


def key_of_row(row: dict[str, Any]) -> CaseKey:
    """The case key of a stored row. A key field the row lacks, or holds as None (a table column filled for
    rows written before the field existed), takes the field's default; fields without one stay as stored."""
    row = upgrade_row(row)
    values = {}
    for name in KEY_FIELDS:
        value, default = row.get(name), CaseKey.__dataclass_fields__[name].default
        values[name] = default if value is None and default is not MISSING else value
    return CaseKey(**values)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


# ---------------------------------------------------------------------------------------------------- row checks

_STR, _INT, _BOOL, _NUM = "a text", "a whole number", "true or false", "a number"
# The fields each row kind must carry (and their types); a row without them would show as blank report cells.
_REQUIRED: dict[str, dict[str, str]] = {
    "case": {"model": _STR, "res": _INT, "batch": _INT, "dtype": _STR, "implementation": _STR, "device": _STR,
             "status": _STR},
    "kernel": {"op": _STR, "model": _STR, "res": _INT, "batch": _INT, "dtype": _STR, "impl": _STR, "status": _STR},
    "profile": {"model": _STR, "res": _INT, "batch": _INT, "dtype": _STR, "status": _STR},
}
_OPTIONAL: dict[str, dict[str, str]] = {
    "case": {"attn": _STR, "mode": _STR, "cuda_graphs": _BOOL, "compile": _STR, "vim_slice": _INT, "vim_memory": _STR, "h2d": _BOOL,
             "compile_s": _NUM, "latency_ms_p20": _NUM,
             "latency_ms_p50": _NUM, "latency_ms_p80": _NUM, "fps": _NUM, "peak_alloc_mib": _NUM, "tokens": _INT,
             "host_us_per_op": _NUM, "host_ms_p50": _NUM},
    "kernel": {"ms_p50": _NUM, "tokens": _INT},
    "profile": {"mode": _STR, "latency_ms_p50": _NUM, "profiled_ms": _NUM, "gpu_busy_ms": _NUM,
                "gpu_idle_ms": _NUM},
}


def _type_ok(value: Any, expected: str) -> bool:
    if expected == _STR:
        return isinstance(value, str) and value != ""
    if expected == _BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected == _INT:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def check_row(row: dict[str, Any]) -> str | None:
    """What is wrong with a row's key fields (None: nothing). Rows of unknown kinds are not checked."""
    for name, expected in _REQUIRED.get(row.get("kind"), {}).items():
        if name not in row or row[name] is None:
            return f"a {row['kind']} row without {name!r}"
        if not _type_ok(row[name], expected):
            return f"{name} is {row[name]!r}, not {expected}"
    for name, expected in _OPTIONAL.get(row.get("kind"), {}).items():
        if row.get(name) is not None and not _type_ok(row[name], expected):
            return f"{name} is {row[name]!r}, not {expected}"
    return None


# ---------------------------------------------------------------------------------------------------- reading

def _not_results(path: Path, why: str) -> VimbenchError:
    return VimbenchError(f"{path} is not a vimbench results file ({why})")


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise VimbenchError(f"{path} is a folder, not a results file; give one of its .jsonl files")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VimbenchError(f"results file {path} does not exist") from None
    except OSError as exc:
        raise VimbenchError(f"cannot read results file {path}: {exc.strerror or exc}") from exc


def _decode(path: Path, data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        raise _not_results(path, "it is gzip-compressed; decompress it first, e.g. gunzip -k")
    try:
        if b"\0" in data:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "NUL byte")
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_results(path, "binary data, not UTF-8 JSON lines") from None


def _parse_header(path: Path, first: str) -> dict[str, Any]:
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("kind") != "header" or header.get("schema") != SCHEMA:
        raise _not_results(path, f"its first line is not a {SCHEMA} header")
    return header


def read_header(path: Path) -> dict[str, Any]:
    path = Path(path)
    data = _read_bytes(path)
    return _parse_header(path, _decode(path, data[:data.find(b"\n") + 1 or len(data)]))


def _lines(path: Path) -> tuple[dict[str, Any], list[str]]:
    text = _decode(path, _read_bytes(path))
    lines = text.splitlines(keepends=True)
    return _parse_header(path, lines[0] if lines else ""), lines


def iter_rows(path: Path, kinds: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
    """Rows after the header (only those of `kinds`, when given). A truncated last line (a run killed mid-write)
    is skipped; any other bad line or a row whose key fields are missing or mistyped is an error naming the file
    and line."""
    path = Path(path)
    _, lines = _lines(path)
    wanted = set(kinds) if kinds is not None else None
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not line.endswith("\n"):
                return
            raise VimbenchError(f"{path}, line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or "kind" not in row:
            raise VimbenchError(f"{path}, line {number}: not a results row")
        problem = check_row(row)
        if problem:
            raise VimbenchError(f"{path}, line {number}: {problem}; fix or delete that line")
        if wanted is None or row["kind"] in wanted:
            yield row


def header_settings(header: dict[str, Any]) -> dict[str, Any]:
    """The settings a run was started with (older headers keep them at the top level)."""
    if isinstance(header.get("settings"), dict):
        return header["settings"]
    return {k: header[k] for k in _LEGACY_SETTINGS if k in header}


def _segments(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, settings in force from that line on) for the header and every resume that changed them."""
    header, lines = _lines(path)
    out = [(1, header_settings(header))]
    for number, line in enumerate(lines[1:], start=2):
        if '"resume"' not in line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("kind") == "resume" and isinstance(row.get("settings"), dict):
            out.append((number, row["settings"]))
    return out


def recorded_settings(path: Path) -> dict[str, Any]:
    """The settings in force at the end of a file: the header's, or those of the last resume that changed them."""
    return _segments(Path(path))[-1][1]


def _same_setting(a: Any, b: Any) -> bool:
    """Settings equal in meaning: a value and the one-element list of it ("infer" and ["infer"], as suite values
    are written either way), or a missing key and an empty value (a field added since the file was written)."""
    if a == b:
        return True
    if isinstance(a, list) and len(a) == 1 and not isinstance(b, list):
        return a[0] == b
    if isinstance(b, list) and len(b) == 1 and not isinstance(a, list):
        return b[0] == a
    return a in (None, [], False, {}) and b in (None, [], False, {})


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two settings dicts (nested dicts compared key by key)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            # A setting added to the code since the file was written (e.g. compile, vim_slice): the file's cases ran
            # with the only behaviour there was then, so it is no change; a later resume line records the value.
            continue
        a, b = old.get(key), new.get(key)
        if _same_setting(a, b):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in _differences(a, b)]
        elif key == "protocol":
            out.append("protocol (the measurement method changed with the code)")
        else:
            out.append(f"{key} {json.dumps(a)} -> {json.dumps(b)}")
    return out


def protocol_changes(path: Path) -> list[str]:
    """Where a file mixes protocols: one line per resume that changed the recorded settings."""
    segments = _segments(Path(path))
    out = []
    for (_, before), (line, after) in zip(segments, segments[1:]):
        changed = _differences(before, after)
        if changed:
            out.append(f"{path}, line {line}: resumed with other settings ({'; '.join(changed)})")
    return out


# ---------------------------------------------------------------------------------------------------- writing

class ResultsWriteError(VimbenchError):
    """Writing a results file failed (disk full, permissions, ...). The message names the file and, when rows
    were already written, how to continue."""


def _os_message(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create `path` as a folder (with parents) and check that files can be written into it; VimbenchError
    naming the path otherwise. Call it before measuring anything."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VimbenchError(f"{what} {path} is a file, not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VimbenchError(f"cannot create {what} {path}: {_os_message(exc)}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise VimbenchError(f"cannot write into {what} {path}: permission denied")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Before anything is measured or compiled: `path` can be written as a file (its folder is created, as
    `check_output_dir` does); VimbenchError naming it otherwise, so a long run never ends in a write that fails."""
    path = Path(path)
    if path.is_dir():
        raise VimbenchError(f"{what} {path} is a folder; give the path of a file")
    check_output_dir(path.parent, f"the folder of {what} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise VimbenchError(f"cannot write {what} {path}: permission denied")
    return path


def is_being_written(path: str | Path) -> bool:
    """Whether another RunWriter (in any process) holds the file's lock right now."""
    if fcntl is None or not Path(path).is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's shared lock


class RunWriter:
    """The writer of one run's results file (see the module docstring). Use `open_run` to get one.

    The file stays open and exclusively locked until close(); rows are flushed and fsynced one by one."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None, *, resume_line: dict[str, Any] | None
                 = None, resume_hint: str | None = None, settings: dict[str, Any] | None = None,
                 allow_settings_change: bool = False):
        """header: the header of a new file (the file must not exist or be empty). Without it the file is
        continued: resume_line (if given) is written before the first row, settings (if given) must match the
        recorded ones unless allow_settings_change, in which case they go into the resume line."""
        self._fd: int | None = None
        self.path = Path(path)
        self.resume_hint = resume_hint
        self.rows_written = 0
        self._pending: list[dict[str, Any]] = []
        self._done: set[CaseKey] = set()
        self._check_path(new=header is not None)
        self._open(create=header is not None)
        try:
            size = os.fstat(self._fd).st_size
            if header is not None:
                if size > 0:
                    raise VimbenchError(f"{self.path} already exists and is not empty; choose another path (a sweep "
                                        f"continues it with --resume {self.path})")
                self.header = {"kind": "header", "schema": SCHEMA, **header}
                self._write_line(self.header)
            else:
                if size == 0:
                    raise _not_results(self.path, "it is empty")
                self._repair_tail()
                self.header = read_header(self.path)
                self._done = self._scan_done()
                if settings is not None:
                    settings = json.loads(json.dumps(settings, default=str))
                    changed = _differences(recorded_settings(self.path), settings)
                    if changed and not allow_settings_change:
                        raise VimbenchError(
                            f"{self.path} was measured with other settings ({'; '.join(changed)}); resume with the "
                            "recorded ones, start a new file, or pass --allow-protocol-change to mix them (the file "
                            "then records the change and reports flag it)")
                    if changed and resume_line is not None:
                        resume_line = {**resume_line, "settings": settings}
                if resume_line is not None:
                    # Written with the first row: a run killed before measuring anything leaves no trace.
                    self._pending.append({"kind": "resume", **resume_line})
        except BaseException:
            self.close()
            raise

    # -- opening

    def _check_path(self, new: bool) -> None:
        p = self.path
        if p.is_dir():
            raise VimbenchError(f"{p} is a folder; results go to a file, e.g. {p / (new_run_id() + '.jsonl')}"
                                if new else f"{p} is a folder; resume takes one results file"
                                + _listing(p))
        if p.exists() and not p.is_file():
            raise VimbenchError(f"{p} is not a regular file (a device or pipe); give a .jsonl file path")
        if new:
            parent = p.parent
            if parent.exists() and not parent.is_dir():
                raise VimbenchError(f"cannot create {p}: {parent} is a file, not a folder")
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise VimbenchError(f"cannot create the folder {parent} for {p}: {_os_message(exc)}") from exc

    def _open(self, create: bool) -> None:
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            if not create:
                raise VimbenchError(f"cannot resume {self.path}: no such file") from None
            raise VimbenchError(f"cannot create results file {self.path} (this folder does not take new files)"
                                ) from None
        except OSError as exc:
            raise VimbenchError(f"cannot write results file {self.path}: {_os_message(exc)}") from exc
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                self._fd = None
                raise _busy(self.path) from None

    def _repair_tail(self) -> None:
        """A run killed mid-write leaves a last line without its newline. If that line does not parse it is half a
        row (never a measured result) and is cut; a complete row (or header) only gets its newline back."""
        data = _read_bytes(self.path)
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            complete = isinstance(json.loads(data[start:].decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            complete = False
        try:
            if complete:
                os.write(self._fd, b"\n")
            elif start == 0:
                raise _not_results(self.path, "its only line is not a complete header")
            else:
                os.ftruncate(self._fd, start)
        except OSError as exc:
            raise VimbenchError(f"cannot repair the end of {self.path}: {_os_message(exc)}") from exc

    def _scan_done(self) -> set[CaseKey]:
        return {key_of_row(r) for r in iter_rows(self.path, kinds=("case",)) if r.get("status") != "skipped"}

    # -- writing

    def _write_line(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, default=str) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            try:  # leave no half row behind
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            measured = row.get("kind") not in ("header", "resume")
            message = f"cannot write to {self.path}: {_os_message(exc)}"
            if measured:
                message += " (the row being written is lost)"
            if self.rows_written and self.resume_hint:
                message += (f"; the {self.rows_written} rows before it are in the file: after fixing this, continue "
                            f"with: {self.resume_hint}")
            elif self.rows_written:
                message += f"; the {self.rows_written} rows before it are in the file"
            raise ResultsWriteError(message) from exc

    def append(self, row: dict[str, Any] | Row) -> None:
        """Write one row (a CaseResult, KernelResult, ProfileResult or a row dict) and flush it to disk."""
        if self._fd is None:
            raise VimbenchError(f"{self.path} was closed; open it again to append")
        for pending in self._pending:
            self._write_line(pending)
        self._pending.clear()
        self._write_line(row if isinstance(row, dict) else row.to_row())
        self.rows_written += 1

    def done_keys(self) -> set[CaseKey]:
        """Keys of cases already in the file when it was opened (any status but 'skipped'), for --resume."""
        return set(self._done)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also releases the lock
            self._fd = None

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            self.close()


ResultsFile = RunWriter  # the writer's earlier name


def _busy(path: Path) -> VimbenchError:
    return VimbenchError(f"another vimbench run is writing {path}; wait for it to finish (then resume the file if "
                         "cases are left), or choose another --out")


def check_not_busy(path: str | Path) -> None:
    """VimbenchError if another run is writing `path` (checked before planning, so the hint is the right one)."""
    if is_being_written(path):
        raise _busy(Path(path))


def _listing(folder: Path) -> str:
    files = sorted(folder.glob("*.jsonl"))[-3:]
    return f", e.g. {', '.join(str(f) for f in files)}" if files else ""


def open_run(path: str | Path, kind: str, command: str, env: dict[str, Any], settings: dict[str, Any] | None = None,
             *, resume: bool = False, allow_settings_change: bool = False, run_id: str | None = None,
             created: str | None = None, resume_hint: str | None = None, extra: dict[str, Any] | None = None
             ) -> RunWriter:
    """Open the results file of one run (any kind: sweep, kernels, profile, anchors) for writing.

    New file (resume False): the header {run_kind, run_id, created, command, env, settings, **extra} is written
    now; an existing non-empty file is an error. resume True: the file must exist; `settings` must equal the
    recorded ones unless allow_settings_change (then the resume line records them); the resume line is written
    with the first row. Either way the file is locked until the writer is closed, and a second writer on it
    stops with one line. resume_hint (a command) is named in the error when a write fails after rows were written.
    """
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind {kind!r} is not one of {RUN_KINDS}")
    created = created or time.strftime("%Y-%m-%dT%H:%M:%S")
    if resume:
        line = {"created": created, "command": command, "env": env}
        return RunWriter(Path(path), resume_line=line, resume_hint=resume_hint, settings=settings,
                         allow_settings_change=allow_settings_change)
    header = {"run_kind": kind, "run_id": run_id or new_run_id(), "created": created, "command": command,
              "env": env, "settings": settings or {}, **(extra or {})}
    return RunWriter(Path(path), header, resume_hint=resume_hint)


# ---------------------------------------------------------------------------------------------------- loading

ENV_COLUMNS = ("gpu_name", "torch", "triton", "timm", "vimbench", "git_commit", "hostname", "gpu_index", "gpu_uuid")
# Recorded on each row as well as in the header: the row's own value wins (older files only have the header's).
ROW_WINS = ("gpu_name", "hostname", "gpu_index", "gpu_uuid")


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    paths = list(paths)
    if not paths:
        raise VimbenchError("no results files given; pass .jsonl files or folders that hold them "
                            "(e.g. results/)")
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.glob("*.jsonl")))
        elif p.exists():
            out.append(p)
        else:
            raise VimbenchError(f"results file {p} does not exist")
    if not out:
        raise VimbenchError("no results files (*.jsonl) found in " + ", ".join(str(p) for p in paths))
    return out


@dataclass
class LoadProblems:
    """Files left out by load_results(skip_bad=True), each with its one-line reason."""
    skipped: list[str] = field(default_factory=list)


def load_results(paths: Iterable[str | Path] | str | Path, kind: str = "case", skip_bad: bool = False,
                 problems: LoadProblems | None = None):
    """Rows of the given kind ('case', 'kernel' or 'profile') from results files or folders, as a DataFrame.

    Each row carries run_id, source (the file) and the header's main environment fields. A bad file is an error
    naming it; with skip_bad it is left out instead and its reason added to `problems` (when given).

    The frame is typed (see _typed): numbers are numeric (nullable Int64 for counts, float for measurements, NaN
    where missing), `cuda_graphs`/`h2d` boolean, `timestamp` and `run_created` UTC datetimes, and `img_s` is the
    throughput in images per second (the CLI's img/s; `fps` is the same column under the name the files
    store)."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    records = []
    files = _expand(paths)
    for path in files:
        try:
            header = read_header(path)
            rows = list(iter_rows(path, kinds=(kind,)))
        except VimbenchError as exc:
            if not skip_bad:
                if len(files) == 1:
                    raise
                raise VimbenchError(f"{exc} (to report the other files without it, pass --skip-bad)") from None
            if problems is not None:
                problems.skipped.append(str(exc))
            continue
        env = header.get("env", {}) or {}
        extra = {"run_id": header.get("run_id"), "source": str(path), "run_created": header.get("created")}
        extra.update({col: env.get(col) for col in ENV_COLUMNS})
        for row in rows:
            row = upgrade_row(row)
            merged = {**row, **extra}
            merged.update({col: row[col] for col in ROW_WINS if row.get(col) is not None})
            records.append(merged)
    if not records and problems is not None and problems.skipped:
        raise VimbenchError("no readable results: " + "; ".join(problems.skipped))
    return _typed(pd.DataFrame.from_records(records), kind)


# Row fields whose values are counts (nullable Int64); every other int/float field is a float measurement.
_COUNT_FIELDS = ("res", "batch", "params", "tokens", "warmup", "iters", "sm_clock_mhz_before", "sm_clock_mhz_after",
                 "temp_c_before", "temp_c_after", "res_effective_px")
_TIME_FIELDS = ("timestamp", "run_created")


def _numeric_fields(kind: str) -> list[str]:
    """The numeric fields of a row kind, from its dataclass's annotations (case rows: CaseKey + CaseResult)."""
    import dataclasses

    classes = [CaseKey, CaseResult] if kind == "case" else []
    names = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            text = str(f.type)
            if ("int" in text or "float" in text) and "list" not in text and "bool" not in text:
                names.append(f.name)
    return names


def _typed(df, kind: str = "case"):
    """The DataFrame with real dtypes: a column that is all None in a file (peak_alloc_mib of a CPU run) is still
    numeric, timestamps are datetimes, and the img/s column exists under its CLI name."""
    import pandas as pd

    if kind == "case":
        for name in (*(f.name for f in fields(CaseKey)), *(f.name for f in fields(CaseResult) if f.name != "key")):
            if name not in df.columns:
                df[name] = None
    numeric = set(_numeric_fields(kind))
    for col in df.columns:
        values = df[col].dropna()
        looks_numeric = len(values) > 0 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in values)
        if col in numeric or looks_numeric:
            df[col] = pd.to_numeric(df[col], errors="coerce")
            if col in _COUNT_FIELDS:
                df[col] = df[col].round().astype("Int64")
    for col in ("cuda_graphs", "h2d"):
        if col in df.columns:
            df[col] = df[col].fillna(False).astype(bool)
    for col in _TIME_FIELDS:
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")
    if "fps" in df.columns:
        df["img_s"] = df["fps"]
    return df

