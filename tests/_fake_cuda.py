"""Stand-ins for CUDA timing on machines without a GPU (tests of the timing paths' bookkeeping, not of speed)."""
from __future__ import annotations

import time

import torch


class _FakeEvent:
    """A stand-in for torch.cuda.Event on a machine without a GPU: records perf_counter, so elapsed_time is the
    host's time between the records (what a GPU that keeps pace with its host would show)."""

    def __init__(self, enable_timing=False):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def elapsed_time(self, end):
        return (end.at - self.at) * 1e3


def fake_cuda_timing(monkeypatch):
    """torch.cuda.Event and synchronize stubbed (monkeypatch): CUDA timing paths run on a machine without a GPU."""
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
