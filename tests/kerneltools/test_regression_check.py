"""The timed kernel regression check: the pure comparison on synthetic timings, baseline files, CLI exit codes."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from vimbench.kerneltools import regression as rg
from vimbench.cli import kernels_checks
from vimbench.errors import VimbenchError


def _t(name, *ms):
    return rg.CaseTiming(name, tuple(ms))


def test_spread_and_median():
    t = _t("a", 1.0, 1.02, 0.98, 1.01, 0.99)
    assert t.median_ms == 1.0
    assert t.spread == pytest.approx(0.04)


def test_regression_beyond_threshold_is_detected():
    base = {"scan": _t("scan", 1.0, 1.01, 0.99)}
    (c,) = rg.compare_timings(base, {"scan": _t("scan", 1.10, 1.11, 1.09)})
    assert c.status == "regression" and c.threshold == pytest.approx(0.06)   # 3 x 2% spread > 5% floor
    assert c.change == pytest.approx(0.10)
    assert rg.has_regression([c])


def test_noise_is_tolerated():
    base = {"scan": _t("scan", 1.0, 1.0, 1.0)}
    (c,) = rg.compare_timings(base, {"scan": _t("scan", 1.04, 1.04, 1.04)})
    assert c.status == "ok" and c.threshold == rg.MIN_THRESHOLD
    # a noisy case (10% spread) widens its own threshold to 30%
    (noisy,) = rg.compare_timings(base, {"scan": _t("scan", 1.15, 1.20, 1.25)})
    assert noisy.status == "ok" and noisy.threshold == pytest.approx(3 * 0.1 / 1.2)
    assert not rg.has_regression([c, noisy])


def test_improvement_new_and_missing_are_reported_not_failed():
    base = {"a": _t("a", 2.0, 2.0), "gone": _t("gone", 1.0, 1.0)}
    cur = {"a": _t("a", 1.0, 1.0), "added": _t("added", 3.0, 3.0)}
    by = {c.case: c for c in rg.compare_timings(base, cur)}
    assert by["a"].status == "improvement" and by["a"].change == pytest.approx(-0.5)
    assert by["added"].status == "new" and by["gone"].status == "missing"
    assert not rg.has_regression(list(by.values()))


def test_baseline_round_trip(tmp_path):
    path = tmp_path / "b" / "h200.json"
    timings = {"a": _t("a", 1.0, 1.1, 0.9)}
    rg.write_baseline(path, timings, "NVIDIA H200", {"torch": "x"}, {"repeats": 3})
    header, cases = rg.load_baseline(path)
    assert header["gpu"] == "NVIDIA H200" and header["schema"] == rg.BASELINE_SCHEMA
    assert cases == timings
    data = json.loads(path.read_text())
    assert data["cases"]["a"]["median_ms"] == 1.0 and data["cases"]["a"]["spread"] == pytest.approx(0.2)


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    (json.dumps({"schema": "other"}), "not a vimbench kernel baseline"),
    (json.dumps({"schema": rg.BASELINE_SCHEMA, "cases": {"a": {"repeats_ms": [0]}}}), "no positive repeats_ms"),
])
def test_bad_baselines(tmp_path, content, message):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(VimbenchError, match=message):
        rg.load_baseline(path)


def _app():
    app = typer.Typer()
    kernels_checks.register(app)
    return app


def test_cli_missing_baseline_exits_2(tmp_path):
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(tmp_path / "none.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


def test_cli_without_gpu_is_a_clear_error(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "h200.json"
    rg.write_baseline(path, {"a": _t("a", 1.0, 1.0)}, "NVIDIA H200", {}, {})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 2
    assert "needs" in result.output or "CUDA GPU" in result.output


def _fake_gpu(monkeypatch, timings):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H200")
    monkeypatch.setattr(rg, "default_suite", lambda: [rg.KernelCase(n, lambda: None) for n in timings])
    monkeypatch.setattr(rg, "run_suite", lambda cases, repeats, progress=None: timings)


def test_cli_exit_1_on_regression_0_otherwise(tmp_path, monkeypatch):
    path = tmp_path / "h200.json"
    rg.write_baseline(path, {"scan": _t("scan", 1.0, 1.0, 1.0)}, "NVIDIA H200", {}, {})
    _fake_gpu(monkeypatch, {"scan": _t("scan", 1.5, 1.5, 1.5)})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 1 and "regression" in result.output
    _fake_gpu(monkeypatch, {"scan": _t("scan", 1.01, 1.0, 1.0)})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 0, result.output


def test_cli_update_writes_baseline(tmp_path, monkeypatch):
    import vimbench.bench.env as env

    path = tmp_path / "new" / "h200.json"
    _fake_gpu(monkeypatch, {"scan": _t("scan", 1.0, 1.1, 1.0)})
    monkeypatch.setattr(env, "collect_env", lambda device="cuda": {"gpu_name": "NVIDIA H200"})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path), "--update"])
    assert result.exit_code == 0, result.output
    header, cases = rg.load_baseline(path)
    assert header["gpu"] == "NVIDIA H200" and set(cases) == {"scan"}


def test_cli_other_gpu_baseline_exits_2(tmp_path, monkeypatch):
    path = tmp_path / "a100.json"
    rg.write_baseline(path, {"scan": _t("scan", 1.0, 1.0)}, "NVIDIA A100", {}, {})
    _fake_gpu(monkeypatch, {"scan": _t("scan", 1.0, 1.0)})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 2 and "A100" in result.output


def test_suite_cases_have_roofline_floors():
    for case in rg.default_suite():
        assert rg.case_work(case.params) is not None
    scan = next(c for c in rg.default_suite() if c.name.startswith("bimamba_scan/bf16/b64_e384_l6085"))
    # at the spec's ~1.3 ms floor, 2.6 ms is ~50 % of the floor speed
    assert 40 < rg.pct_of_floor(scan.params, 2.6, "NVIDIA H200") < 60
    assert rg.pct_of_floor(scan.params, 2.6, "Tesla T4") is None


def test_wired_into_vimbench_kernels(tmp_path):
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["kernels", "check", "--baseline", str(tmp_path / "none.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_short_kernels_get_an_absolute_noise_floor():
    # A 0.1 ms case moving by 0.025 ms (25%) is within the 0.03 ms floor; a 1 ms case moving by 10% is not.
    base = {"tiny": _t("tiny", 0.1, 0.1, 0.1), "big": _t("big", 1.0, 1.0, 1.0)}
    cur = {"tiny": _t("tiny", 0.125, 0.125, 0.125), "big": _t("big", 1.1, 1.1, 1.1)}
    by = {c.case: c for c in rg.compare_timings(base, cur)}
    assert by["tiny"].status == "ok" and by["tiny"].threshold == pytest.approx(rg.MIN_ABS_MS / 0.1)
    assert by["big"].status == "regression" and by["big"].threshold == rg.MIN_THRESHOLD
    # beyond the floor, a short kernel still regresses
    (slow,) = rg.compare_timings({"tiny": base["tiny"]}, {"tiny": _t("tiny", 0.2, 0.2, 0.2)})
    assert slow.status == "regression"
