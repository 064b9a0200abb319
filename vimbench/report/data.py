"""Selecting, de-duplicating and labelling stored case rows; Vim-vs-DeiT ratios. Pure pandas, no drawing.

A *line* is what one curve of a figure shows: one model / implementation / attention / precision / batch on one
device (and GPU). Ratios pair each Vim line with each DeiT line measured under the same conditions
(resolution, precision, batch, device, GPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from vimbench.errors import VimbenchError
from vimbench.results import KEY_FIELDS

# Everything that separates one curve from another: the case key without the resolution, plus the GPU.
LINE_FIELDS = (*(f for f in KEY_FIELDS if f != "res"), "gpu_name")
# What a Vim and a DeiT line must share to be compared (besides resolution).
PAIR_FIELDS = tuple(f for f in LINE_FIELDS if f not in ("model", "implementation", "attn"))
FLAG_FIELDS = {"h2d": "+h2d"}   # boolean key fields and their label
GROUP_CHOICES = ("dtype", "batch", "device", "gpu_name", "model", "implementation", "attn")
NUMERIC = ("fps", "latency_ms_p20", "latency_ms_p50", "latency_ms_p80", "peak_alloc_mib", "peak_reserved_mib",
           "activation_mib", "nvml_used_mib", "params", "tokens", "baseline_alloc_mib", "forward_ms_p50",
           "backward_ms_p50")
MODE_ORDER = ("infer", "train")
# What a timed call and the memory pass are, per mode: appended to the captions of that mode's tables.
MODE_NOTES = {"train": " Training steps: p50 (ms) = one step (zero_grad, forward, cross-entropy, backward, AdamW "
                       "step); forward = zero_grad + forward + loss, backward = backward + optimizer step, both p50 of "
                       "the same steps; img/s = batch / p50 step; baseline alloc = weights, gradients, AdamW state "
                       "and batch before the step; peak over one step."}


def modes(df) -> list[str]:
    """The modes present, inference first."""
    present = {str(m) for m in df["mode"].dropna()}
    return [m for m in MODE_ORDER if m in present] + sorted(present - set(MODE_ORDER))


def family(model: str) -> str:
    """The model's family from the model registry ("vim", "deit"); "other" for a name it does not know."""
    from vimbench.models.registry import get_spec

    try:
        return get_spec(str(model)).family
    except VimbenchError:
        return "other"


def size(model: str) -> str:
    """The size suffix shared by matching Vim and DeiT models: vim_t and deit_t -> "t", vim_test -> "test"."""
    return str(model).split("_", 1)[1] if "_" in str(model) else ""


