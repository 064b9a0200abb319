"""Paper claims as data: a claim set is a TOML file in vimbench/report/claims/ (see vim_fig1.toml), read into
typed dataclasses here. Judging them is report.verdicts; writing verdict.md/json is report.verdict_files.

A claim set names a subject model (Vim), a baseline (DeiT, one verdict per attention backend), the conditions
(precision, batch, the resolution that must be present), the claims and how the paper measured. Metrics:
    speedup        subject img/s / baseline img/s at `res`                      (value claim)
    memory_saved   1 - subject peak memory / baseline peak memory at `res`      (value claim, a fraction)
    crossover_res  lowest resolution from which the subject stays faster, interpolated (range claim)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vimbench.errors import VimbenchError

CLAIMS_DIR = Path(__file__).parent / "claims"
METRICS = ("speedup", "memory_saved", "crossover_res")


@dataclass(frozen=True)
class Claim:
    id: str
    metric: str                              # one of METRICS
    statement: str
    res: int | None = None                   # value claims: the resolution they are about
    value: float | None = None               # value claims: speedup (x) or memory_saved (fraction)
    range: tuple[float, float] | None = None  # range claims: crossover between these resolutions (px)


@dataclass(frozen=True)
class Side:
    model: str                    # vim_t, deit_t
    label: str                    # Vim-Ti, DeiT-Ti
    attn: tuple[str, ...] = ()    # baseline only: each attention backend judged separately


@dataclass(frozen=True)
class Conditions:
    dtype: str
    batch: int
    required_res: int             # must be present, with at least one lower resolution
    resolutions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProtocolAspect:
    aspect: str
    paper: str
    ours: str                     # the fact vimbench derives from rows and headers (see verdicts.FACTS)


@dataclass(frozen=True)
class ClaimSet:
    id: str
    title: str
    source: str
    suite: str | None             # what `vimbench reproduce --run` measures
    tolerance: float              # a value claim is reproduced within this relative distance
    subject: Side
    baseline: Side
    conditions: Conditions
    claims: tuple[Claim, ...]
    protocol: tuple[ProtocolAspect, ...]
    path: Path


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise VimbenchError("reading claim files on Python 3.10 needs the tomli package: pip install tomli") \
                from None
    return tomllib


def available_claim_sets() -> list[str]:
    return sorted(p.stem.replace("_", "-") for p in CLAIMS_DIR.glob("*.toml"))


def _claim(raw: dict, path: Path, default_res: int) -> Claim:
    metric = raw.get("metric")
    if metric not in METRICS:
        raise VimbenchError(f"{path}: claim {raw.get('id')!r} has metric {metric!r}; known: {', '.join(METRICS)}")
    if metric == "crossover_res":
        lo, hi = (float(x) for x in raw["range"])
        return Claim(raw["id"], metric, raw.get("statement", raw["id"]), range=(lo, hi))
    return Claim(raw["id"], metric, raw.get("statement", raw["id"]), res=int(raw.get("res", default_res)),
                 value=float(raw["value"]))


def load_claim_set(name: str | Path) -> ClaimSet:
    """A claim set by id (vim-fig1) or by path to a TOML file."""
    path = Path(name)
    if path.suffix == ".toml" and not path.is_file():
        raise VimbenchError(f"claims file {path} does not exist (or is not a file); known claim sets: "
                            f"{', '.join(available_claim_sets())}")
    if path.suffix != ".toml":
        path = CLAIMS_DIR / f"{str(name).strip().lower().replace('-', '_')}.toml"
    if not path.exists():
        raise VimbenchError(f"unknown claim set {str(name)!r}; known: {', '.join(available_claim_sets())} "
                            "(or give the path of a claims .toml file)")
    tomllib = _toml()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise VimbenchError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError:
        raise VimbenchError(f"{path}: not valid TOML (not UTF-8 text)") from None
    try:
        cond = raw["conditions"]
        conditions = Conditions(str(cond["dtype"]), int(cond["batch"]), int(cond["required_res"]),
                                tuple(int(r) for r in cond.get("resolutions", ())))
        sub, base = raw["subject"], raw["baseline"]
        return ClaimSet(
            id=raw["id"], title=raw.get("title", raw["id"]), source=raw.get("source", ""), suite=raw.get("suite"),
            tolerance=float(raw.get("tolerance", 0.15)),
            subject=Side(sub["model"], sub.get("label", sub["model"])),
            baseline=Side(base["model"], base.get("label", base["model"]), tuple(base.get("attn") or ())),
            conditions=conditions,
            claims=tuple(_claim(c, path, conditions.required_res) for c in raw["claims"]),
            protocol=tuple(ProtocolAspect(p.get("aspect", "?"), p.get("paper", "?"), p.get("ours", ""))
                           for p in raw.get("protocol", [])),
            path=path)
    except KeyError as exc:
        raise VimbenchError(f"{path}: the claim set lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise VimbenchError(f"{path}: a value has the wrong type ({exc}); compare with "
                            f"{CLAIMS_DIR / 'vim_fig1.toml'}") from None
