"""Provenance: which commit a run records."""
from __future__ import annotations

from vimbench.bench import env


def test_commit_override_wins_over_the_checkouts_git(monkeypatch):
    # On a GPU box the copied tree can carry a stale .git; the commit passed in by the caller is the truth.
    monkeypatch.setattr(env, "_git", lambda *args: "0" * 40 if args[0] == "rev-parse" else "")
    monkeypatch.setenv("VIMBENCH_GIT_COMMIT", "1" * 40)
    assert env.git_state() == ("1" * 40, None)
    monkeypatch.delenv("VIMBENCH_GIT_COMMIT")
    assert env.git_state() == ("0" * 40, False)


def test_no_git_and_no_override_records_nothing(monkeypatch):
    monkeypatch.setattr(env, "_git", lambda *args: None)
    monkeypatch.delenv("VIMBENCH_GIT_COMMIT", raising=False)
    assert env.git_state() == (None, None)


def test_host_probe_reports_the_median_round_in_us_per_op(monkeypatch):
    """host_us_per_op: each round's time divided by HOST_PROBE_CALLS, in us; the median over the rounds. A fake
    clock makes the five rounds last 1, 3, 2, 5 and 4 ms (no timing of this machine is asserted)."""
    import itertools
    import time

    from vimbench.bench import env

    assert env.HOST_PROBE_ROUNDS == 5
    ticks = itertools.chain.from_iterable((0.0, ms / 1e3) for ms in (1, 3, 2, 5, 4))
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    assert env.host_us_per_op() == 3e3 / env.HOST_PROBE_CALLS
