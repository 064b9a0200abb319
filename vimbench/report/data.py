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

FLAG_FIELDS = {"cuda_graphs": "graphs", "h2d": "+h2d"}   # boolean key fields and their label
# Everything that separates one curve from another: the case key without the resolution, plus the GPU. The
# compile mode and the flags are line fields whatever the row schema (newer rows carry graphs in `compile`;
# prepare() turns that back into the cuda_graphs flag).
LINE_FIELDS = (*(f for f in KEY_FIELDS if f != "res"),
               *(f for f in ("compile", *FLAG_FIELDS) if f not in KEY_FIELDS), "gpu_name")
# What a Vim and a DeiT line must share to be compared (besides resolution).
# (vim_slice and vim_memory, Vim-only settings of newer rows, do not stop a pairing: DeiT rows carry 0 / default.)
PAIR_FIELDS = tuple(f for f in LINE_FIELDS
                    if f not in ("model", "implementation", "attn", "compile", "vim_slice", "vim_memory"))
GROUP_CHOICES = ("dtype", "batch", "device", "gpu_name", "model", "implementation", "attn")
NUMERIC = ("fps", "latency_ms_p20", "latency_ms_p50", "latency_ms_p80", "peak_alloc_mib", "peak_reserved_mib",
           "activation_mib", "nvml_used_mib", "cpu_peak_rss_mib", "params", "tokens", "baseline_alloc_mib",
           "forward_ms_p50", "backward_ms_p50", "allocated_at_start_mib", "host_us_per_op",
           "host_ms_p50")
# Key fields that later schema versions add (e.g. `compile`): absent columns read as "not set".
OPTIONAL_KEY_FIELDS = ("compile",)
MEMORY_METRICS = {"alloc": "peak allocated (torch allocator)", "rss": "peak resident set of the process (CPU)"}
MODE_ORDER = ("infer", "train")
# What a timed call and the memory pass are, per mode: appended to the captions of that mode's tables.
MODE_NOTES = {"train": " Training steps: p50 (ms) = one step (zero_grad, forward, cross-entropy, backward, AdamW "
                       "step); forward = zero_grad + forward + loss, backward = backward + optimizer step, both p50 of "
                       "the same steps; img/s = batch / p50 step; baseline alloc = weights, gradients, AdamW state "
                       "and batch before the step; peak over one step."}

_PRETTY_SIZES = {"t": "Ti", "s": "S", "b": "B"}
_PRETTY_FAMILIES = {"vim": "Vim", "deit": "DeiT"}


def modes(df) -> list[str]:
    """The modes present, inference first."""
    present = {str(m) for m in df["mode"].dropna()}
    return [m for m in MODE_ORDER if m in present] + sorted(present - set(MODE_ORDER))


def family(model: str) -> str:
    """The model's family from the model registry ("vim", "deit"); "timm" for a timm peer (timm:NAME), "other"
    for a name it does not know."""
    model = str(model)
    if model.startswith("timm:"):
        return "timm"
    from vimbench.models.registry import get_spec

    try:
        return get_spec(model).family
    except VimbenchError:
        return "other"


def pretty_model(model: str) -> str:
    """vim_t -> Vim-Ti, deit_s -> DeiT-S, timm:convnext_tiny -> convnext_tiny; anything else unchanged."""
    model = str(model)
    if model.startswith("timm:"):
        return model[5:]
    fam, _, sz = model.partition("_")
    if fam in _PRETTY_FAMILIES and sz in _PRETTY_SIZES:
        return f"{_PRETTY_FAMILIES[fam]}-{_PRETTY_SIZES[sz]}"
    return model


def compile_mode(key: Any) -> str | None:
    """The torch.compile mode of a line (rows from before the `compile` field have none)."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f] if f in key else None)
    value = get("compile")
    # "cuda-graphs" shares the compile field in newer rows but is graph replay, not torch.compile (is_graphs)
    if _missing(value) or value in (False, "", "none", "None", "eager", "cuda-graphs"):
        return None
    return "default" if value is True else str(value)


def is_graphs(key: Any) -> bool:
    """Timed as CUDA-graph replays: the `cuda_graphs` flag of older rows or compile = "cuda-graphs"."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f] if f in key else None)
    flag = get("cuda_graphs")
    return (not _missing(flag) and bool(flag)) or get("compile") == "cuda-graphs"


def is_reference(key: Any) -> bool:
    """Reference backends (the pure-PyTorch Vim ops): correct but not an efficiency contender, so they stay out
    of headline figures (they remain in the full report)."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    return family(get("model")) == "vim" and str(get("implementation")) == "torch"


def implementation_id(key: Any) -> str:
    """What gets one colour in every figure: the implementation, whatever the model size, precision or batch.
    vim:triton, vim:official, vim:torch, deit:sdpa, deit:eager, deit:sdpa+compile, timm:<name>, ..."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    fam = family(get("model"))
    if fam == "timm":
        ident = str(get("model"))
    elif fam == "deit":
        attn = get("attn")
        ident = f"deit:{'sdpa' if _missing(attn) else attn}"
    else:
        ident = f"{fam}:{get('implementation')}"
    mode = compile_mode(key)
    return ident + ("+compile" if mode else "")


