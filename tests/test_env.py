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
