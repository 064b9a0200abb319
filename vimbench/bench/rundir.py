"""A run folder: one sweep measured by several processes (local workers, shards, SLURM array tasks).

    RUN_DIR/
      run.json                      the manifest: run id, command, the sweep, shards, executor options, job ids
      worker-0.jsonl ...            results files, one per writing process, so no two processes ever append
      shard-2-of-4.jsonl              to the same file (a worker that dies cannot damage the others' rows)
      shard-2-of-4-worker-0.jsonl
      slurm/                        submitit's sbatch scripts, logs and pickles (SLURM runs only)

Every results file is an ordinary vimbench results file: `vimbench report RUN_DIR` and `load_results(RUN_DIR)`
read them all. A case counts as done when any file of the folder holds it (any status but skipped), so a resume
of the folder measures exactly the cases no process finished, whichever process had them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vimbench.errors import VimbenchError
from vimbench.results import CaseKey, iter_rows, key_of_row, read_header

MANIFEST = "run.json"
RUN_SCHEMA = "vimbench.run/1"


def results_name(shard: tuple[int, int] | None = None, worker: int | None = None) -> str:
    """The file one process writes: by its shard and/or its worker number."""
    parts = []
    if shard is not None:
        parts.append(f"shard-{shard[0]}-of-{shard[1]}")
    if worker is not None:
        parts.append(f"worker-{worker}")
    if not parts:
        raise ValueError("a results file in a run folder belongs to a shard or a worker")
    return "-".join(parts) + ".jsonl"


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def results_files(run_dir: str | Path) -> list[Path]:
    return sorted(Path(run_dir).glob("*.jsonl"))


def done_keys(run_dir: str | Path, files: list[Path] | None = None) -> set[CaseKey]:
    """Cases held by any results file of the folder (status other than 'skipped')."""
    done: set[CaseKey] = set()
    for path in files if files is not None else results_files(run_dir):
        if path.stat().st_size == 0:
            continue
        done.update(key_of_row(r) for r in iter_rows(path) if r.get("kind") == "case" and r.get("status") != "skipped")
    return done


@dataclass
class Manifest:
    """run.json: what the run folder holds and how it was started."""
    path: Path
    data: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def sweep(self) -> dict[str, Any]:
        return self.data["sweep"]

    @property
    def shards(self) -> int | None:
        return self.data.get("shards")

    def save(self) -> None:
        """Written to a temporary file and renamed, so a reader never sees half a manifest."""
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def create_run_dir(run_dir: str | Path, data: dict[str, Any]) -> Manifest:
    """A new run folder (it may exist but must hold no results yet)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise VimbenchError(f"{run_dir} is a file; a parallel sweep writes a run folder: choose another --run-dir")
    if run_dir.is_dir() and (is_run_dir(run_dir) or results_files(run_dir)):
        raise VimbenchError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                            f"or choose another --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VimbenchError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}") from exc
    manifest = Manifest(run_dir / MANIFEST, {"schema": RUN_SCHEMA, **data})
    manifest.save()
    return manifest


def load_manifest(run_dir: str | Path) -> Manifest:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise VimbenchError(f"{run_dir} is not a vimbench run folder (it has no {MANIFEST}); give the folder a "
                            f"parallel sweep or --executor slurm wrote")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VimbenchError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != RUN_SCHEMA or not isinstance(data.get("sweep"), dict):
        raise VimbenchError(f"{path} is not a {RUN_SCHEMA} manifest")
    return Manifest(path, data)


def check_results_files(files: list[Path]) -> None:
    """Every file must be a vimbench results file before workers append to them (a worker should not die on
    a foreign file after the others started)."""
    for path in files:
        if path.exists() and path.stat().st_size > 0:
            read_header(path)
