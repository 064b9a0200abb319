"""Sweeps end to end on CPU with the tiny test models: rows on disk, resume, OOM and broken-context handling,
the timing and memory passes, precision flags, suites."""
from __future__ import annotations

import json

import pytest
import torch

from _fake_cuda import fake_cuda_timing
from vimbench.bench import sweep as sweeps
from vimbench.bench.grid import SweepConfig
from vimbench.bench.runner import precision_flags
from vimbench.bench.timing import percentile, time_forward
from vimbench.errors import VimbenchError
from vimbench.models.vim import VisionMamba
from vimbench.results import header_settings, load_results, read_header


def tiny(**kw) -> SweepConfig:
    values = {"models": "vim_test,deit_test", "res": "32,40", "batch": 2, "attn": "sdpa,eager", "warmup": 1,
              "iters": 5, "device": "cpu", **kw}
    return sweeps.make_config(values, cuda_available=False)


def case_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()[1:] if json.loads(line)["kind"] == "case"]


def test_sweep_writes_and_reloads(tmp_path):
    out = tmp_path / "run.jsonl"
    config = tiny()
    results = sweeps.run_sweep(config, out=out, command="test")
    # vim_test: 2 res x torch; deit_test: 2 res x {sdpa, eager}
    assert len(results) == 6 and all(r.status == "ok" for r in results), [r.error for r in results]
    header = read_header(out)
    assert header["command"] == "test" and header["env"]["torch"] == torch.__version__
    recorded = header_settings(header)
    assert recorded["sweep"]["models"] == ["vim_test", "deit_test"] and recorded["iters"] == 5
    df = load_results(out)
    assert len(df) == 6 and set(df["status"]) == {"ok"}
    assert set(df["model"]) == {"vim_test", "deit_test"} and set(df["res"]) == {32, 40}
    for _, row in df.iterrows():
        assert len(row["latency_ms_samples"]) == 5 and row["iters"] == 5
        assert row["latency_ms_p20"] <= row["latency_ms_p50"] <= row["latency_ms_p80"]
        assert row["fps"] == pytest.approx(row["batch"] / (row["latency_ms_p50"] / 1e3))
        assert row["timing_method"] == "perf_counter" and row["cpu_peak_rss_mib"] > 0
        assert row["memory_method"].startswith("process_rss") and row["params"] > 0
        assert 0 < row["host_us_per_op"] < 10_000  # the host-speed probe ran when the case began
    # 40 px is not a multiple of 16: 2 x 2 patches and the class token
    assert set(df[df["res"] == 40]["tokens"]) == {5}


def test_progress_callback_and_resume_after_interrupt(tmp_path):
    out = tmp_path / "run.jsonl"
    config = tiny()
    calls = []

    def progress(label, completed):
        calls.append((label, completed))
        if completed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweeps.run_sweep(config, out=out, progress=progress)
    assert calls[0] == ("vim_test torch 32px b2 fp32 cpu", 0)
    first = case_rows(out)
    assert len(first) == 2  # both measured cases were flushed before the interrupt

    plan = sweeps.plan_sweep(config, out, resume=True)
    assert len(plan.done) == 2 and len(plan.pending) == 4
    rest = sweeps.run_sweep(config, out=out, resume=True)
    assert [r.key for r in rest] == plan.pending
    rows = case_rows(out)
    keys = [(r["model"], r["res"], r["attn"]) for r in rows]
    assert len(rows) == 6 and len(set(keys)) == 6
    assert any(json.loads(line)["kind"] == "resume" for line in out.read_text().splitlines())
    assert sweeps.run_sweep(config, out=out, resume=True) == []  # nothing left


