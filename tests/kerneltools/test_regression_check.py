"""The timed kernel regression check: the pure comparison on synthetic timings, baseline files, CLI exit codes."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from vimbench.kerneltools import regression as rg
from vimbench.cli import kernels_checks
from vimbench.errors import VimbenchError
from vimbench.kerneltools.registry import OpShape


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


class _FakeTimer:
    """The confirmation step's timer: a fixed time per case name, and a log of the calls."""

    def __init__(self, times):
        self.times, self.calls, self.closed = times, [], False

    def __call__(self, name):
        self.calls.append(name)
        value = self.times[name]
        return value(len(self.calls)) if callable(value) else value

    def close(self):
        self.closed = True


def _fake_gpu(monkeypatch, timings, remeasured=None):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H200")
    monkeypatch.setattr(rg, "default_suite", lambda: [rg.TimedCase(n, "bimamba_scan", OpShape(1, 16, 9), "bf16")
                                                      for n in timings])
    monkeypatch.setattr(rg, "run_suite", lambda cases, repeats, progress=None: timings)
    timer = _FakeTimer(remeasured or {n: t.median_ms for n, t in timings.items()})
    monkeypatch.setattr(rg, "suite_timer", lambda cases: timer)
    return timer


def test_cli_exit_1_on_regression_0_otherwise(tmp_path, monkeypatch):
    path = tmp_path / "h200.json"
    rg.write_baseline(path, {"scan": _t("scan", 1.0, 1.0, 1.0)}, "NVIDIA H200", {}, {})
    timer = _fake_gpu(monkeypatch, {"scan": _t("scan", 1.5, 1.5, 1.5)})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 1 and "1 confirmed regression(s)" in result.output
    assert timer.calls == ["scan"] * rg.CONFIRM_ROUNDS and timer.closed
    _fake_gpu(monkeypatch, {"scan": _t("scan", 1.01, 1.0, 1.0)})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 0, result.output
    assert "first pass flagged nothing" in result.output


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
        assert rg.case_work(case).bytes > 0
    scan = next(c for c in rg.default_suite() if c.name.startswith("bimamba_scan/bf16/b64_e384_l6085"))
    # at the spec's ~1.3 ms floor, 2.6 ms is ~50 % of the floor speed
    assert 40 < rg.pct_of_floor(scan, 2.6, "NVIDIA H200") < 60
    assert rg.pct_of_floor(scan, 2.6, "Tesla T4") is None


