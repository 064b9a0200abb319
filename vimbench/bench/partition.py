"""Splitting a sweep's cases: an estimated cost per case, `--shard K/N` (deterministic, disjoint parts that any
scheduler can run), and the order in which parallel workers take cases from their queue.

The cost is a relative estimate, not a prediction in seconds: work per forward ~ tokens x batch x model size
(embed_dim^2 x depth, proportional to the parameters of both families), times a factor per mode, plus a fixed
part per case (building the model, the untimed first call) so that tiny cases are not free. New case axes only
need an entry in AXIS_FACTORS.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Iterable, Sequence

from vimbench.errors import VimbenchError
from vimbench.results import CaseKey

# Relative cost of one case per value of an axis of CaseKey; values not listed cost 1.
# A training step is a forward and a backward (~2 forwards).
AXIS_FACTORS: dict[str, dict[object, float]] = {
    "mode": {"infer": 1.0, "train": 3.0},
}
FIXED_COST = 1e9    # the work-equivalent of building a model and its first call: about one small forward


def case_cost(key: CaseKey) -> float:
    """Relative cost of measuring a case (only comparisons between cases are meaningful)."""
    from vimbench.models.registry import get_spec, num_tokens

    spec = get_spec(key.model)
    work = float(num_tokens(spec, key.res)) * key.batch * spec.embed_dim ** 2 * spec.depth
    for axis, factors in AXIS_FACTORS.items():
        work *= factors.get(getattr(key, axis, None), 1.0)
    return FIXED_COST + work


def _canonical(key: CaseKey) -> str:
    """A total order on cases that does not depend on how the list was built."""
    return json.dumps(asdict(key), sort_keys=True, default=str)


def costliest_first(cases: Iterable[CaseKey]) -> list[CaseKey]:
    """Cases by decreasing cost (ties in a fixed order): the queue order that finishes a parallel sweep soonest,
    since the long cases start first and the short ones fill the gaps at the end."""
    return sorted(dict.fromkeys(cases), key=lambda k: (-case_cost(k), _canonical(k)))


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N) with 1 <= K <= N: the K-th of N parts."""
    hint = "use --shard K/N with 1 <= K <= N, e.g. --shard 2/4"
    k_text, slash, n_text = str(text).strip().partition("/")
    if not slash:
        raise VimbenchError(f"--shard {text!r} is not of the form K/N; {hint}")
    try:
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise VimbenchError(f"--shard {text!r}: K and N must be whole numbers; {hint}") from None
    if n < 1 or not 1 <= k <= n:
        raise VimbenchError(f"--shard {text!r}: K must be between 1 and N; {hint}")
    return k, n


def partition(cases: Sequence[CaseKey], parts: int) -> list[list[CaseKey]]:
    """Split cases into `parts` disjoint lists of similar total cost (greedy: costliest case first, each to the
    part with the least cost so far, ties to the lowest part). The result depends only on the set of cases, not
    on their order, so every shard of a sweep computes the same split on its own."""
    if parts < 1:
        raise VimbenchError(f"cannot split a sweep into {parts} parts; use at least 1")
    out: list[list[CaseKey]] = [[] for _ in range(parts)]
    loads = [0.0] * parts
    for key in costliest_first(cases):
        lightest = min(range(parts), key=lambda i: (loads[i], i))
        out[lightest].append(key)
        loads[lightest] += case_cost(key)
    return out


def shard_cases(cases: Sequence[CaseKey], k: int, n: int) -> list[CaseKey]:
    """The K-th (1-based) of N parts of the cases, in the sweep's own order."""
    if not 1 <= k <= n:
        raise VimbenchError(f"shard {k}/{n}: K must be between 1 and N")
    chosen = set(partition(cases, n)[k - 1])
    return [c for c in dict.fromkeys(cases) if c in chosen]