def test_oom_is_a_result_and_the_sweep_continues(tmp_path, monkeypatch):
    def oom(self, images):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(VisionMamba, "forward", oom)
    out = tmp_path / "run.jsonl"
    results = sweeps.run_sweep(tiny(), out=out)
    status = {(r.key.model, r.key.res, r.key.attn): r.status for r in results}
    assert {s for (m, _, _), s in status.items() if m == "vim_test"} == {"oom"}
    assert {s for (m, _, _), s in status.items() if m == "deit_test"} == {"ok"}
    oom_rows = [r for r in case_rows(out) if r["status"] == "oom"]
    assert len(oom_rows) == 2 and "out of memory" in oom_rows[0]["error"] and oom_rows[0]["batch"] == 2
    assert oom_rows[0]["fps"] is None and oom_rows[0]["params"] > 0


def test_ordinary_error_is_recorded_and_the_sweep_continues(tmp_path, monkeypatch):
    def broken(self, images):
        raise ValueError("shape mismatch in test")

    monkeypatch.setattr(VisionMamba, "forward", broken)
    results = sweeps.run_sweep(tiny(), out=tmp_path / "run.jsonl")
    assert [r.status for r in results] == ["error", "error", "ok", "ok", "ok", "ok"]
    assert results[0].error == "ValueError: shape mismatch in test"


def test_broken_context_stops_the_sweep_and_skips_the_rest(tmp_path, monkeypatch):
    def illegal(self, images):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be ...")

    out = tmp_path / "run.jsonl"
    with monkeypatch.context() as patch:
        patch.setattr(VisionMamba, "forward", illegal)
        results = sweeps.run_sweep(tiny(), out=out)
    assert [r.status for r in results] == ["error"] + ["skipped"] * 5
    assert "illegal memory access" in results[0].error and "\n" not in results[0].error
    assert all("broke the CUDA context" in r.error for r in results[1:])
    assert [r["status"] for r in case_rows(out)] == ["error"] + ["skipped"] * 5
    # skipped cases are measured by a resume; the failed one is not repeated
    rest = sweeps.run_sweep(tiny(), out=out, resume=True)
    assert len(rest) == 5 and {r.status for r in rest} == {"ok"}


@pytest.mark.parametrize("content", ["garbage\n", '{"a": 1}\n', ""])
def test_corrupt_or_foreign_results_file(tmp_path, content):
    bad = tmp_path / "foreign.jsonl"
    bad.write_text(content)
    with pytest.raises(VimbenchError, match="foreign.jsonl"):
        sweeps.run_sweep(tiny(), out=bad, resume=True)


def test_existing_file_needs_resume_and_missing_file_cannot_be_resumed(tmp_path):
    out = tmp_path / "run.jsonl"
    sweeps.run_sweep(tiny(models="deit_test", res="32", attn="sdpa"), out=out)
    with pytest.raises(VimbenchError, match="already exists; pass --resume"):
        sweeps.run_sweep(tiny(), out=out)
    with pytest.raises(VimbenchError, match="no such file"):
        sweeps.run_sweep(tiny(), out=tmp_path / "missing.jsonl", resume=True)


def test_bad_line_in_resumed_file_names_file_and_line(tmp_path):
    out = tmp_path / "run.jsonl"
    sweeps.run_sweep(tiny(models="deit_test", res="32", attn="sdpa"), out=out)
    with open(out, "a") as fh:
        fh.write("not json\n{}\n")
    with pytest.raises(VimbenchError, match=r"run.jsonl, line 3"):
        sweeps.run_sweep(tiny(), out=out, resume=True)


def test_precision_flags_are_restored():
    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = True, True
        with precision_flags("fp32"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cudnn.benchmark
        with precision_flags("tf32"):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with pytest.raises(ValueError), precision_flags("bf16"):
            raise ValueError
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1], saved[2]


def test_timing_pass_counts_calls_and_keeps_samples():
    calls = []
    timing = time_forward(lambda: calls.append(1), "cpu", warmup=2, iters=7)
    assert len(calls) == 9 and len(timing.samples_ms) == 7 and timing.method == "perf_counter"
    assert timing.p50_ms == percentile(timing.samples_ms, 50)
    with pytest.raises(VimbenchError, match="at least 5"):
        time_forward(lambda: None, "cpu", warmup=1, iters=4)
    with pytest.raises(VimbenchError, match="warm-up"):
        time_forward(lambda: None, "cpu", warmup=0, iters=5)


