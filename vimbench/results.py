"""The results store: one JSON-lines file per run, append-only.

Line 1 is the header: {"kind": "header", "schema": SCHEMA, "run_id", "created", "command", "env": {...}}.
Every later line is one measured case, written and flushed as soon as it is measured:
{"kind": "case", ...fields of CaseResult...} for model sweeps, {"kind": "kernel", ...} for kernel benchmarks.
`load_results` reads any number of such files into one pandas DataFrame, with the header's run_id and the
environment's main fields copied onto each row.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from vimbench.errors import VimbenchError

SCHEMA = "vimbench.results/1"


@dataclass(frozen=True)
class CaseKey:
    """What identifies a case: a resumed sweep skips keys already in its file."""
    model: str            # alias: vim_t, deit_s, ...
    res: int              # input image side, px
    batch: int
    dtype: str            # fp32 | tf32 | bf16 | fp16
    implementation: str   # Vim: backend (torch | triton); DeiT: "timm"
    attn: str | None      # DeiT: sdpa | eager; Vim: None
    device: str           # cuda | cpu
    mode: str = "infer"
    cuda_graphs: bool = False
    h2d: bool = False     # the timed call includes copying the input from (pinned) host memory

    def label(self) -> str:
        impl = self.implementation + (f"/{self.attn}" if self.attn else "")
        extras = (" graphs" if self.cuda_graphs else "") + (" +h2d" if self.h2d else "")
        return f"{self.model} {impl} {self.res}px b{self.batch} {self.dtype} {self.device}{extras}"


@dataclass
class CaseResult:
    """One measured case. Units are in the field names: ms, img/s (fps), MiB (2^20 bytes)."""
    key: CaseKey
    status: str                        # ok | oom | error | skipped
    error: str | None = None
    params: int | None = None
    tokens: int | None = None
    # timing
    timing_method: str | None = None   # "cuda_events" | "cuda_graph_replay+cuda_events" | "perf_counter"
    warmup: int | None = None
    iters: int | None = None
    latency_ms_samples: list[float] = field(default_factory=list)
    latency_ms_p20: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p80: float | None = None
    fps: float | None = None           # batch / p50 latency, img/s
    # memory (a separate pass from timing)
    memory_method: str | None = None   # "torch_allocator+nvml" | "process_rss"
    peak_alloc_mib: float | None = None       # torch.cuda.max_memory_allocated during one forward
    peak_reserved_mib: float | None = None    # torch.cuda.max_memory_reserved during one forward
    baseline_alloc_mib: float | None = None   # allocated before the forward: weights + input
    activation_mib: float | None = None       # peak_alloc - baseline
    nvml_used_mib: float | None = None        # device memory in use seen by NVML, max of samples in the pass
    nvml_baseline_mib: float | None = None    # NVML used before the pass
    cpu_peak_rss_mib: float | None = None     # CPU runs: peak resident set of the process
    # conditions
    sm_clock_mhz_before: int | None = None
    sm_clock_mhz_after: int | None = None
    temp_c_before: int | None = None
    temp_c_after: int | None = None
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


KEY_FIELDS = tuple(f.name for f in fields(CaseKey))


def key_of_row(row: dict[str, Any]) -> CaseKey:
    return CaseKey(**{name: row.get(name, CaseKey.__dataclass_fields__[name].default) for name in KEY_FIELDS})


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class ResultsFile:
    """Append-only writer for one run's file. Each row is flushed and fsynced when written."""

    def __init__(self, path: Path, header: dict[str, Any] | None = None):
        self.path = Path(path)
        if self.path.exists() and self.path.stat().st_size > 0:
            self.header = read_header(self.path)
            self._drop_partial_tail()
        else:
            if header is None:
                raise VimbenchError(f"{self.path} does not exist and no header was given to create it")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.header = {"kind": "header", "schema": SCHEMA, **header}
            self._append(self.header)

    def _drop_partial_tail(self) -> None:
        """A run killed mid-write leaves a last line without its newline; appending after it would corrupt the
        next row, so that incomplete row (never a measured result) is cut off before appending."""
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            fh.truncate(data.rfind(b"\n") + 1)

    def _append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, row: dict[str, Any] | CaseResult) -> None:
        self._append(row.to_row() if isinstance(row, CaseResult) else row)

    def done_keys(self) -> set[CaseKey]:
        """Keys of cases already measured (any status but 'skipped'), for --resume."""
        return {key_of_row(r) for r in iter_rows(self.path) if r.get("kind") == "case" and r.get("status") != "skipped"}


def read_header(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except OSError as exc:
        raise VimbenchError(f"cannot read results file {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("kind") != "header" or header.get("schema") != SCHEMA:
        raise VimbenchError(f"{path} is not a vimbench results file (its first line is not a {SCHEMA} header)")
    return header


def iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows after the header. A truncated last line (a run killed mid-write) is skipped; any other bad line
    is an error naming the file and line."""
    path = Path(path)
    read_header(path)
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
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
        yield row


ENV_COLUMNS = ("gpu_name", "torch", "triton", "timm", "vimbench", "git_commit", "hostname", "gpu_index", "gpu_uuid")
# Recorded on each row as well as in the header: the row's own value wins (older files only have the header's).
ROW_WINS = ("gpu_name", "hostname", "gpu_index", "gpu_uuid")


def _expand(paths: Iterable[str | Path]) -> list[Path]:
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
        raise VimbenchError("no results files found in " + ", ".join(str(p) for p in paths))
    return out


def load_results(paths: Iterable[str | Path] | str | Path, kind: str = "case"):
    """Rows of the given kind ('case' or 'kernel') from results files or folders, as a pandas DataFrame.

    Each row carries run_id, source (the file) and the header's main environment fields."""
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    records = []
    for path in _expand(paths):
        header = read_header(path)
        env = header.get("env", {}) or {}
        extra = {"run_id": header.get("run_id"), "source": str(path), "run_created": header.get("created")}
        extra.update({col: env.get(col) for col in ENV_COLUMNS})
        for row in iter_rows(path):
            if row.get("kind") == kind:
                merged = {**row, **extra}
                merged.update({col: row[col] for col in ROW_WINS if row.get(col) is not None})
                records.append(merged)
    return pd.DataFrame.from_records(records)