def implementation_label(key: Any) -> str:
    """The implementation in words, as legends show it: triton (ours), official, torch reference, sdpa, ..."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    fam = family(get("model"))
    impl = str(get("implementation"))
    if fam == "vim":
        text = {"triton": "Triton (ours)", "torch": "torch reference", "official": "official (mamba-ssm)"}.get(
            impl, impl)
    elif fam == "deit":
        attn = get("attn")
        text = {"sdpa": "fused attention", "eager": "eager attention"}.get(attn, str(attn)) \
            if not _missing(attn) else impl
    else:
        text = "timm"
    mode = compile_mode(key)
    if mode:
        text += ", compiled" + ("" if mode == "default" else f" ({mode})")
    if is_graphs(key):
        text += ", graphs"
    try:
        if not _missing(get("h2d")) and bool(get("h2d")):
            text += ", +h2d"
    except KeyError:
        pass
    return text


def memory_metric(device: Any) -> str:
    """Which memory number a row's memory_mib holds: the allocator's peak on a GPU, the process RSS on CPU."""
    return "rss" if str(device) == "cpu" else "alloc"


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
    for col in (*KEY_FIELDS, *OPTIONAL_KEY_FIELDS, *FLAG_FIELDS, *NUMERIC, "status", "gpu_name", "run_id", "run_created",
                "timestamp", "source"):
        if col not in df.columns:
            df[col] = None
    df["cuda_graphs"] = [is_graphs({"cuda_graphs": g, "compile": c}) for g, c in zip(df["cuda_graphs"], df["compile"])]
    df["compile"] = [compile_mode({"compile": v}) for v in df["compile"]]
    df["mode"] = df["mode"].fillna("infer")
    df["compile"] = df["compile"].fillna("none")  # rows from before the compile axis (results.upgrade_row)
    df["vim_slice"] = pd.to_numeric(df["vim_slice"], errors="coerce").fillna(0).astype(int)
    df["vim_memory"] = df["vim_memory"].fillna("default")  # rows from before the memory-mode axis
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
    # One memory column for every device: the allocator's peak on a GPU, the process's peak RSS on CPU
    # (memory_metric says which); ratios and figures read this one.
    df["memory_metric"] = [memory_metric(d) for d in df["device"]]
    df["memory_mib"] = df["peak_alloc_mib"].where(df["memory_metric"] == "alloc", df["cpu_peak_rss_mib"])
    # The p20..p80 spread of the timed calls as throughput: the slow calls (p80) give the low edge.
    batch_f = df["batch"].astype(float)
    df["fps_p80"] = 1000.0 * batch_f / df["latency_ms_p20"]
    df["fps_p20"] = 1000.0 * batch_f / df["latency_ms_p80"]

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
    df = df.drop_duplicates(subset=[*_key_fields(), "gpu_name"], keep="last").drop(columns="_order")
    df = df.sort_values(["family", "model", "implementation", "dtype", "batch", "res"],
                        key=lambda s: s.astype(str) if s.dtype == object else s).reset_index(drop=True)
    df.attrs["repeats_dropped"] = before - len(df)
    return df


def _key_fields() -> tuple[str, ...]:
    return (*KEY_FIELDS, *(f for f in (*OPTIONAL_KEY_FIELDS, *FLAG_FIELDS) if f not in KEY_FIELDS))


def line_key(row: Any) -> tuple:
    return tuple(None if _missing(row[f]) else row[f] for f in LINE_FIELDS)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def varying(df, fields: Sequence[str] = LINE_FIELDS) -> list[str]:
    """The fields that take more than one value in df: only those need to appear in labels."""
    return [f for f in fields if df[f].astype(str).nunique(dropna=False) > 1]


def pair_label_fields(df) -> list[str]:
    """The varying fields that labels of Vim/DeiT pairs must show: those a pair may differ in, and the flags
    (CUDA-graph replay, +h2d) that both sides of a pair share but that tell one pair from another (eager
    against eager beside graphs against graphs)."""
    return [f for f in varying(df) if f not in PAIR_FIELDS or f in FLAG_FIELDS]


def line_label(key: dict[str, Any] | Any, show: Sequence[str]) -> str:
    """A short curve label: model, then implementation/attention, then whatever else varies."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    impl = str(get("implementation"))
    if not _missing(get("attn")):
        impl += f"/{get('attn')}"
    mode = compile_mode(key)
    if mode:
        impl += " compiled" + ("" if mode == "default" else f"({mode})")
    parts = [str(get("model")), impl]
    for f in show:
        if f in ("model", "implementation", "attn", "compile"):
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
        elif f == "vim_memory":
            if not _missing(v) and v != "default":
                parts.append(f"mem-{v}")
        elif f in FLAG_FIELDS:
            if v:
                parts.append(FLAG_FIELDS[f])
        elif not _missing(v):
            parts.append(str(v))
    return " ".join(parts)