def test_percentile_interpolates():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 20) == pytest.approx(1.8)
    assert percentile(samples, 80) == pytest.approx(4.2)
    assert percentile([7.0], 80) == 7.0


@pytest.mark.parametrize("name", ["paper_fig1", "cpu_smoke", "foundation_h200", "extended_h200", "compile_h200",
                                  "headline_compiled_h200"])
def test_shipped_suites_expand(name):
    config, source = sweeps.resolve_config(name, {}, cuda_available=True)
    plan = sweeps.plan_sweep(config)
    assert name in source and plan.cases
    assert {c.model for c in plan.cases} >= {"vim_t", "deit_t"}


def test_paper_suite_keeps_the_papers_range_and_the_extended_suite_reaches_2048():
    paper, _ = sweeps.resolve_config("paper_fig1", {}, cuda_available=True)
    assert paper.res == (224, 512, 640, 738, 896, 1024, 1248)
    extended, _ = sweeps.resolve_config("extended_h200", {}, cuda_available=True)
    assert extended.res == (224, 384, 512, 640, 738, 896, 1024, 1248, 1536, 2048)
    cases = sweeps.plan_sweep(extended).cases
    assert {(c.model, c.implementation, c.attn) for c in cases} == {
        *((m, "triton", None) for m in ("vim_t", "vim_s", "vim_b")),
        *((m, "timm", "sdpa") for m in ("deit_t", "deit_s", "deit_b"))}
    assert {(c.dtype, c.batch) for c in cases} == {("bf16", 64)} and len(cases) == 60


def test_compile_suite_is_the_issue_11_table():
    config, _ = sweeps.resolve_config("compile_h200", {}, cuda_available=True)
    cases = sweeps.plan_sweep(config).cases
    # 2 models x 2 res x 2 batches x 4 modes
    assert len(cases) == 32 and {c.compile for c in cases} == {"none", "default", "max-autotune-no-cudagraphs",
                                                               "reduce-overhead"}


def test_headline_compiled_suite_pairs_eager_and_compiled_over_the_extended_ladder():
    config, _ = sweeps.resolve_config("headline_compiled_h200", {}, cuda_available=True)
    cases = sweeps.plan_sweep(config).cases
    assert config.res == (224, 384, 512, 640, 738, 896, 1024, 1248, 1536, 2048)
    assert len(cases) == 40 and {(c.model, c.compile) for c in cases} == {
        (m, mode) for m in ("vim_t", "deit_t") for mode in ("none", "default")}


def test_foundation_suite_is_the_agreed_sweep():
    config, _ = sweeps.resolve_config("foundation_h200", {}, cuda_available=True)
    assert config.res == (224, 384, 512, 640, 738, 896, 1024, 1248) and config.batch == (64,)
    assert config.dtypes == ("bf16", "fp32") and config.attn == ("sdpa", "eager") and config.backends == ("torch",)
    # Vim: 8 res x 2 dtypes; DeiT: 8 res x 2 dtypes x 2 attention paths
    assert len(sweeps.plan_sweep(config).cases) == 48


def test_overrides_win_over_the_suite_and_default_suite_without_gpu():
    config, source = sweeps.resolve_config("paper_fig1", {"res": "224", "batch": "4", "attn": None}, False)
    assert config.res == (224,) and config.batch == (4,) and config.attn == ("sdpa", "eager")
    assert "overridden on the command line: batch, res" in source
    config, source = sweeps.resolve_config(None, {}, cuda_available=False)
    assert "cpu_smoke" in source and "no GPU" in source and config.device == "cpu"