def _split(values: Iterable[str] | str | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = [v.strip() for item in values for v in str(item).split(",") if v.strip()]
    return out or None


def prepare(df, models: Sequence[str] | str | None = None, dtypes: Sequence[str] | str | None = None,
            batches: Sequence[int | str] | str | None = None, devices: Sequence[str] | str | None = None):
    """Case rows ready to plot: filtered, one row per (case key, GPU) keeping the newest run, with a `family`
    column and a `gpu` column (GPU name, or the device when there is none). Raises when nothing is left."""
    import pandas as pd

    if df is None or len(df) == 0:
        raise VimbenchError("the results hold no case rows; run `vimbench sweep` first or pass other files")
    df = df.copy()
    for col in (*KEY_FIELDS, *NUMERIC, "status", "gpu_name", "run_id", "run_created", "timestamp", "source"):
        if col not in df.columns:
            df[col] = None
    df["mode"] = df["mode"].fillna("infer")
    df["compile"] = df["compile"].fillna("none")  # rows from before the compile axis (results.upgrade_row)
    df["vim_slice"] = pd.to_numeric(df["vim_slice"], errors="coerce").fillna(0).astype(int)
    for flag in FLAG_FIELDS:
        df[flag] = df[flag].fillna(False).astype(bool)
    df["attn"] = df["attn"].where(df["attn"].notna(), None)
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["res"] = pd.to_numeric(df["res"], errors="coerce").astype("Int64")
    df["batch"] = pd.to_numeric(df["batch"], errors="coerce").astype("Int64")
    df["gpu"] = [g if isinstance(g, str) and g else str(d) for g, d in zip(df["gpu_name"], df["device"])]
    df["gpu_name"] = df["gpu"]
    df["family"] = [family(m) for m in df["model"]]

    filters = {"model": _split(models), "dtype": _split(dtypes), "device": _split(devices)}
    for col, wanted in filters.items():
        if wanted:
            df = df[df[col].astype(str).isin(wanted)]
    wanted_batches = _split(batches)
    if wanted_batches:
        try:
            numbers = [int(b) for b in wanted_batches]
        except ValueError as exc:
            raise VimbenchError(f"--batch takes integers, got {','.join(wanted_batches)}") from exc
        df = df[df["batch"].isin(numbers)]
    if len(df) == 0:
        raise VimbenchError("no case rows are left after the filters (--models/--dtype/--batch/--device); "
                            "loosen them")

    # The same case measured more than once (several runs, or repeated in one file): keep the newest.
    # Within one file, later rows are newer (the sort is stable).
    order = df["run_created"].astype(str) + "|" + df["timestamp"].astype(str)
    before = len(df)
    df = df.assign(_order=order).sort_values("_order", kind="stable")
    df = df.drop_duplicates(subset=[*KEY_FIELDS, "gpu_name"], keep="last").drop(columns="_order")
    df = df.sort_values(["family", "model", "implementation", "dtype", "batch", "res"],
                        key=lambda s: s.astype(str) if s.dtype == object else s).reset_index(drop=True)
    df.attrs["repeats_dropped"] = before - len(df)
    return df


def line_key(row: Any) -> tuple:
    return tuple(None if _missing(row[f]) else row[f] for f in LINE_FIELDS)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def varying(df, fields: Sequence[str] = LINE_FIELDS) -> list[str]:
    """The fields that take more than one value in df: only those need to appear in labels."""
    return [f for f in fields if df[f].astype(str).nunique(dropna=False) > 1]


def line_label(key: dict[str, Any] | Any, show: Sequence[str]) -> str:
    """A short curve label: model, then implementation/attention, then whatever else varies."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    impl = str(get("implementation"))
    if not _missing(get("attn")):
        impl += f"/{get('attn')}"
    parts = [str(get("model")), impl]
    for f in show:
        if f in ("model", "implementation", "attn"):
            continue
        v = get(f)
        if f == "batch":
            parts.append(f"b{v}")
        elif f == "compile":
            if not _missing(v) and v != "none":
                parts.append(str(v))
        elif f == "vim_slice":
            if not _missing(v) and int(v):
                parts.append(f"slice{int(v)}")
        elif f in FLAG_FIELDS:
            if v:
                parts.append(FLAG_FIELDS[f])
        elif not _missing(v):
            parts.append(str(v))
    return " ".join(parts)


def lines(df) -> list[tuple[dict[str, Any], Any]]:
    """(key dict, rows sorted by resolution) for each curve in df."""
    out = []
    for key, rows in df.groupby(list(LINE_FIELDS), dropna=False, sort=True):
        out.append((dict(zip(LINE_FIELDS, key)), rows.sort_values("res")))
    return out


@dataclass(frozen=True)
class Ratio:
    vim: dict[str, Any]
    deit: dict[str, Any]
    res: int
    speedup: float | None          # Vim img/s / DeiT img/s
    memory_saved: float | None     # 1 - Vim peak alloc / DeiT peak alloc (fraction)
    note: str = ""                 # "DeiT OOM", "Vim OOM", ...


def _ok(row) -> bool:
    return row is not None and row["status"] == "ok"


def ratios(df) -> list[Ratio]:
    """Each Vim line against each DeiT line of the same size (vim_t vs deit_t), precision, batch, device and GPU,
    resolution by resolution.

    An OOM on one side is kept as a note: the ratio is then undefined (None), not infinite."""
    out: list[Ratio] = []
    vim_lines = [(k, r) for k, r in lines(df[df["family"] == "vim"])]
    deit_lines = [(k, r) for k, r in lines(df[df["family"] == "deit"])]
    for vk, vrows in vim_lines:
        for dk, drows in deit_lines:
            if size(vk["model"]) != size(dk["model"]) or any(str(vk[f]) != str(dk[f]) for f in PAIR_FIELDS):
                continue
            vby = {int(r["res"]): r for _, r in vrows.iterrows()}
            dby = {int(r["res"]): r for _, r in drows.iterrows()}
            for res in sorted(set(vby) & set(dby)):
                v, d = vby[res], dby[res]
                speed = mem = None
                note = ""
                if _ok(v) and _ok(d):
                    if v["fps"] == v["fps"] and d["fps"] and d["fps"] == d["fps"]:
                        speed = float(v["fps"]) / float(d["fps"])
                    if v["peak_alloc_mib"] == v["peak_alloc_mib"] and d["peak_alloc_mib"] and \
                            d["peak_alloc_mib"] == d["peak_alloc_mib"]:
                        mem = 1.0 - float(v["peak_alloc_mib"]) / float(d["peak_alloc_mib"])
                else:
                    note = ", ".join(f"{name} {row['status']}" for name, row in (("Vim", v), ("DeiT", d))
                                     if not _ok(row))
                out.append(Ratio(vk, dk, res, speed, mem, note))
    return out


def provenance(df) -> dict[str, str]:
    """What a figure or table was built from: GPUs, precisions, batches, dates and run ids."""
    def values(col: str) -> str:
        vals = sorted({str(v) for v in df[col].dropna().tolist()}, key=_natural)
        return ", ".join(vals) if vals else "-"

    dates = set()
    for col in ("run_created", "timestamp"):
        for v in df[col].dropna().tolist():
            if str(v):
                dates.add(str(v)[:10])
    return {
        "gpu": values("gpu"),
        "precision": values("dtype"),
        "batch": values("batch"),
        "dates": ", ".join(sorted(dates)) or "-",
        "runs": values("run_id"),
    }


def provenance_text(prov: dict[str, str]) -> str:
    return (f"GPU: {prov['gpu']} | precision: {prov['precision']} | batch: {prov['batch']} | "
            f"dates: {prov['dates']} | runs: {prov['runs']}")


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)