def label_extra(key: dict[str, Any] | Any, show: Sequence[str]) -> str:
    """What line_label adds after the model and the implementation ("" when nothing else varies), without what
    implementation_label already says in a legend (the compile mode, graphs, +h2d)."""
    shown = [f for f in show if f not in ("compile", *FLAG_FIELDS)]
    parts = line_label({**_as_dict(key), "compile": None}, shown).split(" ", 2) if shown else []
    return parts[2] if len(parts) > 2 else ""


def _as_dict(key: dict[str, Any] | Any) -> dict[str, Any]:
    return dict(key) if isinstance(key, dict) else {f: key[f] for f in key.index}


def short_label(key: dict[str, Any] | Any, show: Sequence[str] = ()) -> str:
    """Vim-Ti triton, DeiT-Ti eager, DeiT-Ti sdpa compiled: line_label with the family's pretty name and no
    "timm/" (for narrow tables)."""
    get = key.get if isinstance(key, dict) else (lambda f: key[f])
    text = line_label(key, show)
    model = str(get("model"))
    text = text.replace(model, pretty_model(model), 1)
    return text.replace(" timm/", " ", 1) if family(model) == "deit" else text


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
    memory_saved: float | None     # 1 - Vim memory / DeiT memory (fraction; memory_mib: allocator peak or RSS)
    note: str = ""                 # "DeiT OOM", "Vim OOM", ...

    @property
    def memory_ratio(self) -> float | None:
        """Vim memory / DeiT memory (1 - memory_saved): below 1, Vim needs less."""
        return None if self.memory_saved is None else 1.0 - self.memory_saved


def _ok(row) -> bool:
    return row is not None and row["status"] == "ok"


def _value(row, col: str) -> float | None:
    v = row[col] if row is not None and col in row else None
    return None if v is None or v != v else float(v)


def speedup(vim_row, deit_row) -> float | None:
    """Vim img/s over DeiT img/s, both measured (status ok); None otherwise."""
    if not (_ok(vim_row) and _ok(deit_row)):
        return None
    v, d = _value(vim_row, "fps"), _value(deit_row, "fps")
    return v / d if v is not None and d else None


def memory_saved(vim_row, deit_row, column: str = "memory_mib") -> float | None:
    """1 - Vim memory / DeiT memory, both measured; None otherwise."""
    if not (_ok(vim_row) and _ok(deit_row)):
        return None
    v, d = _value(vim_row, column), _value(deit_row, column)
    return 1.0 - v / d if v is not None and d else None


def by_res(rows) -> dict[int, Any]:
    return {int(r["res"]): r for _, r in rows.iterrows()}


def line_pairs(df) -> list[tuple[dict[str, Any], Any, dict[str, Any], Any]]:
    """(Vim key, Vim rows, DeiT key, DeiT rows) for each Vim line and each DeiT line of the same size (vim_t
    with deit_t), precision, batch, device and GPU."""
    out = []
    vim_lines = lines(df[df["family"] == "vim"])
    deit_lines = lines(df[df["family"] == "deit"])
    for vk, vrows in vim_lines:
        for dk, drows in deit_lines:
            if size(vk["model"]) != size(dk["model"]) or any(str(vk[f]) != str(dk[f]) for f in PAIR_FIELDS):
                continue
            out.append((vk, vrows, dk, drows))
    return out


def ratios(df) -> list[Ratio]:
    """Each Vim line against each DeiT line of the same size (vim_t vs deit_t), precision, batch, device and GPU,
    resolution by resolution.

    An OOM on one side is kept as a note: the ratio is then undefined (None), not infinite."""
    out: list[Ratio] = []
    for vk, vrows, dk, drows in line_pairs(df):
        vby, dby = by_res(vrows), by_res(drows)
        for res in sorted(set(vby) & set(dby)):
            v, d = vby[res], dby[res]
            note = "" if _ok(v) and _ok(d) else ", ".join(
                f"{name} {row['status']}" for name, row in (("Vim", v), ("DeiT", d)) if not _ok(row))
            out.append(Ratio(vk, dk, res, speedup(v, d), memory_saved(v, d), note))
    return out