@pytest.mark.parametrize("text, words", [
    ('models = "vim_t"\nres = 224\nbatch = 1\nspeed = 3\n', "unknown key 'speed'"),
    ("models = [", "not valid TOML"),
    ('models = "vim_t"\nres = 224\n', "gives no batch"),
    ('models = "vim_t"\nres = 224\nbatch = 1\niters = "many"\n', "iters must be a whole number"),
])
def test_bad_suite_files(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(VimbenchError, match=words):
        sweeps.resolve_config(str(path), {}, cuda_available=False)


def test_unknown_suite_lists_known_ones():
    with pytest.raises(VimbenchError, match="unknown suite 'nope'; known suites: .*paper_fig1"):
        sweeps.find_suite("nope")


def test_resume_after_a_kill_mid_write(tmp_path):
    """A killed run can leave half a row at the end; resuming cuts it off instead of corrupting the file."""
    out = tmp_path / "run.jsonl"
    config = tiny(models="deit_test", attn="sdpa")
    sweeps.run_sweep(config, out=out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:40])  # the last case row, half written
    rest = sweeps.run_sweep(config, out=out, resume=True)
    assert len(rest) == 1 and rest[0].status == "ok"
    assert sorted(load_results(out)["res"]) == [32, 40]


def test_public_api():
    import vimbench

    assert vimbench.run_sweep is sweeps.run_sweep and vimbench.load_results is load_results


def test_cuda_timing_records_the_hosts_submission_time(monkeypatch):
    """Eager CUDA timing keeps, per call, the host's time from the call's start to its return (host_ms_samples):
    a call that keeps the host busy for 3 ms has samples of at least 3 ms, and p50 in host_ms_p50. CPU timing has
    none (its latency is host time already)."""
    import time

    fake_cuda_timing(monkeypatch)
    timing = time_forward(lambda: time.sleep(0.003), "cuda", warmup=1, iters=5)
    assert timing.method == "cuda_events" and len(timing.host_ms_samples) == 5
    assert min(timing.host_ms_samples) >= 3.0
    assert timing.host_ms_p50 == percentile(timing.host_ms_samples, 50)
    cpu = time_forward(lambda: None, "cpu", warmup=1, iters=5)
    assert cpu.host_ms_samples is None and cpu.host_ms_p50 is None


def test_host_bound_needs_the_host_busy_for_most_of_the_call():
    from vimbench.bench.timing import HOST_BOUND_FRACTION, host_bound

    assert host_bound(64.7, 64.8) and host_bound(HOST_BOUND_FRACTION * 10.0, 10.0)
    assert not host_bound(16.6, 19.3 * 1.2) and not host_bound(0.02, 39.6)  # a graph replay: host far below
    assert not host_bound(None, 10.0) and not host_bound(5.0, None) and not host_bound(float("nan"), 10.0)


def test_sweep_table_marks_host_bound_cases(tmp_path):
    """The sweep's table marks a case whose host submission took most of its p50 call "(host-bound)" and says in
    its caption what that means; a case whose GPU work set the time is not marked."""
    from vimbench.cli.sweep import _results_table
    from vimbench.results import CaseKey, CaseResult

    rows = []
    for model, host in (("vim_t", 64.5), ("deit_t", 16.6)):
        key = CaseKey(model=model, res=224, batch=128, dtype="bf16", implementation="triton", attn=None,
                      device="cuda", mode="train")
        rows.append(CaseResult(key=key, status="ok", latency_ms_p20=64.0, latency_ms_p50=65.0, latency_ms_p80=66.0,
                               fps=1969.2, host_ms_p50=host))
    config = SweepConfig(models=["vim_t", "deit_t"], res=[224], batch=[128], device="cuda", iters=10, warmup=3)
    from vimbench import render
    with render.console.capture() as captured:
        _results_table(rows, config, tmp_path / "r.jsonl")
    out = captured.get()
    lines = [line for line in out.splitlines() if "vim_t" in line or "deit_t" in line]
    assert "(host-bound)" in next(line for line in lines if "vim_t" in line)
    assert "(host-bound)" not in next(line for line in lines if "deit_t" in line)
    assert "1 case(s) host-bound" in " ".join(out.split())