def test_suite_keeps_the_baseline_case_names():
    """Every committed baseline's case is a case of the suite (renaming a case would orphan its timings; a case
    added since a baseline was timed is reported as "new" until `--update --only` times it there), and the folder
    holds one baseline per GPU (what `--baseline results/baselines/` needs)."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "results" / "baselines"
    found = rg.load_baseline_folder(folder)
    assert {"h100.json", "h200.json"} <= {p.name for p, _, _ in found}
    suite = {c.name for c in rg.default_suite()}
    for path, _, cases in found:
        assert set(cases) <= suite, (path.name, sorted(set(cases) - suite))
    gpus = [header["gpu"] for _, header, _ in found]
    assert len(gpus) == len(set(gpus))


def test_only_selects_cases_by_substring():
    suite = rg.default_suite()
    chosen = rg.select_cases(suite, "conv1d_silu_bidir/bf16")
    assert chosen and all(c.op == "conv1d_silu_bidir" and c.dtype == "bf16" for c in chosen)
    assert rg.select_cases(suite, "") == suite
    with pytest.raises(VimbenchError, match="matches no case"):
        rg.select_cases(suite, "nope")


def test_wired_into_vimbench_kernels(tmp_path):
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["kernels", "check", "--baseline", str(tmp_path / "none.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_update_refuses_an_unwritable_baseline_before_timing(tmp_path, monkeypatch):
    """--update checks that the baseline can be written before the suite is timed (no GPU needed to see it)."""
    def time_nothing(*args, **kwargs):
        raise AssertionError("timed before the baseline path was checked")

    monkeypatch.setattr(rg, "run_suite", time_nothing)
    (tmp_path / "file").write_text("a file, not a folder\n")
    result = CliRunner().invoke(_app(), ["check", "--update", "--baseline", str(tmp_path / "file" / "h200.json")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output


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


def test_cli_a_one_off_slow_case_is_unstable_not_a_failure(tmp_path, monkeypatch):
    """The 2026-12-01 false alarm: a 0.021 ms case measured once at 0.060 ms, normal when timed again."""
    path = tmp_path / "h200.json"
    conv, scan = "conv1d_silu_bidir/bf16/b64_e384_l197", "bimamba_scan/bf16/b64_e384_l6085"
    rg.write_baseline(path, {conv: _t(conv, 0.021, 0.021, 0.0212), scan: _t(scan, 2.55, 2.55, 2.56)},
                      "NVIDIA H200", {}, {})
    timer = _fake_gpu(monkeypatch, {conv: _t(conv, 0.060, 0.061, 0.060), scan: _t(scan, 2.55, 2.56, 2.55)},
                      remeasured={conv: 0.0211, scan: 2.55})
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 0, result.output
    assert "first pass flagged 1 case(s): 0 confirmed regression(s), 1 unstable" in result.output
    assert timer.calls == [conv] * rg.CONFIRM_ROUNDS  # only the flagged case is timed again


def test_confirmation_is_interleaved_and_uses_a_robust_statistic():
    base = {"a": _t("a", 1.0, 1.0), "b": _t("b", 1.0, 1.0), "c": _t("c", 1.0, 1.0)}
    first = rg.compare_timings(base, {"a": _t("a", 1.5, 1.5), "b": _t("b", 1.5, 1.5), "c": _t("c", 1.0, 1.0)})
    # a: slow every time (real); b: one slow outlier among normal times (noise)
    timer = _FakeTimer({"a": 1.5, "b": lambda n: 3.0 if n == 2 else 1.0})
    by = {c.case: c for c in rg.confirm_regressions(first, timer, rounds=5)}
    assert timer.calls == ["a", "b"] * 5                  # round-robin, the unflagged case never re-timed
    assert by["a"].status == "regression" and by["a"].current_ms == 1.5 and by["a"].first_ms == 1.5
    assert by["b"].status == "unstable" and by["b"].current_ms == 1.0 and len(by["b"].remeasured_ms) == 5
    assert by["c"].status == "ok" and not by["c"].remeasured_ms
    assert rg.has_regression(list(by.values()))
    # two of five re-measurements slow is not enough: the lower quartile is within the threshold
    timer = _FakeTimer({"a": lambda n: 1.5 if n in (1, 3) else 1.01, "b": 1.0})
    by = {c.case: c for c in rg.confirm_regressions(first, timer, rounds=5)}
    assert by["a"].status == "unstable" and not rg.has_regression(list(by.values()))
    with pytest.raises(VimbenchError, match="at least once"):
        rg.confirm_regressions(first, timer, rounds=0)


@pytest.mark.parametrize("kind, message", [("binary", "is binary"), ("gzip", "is binary")])
def test_unreadable_baselines_are_one_line(tmp_path, kind, message):
    import gzip

    path = tmp_path / "h200.json"
    if kind == "binary":
        path.write_bytes(bytes(range(128, 256)))
    else:
        path.write_bytes(gzip.compress(b'{"schema": "x"}'))
    with pytest.raises(VimbenchError, match=message):
        rg.load_baseline(path)
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def _write(folder, name, gpu, ms=1.0):
    rg.write_baseline(folder / name, {"a": _t("a", ms, ms)}, gpu, {}, {"repeats": 2})


def test_a_baseline_folder_gives_this_gpus_file(tmp_path):
    _write(tmp_path, "h200.json", "NVIDIA H200", 1.0)
    _write(tmp_path, "h100.json", "NVIDIA H100 80GB HBM3", 2.0)
    (tmp_path / "notes.txt").write_text("not a baseline")  # other files are ignored
    found = rg.load_baseline_folder(tmp_path)
    assert [p.name for p, _, _ in found] == ["h100.json", "h200.json"]
    path, header, cases = rg.pick_baseline(found, "NVIDIA H100 80GB HBM3", tmp_path)
    assert path.name == "h100.json" and header["gpu"] == "NVIDIA H100 80GB HBM3" and cases["a"].median_ms == 2.0
    assert rg.pick_baseline(found, "NVIDIA H200", tmp_path)[2]["a"].median_ms == 1.0
    with pytest.raises(VimbenchError, match=r"no baseline in .* measured on Tesla T4 \(it holds h100.json "
                                            r"\(NVIDIA H100 80GB HBM3\), h200.json \(NVIDIA H200\)\)"):
        rg.pick_baseline(found, "Tesla T4", tmp_path)
    _write(tmp_path, "h200-old.json", "NVIDIA H200")
    with pytest.raises(VimbenchError, match="several baselines .* h200-old.json, h200.json"):
        rg.pick_baseline(rg.load_baseline_folder(tmp_path), "NVIDIA H200", tmp_path)


@pytest.mark.parametrize("content, message", [(None, "holds no .json baseline"),
                                              ("not json", "bad.json is not valid JSON")])
def test_bad_baseline_folders_are_one_line_on_any_machine(tmp_path, content, message):
    if content is not None:
        _write(tmp_path, "good.json", "NVIDIA H200")
        (tmp_path / "bad.json").write_text(content)
    with pytest.raises(VimbenchError, match=message):
        rg.load_baseline_folder(tmp_path)
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_update_needs_a_file_not_a_folder(tmp_path):
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(tmp_path), "--update"])
    assert result.exit_code == 2 and "give its path" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_partial_update_keeps_the_other_cases_and_records_itself(tmp_path):
    path = tmp_path / "h100.json"
    rg.write_baseline(path, {"a": _t("a", 1.0, 1.0), "b": _t("b", 2.0, 2.0)}, "NVIDIA H100", {"git_commit": "old"},
                      {"repeats": 2})
    env = {"git_commit": "abc1234", "timestamp": "2026-12-07T10:00:00+00:00"}
    rg.update_baseline_cases(path, {"a": _t("a", 0.5, 0.5)}, "NVIDIA H100", env, "vimbench kernels check --only a")
    header, cases = rg.load_baseline(path)
    assert cases["a"].median_ms == 0.5 and cases["b"].median_ms == 2.0
    assert header["env"] == {"git_commit": "old"}  # the full run's environment stays
    assert header["partial_updates"] == [{"commit": "abc1234", "timestamp": "2026-12-07T10:00:00+00:00",
                                          "command": "vimbench kernels check --only a", "cases": ["a"]}]
    before = path.read_text()
    with pytest.raises(VimbenchError, match="measured on NVIDIA H100, this GPU is NVIDIA H200"):
        rg.update_baseline_cases(path, {"b": _t("b", 9.0, 9.0)}, "NVIDIA H200", env, "x")
    assert path.read_text() == before


@pytest.mark.parametrize("existing, message", [(None, "does not exist"), ("not json", "is not valid JSON"),
                                               ("good", "none is present|measured on Imaginary GPU")])
def test_partial_update_is_checked_before_anything_is_timed(tmp_path, existing, message):
    """Nothing is timed and the file is untouched: no file, a bad one, no GPU here (CI), or (on a GPU machine) a
    baseline of another GPU."""
    path = tmp_path / "h100.json"
    if existing == "good":
        _write(tmp_path, "h100.json", "Imaginary GPU")
    elif existing is not None:
        path.write_text(existing)
    before = path.read_text() if path.exists() else None
    result = CliRunner().invoke(_app(), ["check", "--baseline", str(path), "--update", "--only", "scan"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert any(m in result.output for m in message.split("|")), result.output
    assert (path.read_text() if path.exists() else None) == before
