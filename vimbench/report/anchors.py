"""Import the reference measurements ("anchors") of the official Vim code and timm DeiT into our results schema.

The anchors file is a foreign format: a header line {"kind": "header", "gpu", "torch", "timm", "date", "vim_impl",
"deit_impl", "protocol" (or "protocol_infer" and "protocol_train")} then rows of kind "model", "train", "kernel" and
"profile". "model" rows (inference) and "train" rows (training steps: img_s, step_ms_p50) are whole-model
measurements comparable with a sweep; they become "case" rows of mode "infer" and "train". Kernel and profile rows
are counted, not converted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimbench.bench.compiler import parse_compile
from vimbench.errors import VimbenchError
from vimbench.results import SCHEMA, CaseKey, CaseResult, check_row

GIB_IN_MIB = 1024.0
# The anchors protocol: 3 warm-up calls, 8 timed calls with CUDA events, median (see the header's "protocol").
ANCHOR_WARMUP = 3
ANCHOR_ITERS = 8
# Training rows (the header's protocol_train): 3 warm-up steps, 8 timed steps with CUDA events, median; one step
# = zero_grad, forward, cross-entropy on random labels, backward, AdamW. Checkpointing and lr are not stated.
ANCHOR_TRAIN_WARMUP = 3
ANCHOR_TRAIN_ITERS = 8
CONVERTED_KINDS = ("model", "train")


@dataclass
class ImportSummary:
    converted: int
    skipped_kinds: dict[str, int]
    destination: Path
    modes: dict[str, int] = field(default_factory=dict)   # converted rows per mode: infer, train


def _read_anchor_lines(src: Path) -> tuple[dict[str, Any], list[tuple[int, dict[str, Any]]]]:
    """The header and the (line number, row) of every later line; VimbenchError naming the line when a line is
    not a JSON object."""
    try:
        lines = Path(src).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VimbenchError(f"cannot read anchors file {src}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise VimbenchError(f"{src} is not an anchors file: it is not UTF-8 text") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise VimbenchError(f"{src}, line {number}: not valid JSON ({exc.msg})") from exc
        if rows and not isinstance(row, dict):
            raise VimbenchError(f"{src}, line {number}: not a JSON object (one row per line)")
        rows.append((number, row))
    if not rows or not isinstance(rows[0][1], dict) or rows[0][1].get("kind") != "header":
        raise VimbenchError(f"{src} is not an anchors file: its first line is not a header row")
    if rows[0][1].get("schema") == SCHEMA:
        raise VimbenchError(f"{src} is already a vimbench results file; nothing to import")
    return rows[0][1], rows[1:]


def _peak_mib(row: dict[str, Any]) -> float | None:
    """peak_alloc_gib (GiB) in MiB; VimbenchError if it is not a number."""
    gib = row.get("peak_alloc_gib")
    if gib is None:
        return None
    if isinstance(gib, bool) or not isinstance(gib, (int, float)):
        raise VimbenchError(f"peak_alloc_gib is {gib!r}, not a number")
    return round(gib * GIB_IN_MIB, 3)


def _dtype(row: dict[str, Any]) -> str:
    """The row's precision, one of vimbench's (fp32, tf32, bf16, fp16); VimbenchError otherwise (a report could not
    place an int8 row)."""
    from vimbench.precision import DTYPES

    dtype = row["dtype"]
    if dtype not in DTYPES:
        raise VimbenchError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return dtype


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
        "protocol": _protocol(header),
    }
    return {
        "run_id": f"anchors-{(gpu or 'gpu').split()[-1].lower()}-{date}" if date else "anchors",
        "created": f"{date}T00:00:00" if date else None,
        "command": f"vimbench import-anchors {Path(src).name}",
        "imported": True,
        "imported_from": Path(src).name,
        "protocol": _protocol(header),
        "env": env,
    }


def _protocol(header: dict[str, Any]) -> Any:
    """The anchors' protocol text: one string, or one per mode when the file gives protocol_infer/_train."""
    if header.get("protocol") is not None:
        return header["protocol"]
    per_mode = {mode: header[f"protocol_{mode}"] for mode in ("infer", "train") if header.get(f"protocol_{mode}")}
    return per_mode or None