# ------------------------------------------------------------------------------------------- crossover
@dataclass(frozen=True)
class Crossover:
    value: float | None        # interpolated resolution, px; None when there is no crossover inside the data
    below: int | None          # last measured resolution where Vim is slower
    above: int | None          # first measured resolution from which it stays faster
    text: str                  # "between 1024 and 1248 px (interpolated 1190 px)", "none in 224..1248 px: ..."


def _faster(v, d) -> bool | None:
    """Whether Vim is faster at one resolution; an OOM loses. None when neither side ran."""
    v_ok, d_ok = _ok(v), _ok(d)
    if v_ok and d_ok:
        return float(v["fps"]) > float(d["fps"])
    if v_ok and d is not None and d["status"] == "oom":
        return True
    if d_ok and v is not None and v["status"] == "oom":
        return False
    return None


def find_crossover(subject: dict[int, Any], baseline: dict[int, Any]) -> Crossover:
    """The lowest resolution from which the subject stays faster than the baseline at every larger measured
    resolution, interpolated linearly in log(throughput ratio) between the two measured resolutions around it.

    subject / baseline: res -> row (with "status" and "fps")."""
    import math

    points = [(r, _faster(subject.get(r), baseline.get(r))) for r in sorted(set(subject) & set(baseline))]
    points = [(r, f) for r, f in points if f is not None]
    if not points:
        return Crossover(None, None, None, "no resolution where both ran")
    if len(points) == 1:  # one resolution: no range to cross over in
        r, faster = points[0]
        return Crossover(None, None if faster else r, r if faster else None,
                         f"none: only {r} px measured ({'faster' if faster else 'slower'} there)")
    span = f"{points[0][0]}..{points[-1][0]} px"
    if not points[-1][1]:
        return Crossover(None, points[-1][0], None, f"none in {span}: slower at every resolution"
                         if not any(f for _, f in points) else
                         f"none in {span}: still slower at the largest, {points[-1][0]} px")
    i = len(points) - 1
    while i > 0 and points[i - 1][1]:
        i -= 1
    if i == 0:
        return Crossover(None, None, points[0][0], f"none in {span}: faster at every resolution (below "
                                                   f"{points[0][0]} px)")
    lo, hi = points[i - 1][0], points[i][0]
    v_lo, d_lo, v_hi, d_hi = subject[lo], baseline[lo], subject[hi], baseline[hi]
    if all(r["status"] == "ok" for r in (v_lo, d_lo, v_hi, d_hi)):
        l0 = math.log(float(v_lo["fps"]) / float(d_lo["fps"]))
        l1 = math.log(float(v_hi["fps"]) / float(d_hi["fps"]))
        x = lo + (hi - lo) * (-l0) / (l1 - l0) if l1 != l0 else (lo + hi) / 2
    else:
        x = (lo + hi) / 2  # an OOM on one side: no ratio to interpolate, take the middle
    return Crossover(x, lo, hi, f"between {lo} and {hi} px (interpolated {x:.0f} px)")


@dataclass(frozen=True)
class PairSummary:
    """One Vim line against one DeiT line: the ratios at the largest resolution both measured, and the
    throughput crossover."""
    vim: dict[str, Any]
    deit: dict[str, Any]
    res: int | None                 # largest resolution where both have a row
    speedup: float | None
    memory_saved: float | None
    note: str
    crossover: Crossover


def pair_summaries(df) -> list[PairSummary]:
    out = []
    for vk, vrows, dk, drows in line_pairs(df):
        vby, dby = by_res(vrows), by_res(drows)
        both = sorted(set(vby) & set(dby))
        if not both:
            continue
        ok = [r for r in both if _ok(vby[r]) and _ok(dby[r])]
        res = ok[-1] if ok else both[-1]
        v, d = vby[res], dby[res]
        note = "" if _ok(v) and _ok(d) else ", ".join(
            f"{name} {row['status']}" for name, row in (("Vim", v), ("DeiT", d)) if not _ok(row))
        if ok and ok[-1] != both[-1]:
            top_v, top_d = vby[both[-1]], dby[both[-1]]
            note = f"at {both[-1]} px: " + ", ".join(
                f"{name} {row['status']}" for name, row in (("Vim", top_v), ("DeiT", top_d)) if not _ok(row))
        out.append(PairSummary(vk, dk, res, speedup(v, d), memory_saved(v, d), note, find_crossover(vby, dby)))
    return out


def ratio_sentence(speed: float | None, saved: float | None) -> str:
    """"2.8x faster, 86.8% less memory" (the paper's wording), or slower / more memory."""
    parts = []
    if speed is not None:
        parts.append(f"{speed:.2f}x faster" if speed >= 1 else f"{1 / speed:.2f}x slower")
    if saved is not None:
        parts.append(f"{100 * saved:.1f}% less memory" if saved >= 0 else f"{1 - saved:.2f}x the memory")
    return ", ".join(parts) or "no ratio"


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
