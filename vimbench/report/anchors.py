"""Import the reference measurements ("anchors") of the official Vim code and timm DeiT into our results schema.

The anchors file is a foreign format: a header line {"kind": "header", "gpu", "torch", "timm", "date", "vim_impl",
"deit_impl", "protocol"} then rows of kind "model", "kernel" and "profile". Only "model" rows are whole-model
measurements comparable with a sweep; they become "case" rows. Kernel and profile rows are counted, not converted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vimbench.errors import VimbenchError
from vimbench.results import SCHEMA, CaseKey, CaseResult

GIB_IN_MIB = 1024.0
# The anchors protocol: 3 warm-up calls, 8 timed calls with CUDA events, median (see the header's "protocol").
ANCHOR_WARMUP = 3
ANCHOR_ITERS = 8


@dataclass
class ImportSummary:
    converted: int
    skipped_kinds: dict[str, int]
    destination: Path


def _read_anchor_lines(src: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        lines = Path(src).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VimbenchError(f"cannot read anchors file {src}: {exc.strerror or exc}") from exc
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise VimbenchError(f"{src}, line {number}: not valid JSON ({exc.msg})") from exc
    if not rows or not isinstance(rows[0], dict) or rows[0].get("kind") != "header":
        raise VimbenchError(f"{src} is not an anchors file: its first line is not a header row")
    if rows[0].get("schema") == SCHEMA:
        raise VimbenchError(f"{src} is already a vimbench results file; nothing to import")
    return rows[0], rows[1:]


def anchor_header(header: dict[str, Any], src: Path) -> dict[str, Any]:
    """Our header for the imported rows: the anchors' environment plus a flag and the protocol they followed."""
    date = str(header.get("date") or "")
    gpu = header.get("gpu")
    env = {
        "gpu_name": gpu,
        "gpu_count": 1 if gpu else 0,
        "torch": header.get("torch"),
        "timm": header.get("timm"),
        "triton": None,
        "vimbench": None,
        "git_commit": None,
        "hostname": None,
        "vim_impl": header.get("vim_impl"),
        "deit_impl": header.get("deit_impl"),
        "deit_attention": "sdpa and eager (per row: attn)",
        "imported_from_anchors": Path(src).name,
        "protocol": header.get("protocol"),
    }
    return {
        "run_id": f"anchors-{(gpu or 'gpu').split()[-1].lower()}-{date}" if date else "anchors",
        "created": f"{date}T00:00:00" if date else None,
        "command": f"vimbench import-anchors {Path(src).name}",
        "imported": True,
        "imported_from": Path(src).name,
        "protocol": header.get("protocol"),
        "env": env,
    }


def anchor_case(row: dict[str, Any]) -> CaseResult:
    """One anchors "model" row as a CaseResult. Vim rows are the official implementation; DeiT rows are timm."""
    try:
        model = row["model"]
        family_vim = model.startswith("vim")
        key = CaseKey(
            model=model,
            res=int(row["res"]),
            batch=int(row["batch"]),
            dtype=row["dtype"],
            implementation="official" if family_vim else row.get("implementation") or "timm",
            attn=None if family_vim else row.get("attn"),
            device="cuda",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise VimbenchError(f"anchors model row lacks a usable field ({exc}): {row}") from exc
    status = row.get("status", "ok")
    peak_gib = row.get("peak_alloc_gib")
    return CaseResult(
        key=key,
        status=status,
        params=row.get("params"),
        tokens=row.get("tokens"),
        timing_method="cuda_events" if status == "ok" else None,
        warmup=ANCHOR_WARMUP if status == "ok" else None,
        iters=ANCHOR_ITERS if status == "ok" else None,
        latency_ms_p50=row.get("latency_ms_p50"),
        fps=row.get("fps"),
        memory_method="torch_allocator" if peak_gib is not None else None,
        peak_alloc_mib=round(peak_gib * GIB_IN_MIB, 3) if peak_gib is not None else None,
    )


def import_anchors(src: str | Path, dst: str | Path, overwrite: bool = False) -> ImportSummary:
    """Convert an anchors file's "model" rows into a vimbench results file at dst."""
    from vimbench.results import open_run

    src, dst = Path(src), Path(dst)
    header, rows = _read_anchor_lines(src)
    cases = [anchor_case(r) for r in rows if r.get("kind") == "model"]
    if not cases:
        raise VimbenchError(f"{src} has no 'model' rows to import")
    skipped: dict[str, int] = {}
    for r in rows:
        if r.get("kind") != "model":
            skipped[str(r.get("kind"))] = skipped.get(str(r.get("kind")), 0) + 1
    if dst.is_dir():
        raise VimbenchError(f"-o {dst} is a folder; give the path of the .jsonl file to write")
    if dst.exists():
        if not overwrite:
            raise VimbenchError(f"{dst} exists; pass --force to replace it")
        try:
            dst.unlink()
        except OSError as exc:
            raise VimbenchError(f"cannot replace {dst}: {exc.strerror or exc}") from exc
    ours = anchor_header(header, src)
    extra = {k: v for k, v in ours.items() if k not in ("run_id", "created", "command", "env")}
    with open_run(dst, "anchors", ours["command"], ours["env"], {"protocol": ours["protocol"]},
                  run_id=ours["run_id"], created=ours["created"], extra=extra) as out:
        for case in cases:
            out.append(case)
    return ImportSummary(converted=len(cases), skipped_kinds=skipped, destination=dst)