def anchor_case(row: dict[str, Any]) -> CaseResult:
    """One anchors "model" row as a CaseResult. Vim rows are the official implementation; DeiT rows are timm."""
    try:
        model = row["model"]
        family_vim = model.startswith("vim")
        key = CaseKey(
            model=model,
            res=int(row["res"]),
            batch=int(row["batch"]),
            dtype=_dtype(row),
            implementation="official" if family_vim else row.get("implementation") or "timm",
            attn=None if family_vim else row.get("attn"),
            device="cuda",
            # the anchors name eager runs compile "eager"; a torch.compile mode by its name
            compile=parse_compile(row.get("compile") or "none")[0],
        )
    except (KeyError, TypeError, ValueError, AttributeError, VimbenchError) as exc:
        raise VimbenchError(f"anchors model row lacks a usable field ({exc}): {row}") from exc
    status = row.get("status", "ok")
    peak_mib = _peak_mib(row)
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
        memory_method="torch_allocator" if peak_mib is not None else None,
        peak_alloc_mib=peak_mib,
    )


def anchor_train_case(row: dict[str, Any]) -> CaseResult:
    """One anchors "train" row (a training step) as a CaseResult of mode "train"."""
    try:
        model = row["model"]
        family_vim = model.startswith("vim")
        key = CaseKey(model=model, res=int(row["res"]), batch=int(row["batch"]), dtype=_dtype(row),
                      implementation="official" if family_vim else row.get("implementation") or "timm",
                      attn=None if family_vim else row.get("attn"), device="cuda", mode="train")
    except (KeyError, TypeError, ValueError, AttributeError, VimbenchError) as exc:
        raise VimbenchError(f"anchors train row lacks a usable field ({exc}): {row}") from exc
    status = row.get("status", "ok")
    ok = status == "ok"
    peak_mib = _peak_mib(row)
    return CaseResult(
        key=key, status=status, params=row.get("params"), tokens=row.get("tokens"),
        timing_method="cuda_events" if ok else None,
        warmup=ANCHOR_TRAIN_WARMUP if ok else None, iters=ANCHOR_TRAIN_ITERS if ok else None,
        latency_ms_p50=row.get("step_ms_p50"), fps=row.get("img_s"),
        memory_method="torch_allocator" if peak_mib is not None else None,
        peak_alloc_mib=peak_mib,
        optimizer="adamw", loss="cross_entropy",
    )


_CONVERTERS = {"model": anchor_case, "train": anchor_train_case}


def import_anchors(src: str | Path, dst: str | Path, overwrite: bool = False) -> ImportSummary:
    """Convert an anchors file's "model" (inference) and "train" rows into a vimbench results file at dst."""
    from vimbench.results import open_run

    src, dst = Path(src), Path(dst)
    header, numbered = _read_anchor_lines(src)
    rows = [r for _, r in numbered]
    cases = []
    for number, r in numbered:
        if r.get("kind") not in CONVERTED_KINDS:
            continue
        try:  # a row the results loaders would reject stops the import here, naming its line
            case = _CONVERTERS[r["kind"]](r)
            problem = check_row(case.to_row())
        except VimbenchError as exc:
            raise VimbenchError(f"{src}, line {number}: {exc}") from None
        if problem:
            raise VimbenchError(f"{src}, line {number}: {problem}; fix or delete that line")
        cases.append(case)
    if not cases:
        raise VimbenchError(f"{src} has no 'model' or 'train' rows to import")
    skipped: dict[str, int] = {}
    for r in rows:
        if r.get("kind") not in CONVERTED_KINDS:
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
    modes: dict[str, int] = {}
    for case in cases:
        modes[case.key.mode] = modes.get(case.key.mode, 0) + 1
    return ImportSummary(converted=len(cases), skipped_kinds=skipped, destination=dst, modes=modes)
