"""Results integrity (issue 15): resume never deletes data, one writer per file, no silent protocol mixing,
write errors as one line, robust readers, and the smaller input checks."""
from __future__ import annotations

import errno
import gzip
import json
import os

import pytest
import torch
from typer.testing import CliRunner

from vimbench.bench import sweep as sweeps
from vimbench.cli import app
from vimbench.errors import VimbenchError
from vimbench.results import (SCHEMA, CaseKey, CaseResult, KernelResult, ProfileResult, ResultsWriteError, iter_rows,
                              load_results, open_run, protocol_changes, read_header, recorded_settings)

runner = CliRunner()
HEADER = {"kind": "header", "schema": SCHEMA, "run_id": "r1", "created": "2026-12-01T00:00:00", "command": "test",
          "env": {}, "settings": {"warmup": 1, "iters": 5}}
KEY = CaseKey("deit_test", 32, 2, "fp32", "timm", "sdpa", "cpu")


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def case_row(res=32, **kw):
    return {**CaseResult(key=CaseKey("deit_test", res, 2, "fp32", "timm", "sdpa", "cpu"), status="ok",
                         latency_ms_p50=1.0).to_row(), **kw}


def write_lines(path, rows, final_newline=True):
    text = "\n".join(json.dumps(r) if isinstance(r, dict) else r for r in rows)
    path.write_text(text + ("\n" if final_newline else ""))


def tiny(**kw):
    values = {"models": "deit_test", "res": "32", "batch": 2, "attn": "sdpa", "warmup": 1, "iters": 5,
              "device": "cpu", **kw}
    return sweeps.make_config(values, cuda_available=False)


# --- resume edge cases ------------------------------------------------------------------------------------------

def test_resume_keeps_a_complete_last_row_without_its_newline(tmp_path):
    path = tmp_path / "run.jsonl"
    write_lines(path, [HEADER, case_row(32), case_row(40)], final_newline=False)
    with open_run(path, "sweep", "test", {}, resume=True) as writer:
        assert {k.res for k in writer.done_keys()} == {32, 40}
        writer.append(case_row(48))
    assert [r["res"] for r in iter_rows(path, kinds=("case",))] == [32, 40, 48]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 5  # header, 2, resume, 1


def test_resume_of_a_header_only_file_without_newline_keeps_the_header(tmp_path):
    path = tmp_path / "run.jsonl"
    write_lines(path, [HEADER], final_newline=False)
    with open_run(path, "sweep", "test", {}, resume=True) as writer:
        writer.append(case_row(32))
    assert read_header(path)["run_id"] == "r1" and [r["res"] for r in iter_rows(path, kinds=("case",))] == [32]


def test_resume_cuts_only_an_unparseable_last_line(tmp_path):
    path = tmp_path / "run.jsonl"
    write_lines(path, [HEADER, case_row(32), json.dumps(case_row(40))[:50]], final_newline=False)
    with open_run(path, "sweep", "test", {}, resume=True) as writer:
        assert {k.res for k in writer.done_keys()} == {32}
    assert path.read_text().endswith("\n") and [r["res"] for r in iter_rows(path, kinds=("case",))] == [32]


def test_a_broken_header_alone_is_never_cut(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps(HEADER)[:30])
    with pytest.raises(VimbenchError, match="not a vimbench results file"):
        open_run(path, "sweep", "test", {}, resume=True)
    assert path.read_text() == json.dumps(HEADER)[:30]


def test_a_resume_killed_before_its_first_row_leaves_no_resume_line(tmp_path):
    path = tmp_path / "run.jsonl"
    write_lines(path, [HEADER, case_row(32)])
    for _ in range(3):  # three runs killed before measuring anything
        open_run(path, "sweep", "test", {}, resume=True).close()
    assert [json.loads(line)["kind"] for line in path.read_text().splitlines()] == ["header", "case"]


def test_sweep_resume_does_not_remeasure_a_row_missing_its_newline(tmp_path):
    out = tmp_path / "run.jsonl"
    sweeps.run_sweep(tiny(res="32,40"), out=out)
    out.write_text(out.read_text().rstrip("\n"))
    assert sweeps.run_sweep(tiny(res="32,40"), out=out, resume=True) == []
    assert sorted(load_results(out)["res"]) == [32, 40]


# --- one writer per file ----------------------------------------------------------------------------------------

def test_a_second_writer_on_the_same_file_is_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    with open_run(path, "sweep", "first", {}):
        with pytest.raises(VimbenchError, match="another vimbench run is writing"):
            open_run(path, "sweep", "second", {})
        with pytest.raises(VimbenchError, match="another vimbench run is writing"):
            open_run(path, "sweep", "second", {}, resume=True)
    open_run(path, "sweep", "after", {}, resume=True).close()  # free again once the first is closed


def test_cli_sweep_beside_a_running_sweep_exits_2_without_measuring(tmp_path):
    out = tmp_path / "run.jsonl"
    with open_run(out, "sweep", "running", {}, sweeps.sweep_settings(tiny(), 1, 5)):
        for args in (["--out", out], ["--resume", out]):
            result = invoke(["sweep", "--models", "deit_test", "--res", "32", "--batch", "2", "--device", "cpu",
                             "--warmup", "1", "--iters", "5", *args])
            assert result.exit_code == 2, result.output
            assert "another vimbench run is writing" in result.output and "Traceback" not in result.output
    assert [json.loads(line)["kind"] for line in out.read_text().splitlines()] == ["header"]


# --- protocol settings --------------------------------------------------------------------------------------------

def test_resume_with_other_settings_is_refused_unless_allowed(tmp_path):
    out = tmp_path / "run.jsonl"
    sweeps.run_sweep(tiny(), out=out)
    with pytest.raises(VimbenchError, match=r"other settings \(iters 5 -> 6"):
        sweeps.run_sweep(tiny(iters=6), out=out, resume=True)
    with pytest.raises(VimbenchError, match=r"sweep.res \[32\] -> \[32, 40\]"):
        sweeps.run_sweep(tiny(res="32,40"), out=out, resume=True)
    assert protocol_changes(out) == []
    rest = sweeps.run_sweep(tiny(res="32,40"), out=out, resume=True, allow_protocol_change=True)
    assert [r.key.res for r in rest] == [40]
    assert recorded_settings(out)["sweep"]["res"] == [32, 40]
    changes = protocol_changes(out)
    assert len(changes) == 1 and "line 3" in changes[0] and "sweep.res" in changes[0]


def test_committed_sweeps_resume_with_their_recorded_settings():
    """Files written before settings were checked (top-level settings, mode as a string) still resume."""
    from pathlib import Path

    from vimbench.results import _differences

    for path in (Path("results/triton-h200-2026-11-30.jsonl"), Path("results/foundation-h200-2026-11-29.jsonl")):
        config, _ = sweeps.resolve_config(None, {}, True, resume=path, plan_only=True)
        now = json.loads(json.dumps(sweeps.sweep_settings(config, config.warmup, config.iters)))
        assert _differences(recorded_settings(path), now) == [], path
        changed = sweeps.sweep_settings(config, config.warmup, config.iters + 1)
        assert _differences(recorded_settings(path), changed) == [f"iters {config.iters} -> {config.iters + 1}"]


def test_cli_resume_with_other_iters_exits_2_and_report_flags_a_mixed_file(tmp_path):
    out = tmp_path / "run.jsonl"
    base = ["sweep", "--models", "deit_test", "--batch", "2", "--device", "cpu", "--warmup", "1"]
    assert invoke([*base, "--res", "32", "--iters", "5", "--out", out]).exit_code == 0
    refused = invoke([*base, "--res", "40", "--iters", "5", "--resume", out])
    assert refused.exit_code == 2 and "--allow-protocol-change" in refused.output
    allowed = invoke([*base, "--res", "40", "--iters", "5", "--resume", out, "--allow-protocol-change"])
    assert allowed.exit_code == 0, allowed.output
    report = invoke(["report", out, "-o", tmp_path / "rep", "--no-table"])
    assert report.exit_code == 0, report.output
    assert "mixed protocols" in report.output and "sweep.res" in report.output


# --- write errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, words", [
    ("/proc/vimbench-test.jsonl", "cannot create results file /proc/vimbench-test.jsonl"),
    ("/dev/null", "not a regular file"),
    ("{tmp}", "is a folder; give a file path"),
    ("{tmp}/afile/run.jsonl", "is a file, not a folder"),
])
def test_cli_unwritable_out_is_one_line_before_any_model(tmp_path, monkeypatch, target, words):
    import vimbench.bench.runner as runner_module

    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(runner_module, "run_case", lambda *a: pytest.fail("a case ran before the output was checked"))
    result = invoke(["sweep", "--models", "deit_test", "--res", "32", "--batch", "2", "--device", "cpu",
                     "--out", target.format(tmp=tmp_path)])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert "results:" not in result.output  # never announced a file that was not created


def test_results_dir_pointing_to_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("VIMBENCH_RESULTS_DIR", str(tmp_path / "file"))
    result = invoke(["sweep", "--models", "deit_test", "--res", "32", "--batch", "2", "--device", "cpu"])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output


def test_disk_full_mid_run_names_the_file_keeps_rows_and_hints_resume(tmp_path, monkeypatch):
    out = tmp_path / "run.jsonl"
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        if fd > 2 and b'"kind": "case"' in bytes(data):
            calls["n"] += 1
            if calls["n"] == 2:
                real_write(fd, bytes(data)[:20])  # part of the row reaches the disk, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    result = invoke(["sweep", "--models", "deit_test", "--res", "32,40", "--batch", "2", "--device", "cpu",
                     "--warmup", "1", "--iters", "5", "--out", out])
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    assert f"cannot write to {out}: No space left on device" in result.output
    assert f"vimbench sweep --resume {out}" in result.output and "Traceback" not in result.output
    assert [r["res"] for r in iter_rows(out, kinds=("case",))] == [32] and out.read_text().endswith("\n")  # no half row left


def test_write_error_without_rows_has_no_resume_hint(tmp_path, monkeypatch):
    path = tmp_path / "run.jsonl"
    writer = open_run(path, "kernels", "test", {}, resume_hint="vimbench kernels ...")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(ResultsWriteError, match="Input/output error") as info:
        writer.append(KernelResult("conv1d", "vim_t", 224, 1, "bf16", "triton"))
    assert "resume" not in str(info.value)
    writer.close()


def test_report_profile_anchors_reproduce_outputs_that_are_files_or_unwritable(tmp_path):
    results = tmp_path / "run.jsonl"
    sweeps.run_sweep(tiny(), out=results)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    anchors = tmp_path / "anchors.jsonl"
    write_lines(anchors, [{"kind": "header", "gpu": "NVIDIA H200", "date": "2026-11-29"},
                          {"kind": "model", "model": "vim_t", "implementation": "official", "res": 224, "batch": 1,
                           "dtype": "fp32", "status": "ok", "fps": 100.0}])
    checks = [
        (["report", results, "-o", a_file, "--no-table"], "is a file, not a folder"),
        (["report", results, "-o", "/proc/vimbench-report", "--no-table"], "cannot create report folder"),
        (["profile", "deit_test", "--res", "32", "--device", "cpu", "-o", a_file], "is a file, not a folder"),
        (["import-anchors", anchors, "-o", tmp_path], "is a folder"),
        (["import-anchors", anchors, "-o", "/proc/x.jsonl"], "cannot create results file"),
        (["reproduce", "vim-fig1", "--results", results, "-o", a_file], "is a file, not a folder"),
    ]
    for args, words in checks:
        result = invoke(args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert "Traceback" not in result.output


# --- readers -------------------------------------------------------------------------------------------------

def test_gzip_binary_and_folder_results_are_one_line(tmp_path):
    good = tmp_path / "good.jsonl"
    write_lines(good, [HEADER, case_row(32)])
    packed = tmp_path / "packed.jsonl"
    packed.write_bytes(gzip.compress(good.read_bytes()))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(VimbenchError, match="gzip-compressed; decompress it first"):
        load_results(packed)
    with pytest.raises(VimbenchError, match="binary data"):
        read_header(binary)
    with pytest.raises(VimbenchError, match="is a folder"):
        read_header(tmp_path)
    result = invoke(["sweep", "--resume", tmp_path])
    assert result.exit_code == 2 and "is a folder; --resume takes one results file" in result.output


@pytest.mark.parametrize("row, words", [
    ({k: v for k, v in case_row().items() if k != "model"}, "without 'model'"),
    ({k: v for k, v in case_row().items() if k != "status"}, "without 'status'"),
    (case_row(res="96px"), "res is '96px', not a whole number"),
    (case_row(batch=True), "batch is True"),
    (case_row(latency_ms_p50="fast"), "latency_ms_p50 is 'fast', not a number"),
    ({**KernelResult("conv1d", "vim_t", 224, 1, "bf16", "triton").to_row(), "op": None}, "without 'op'"),
])
def test_rows_with_missing_or_mistyped_key_fields_name_the_line(tmp_path, row, words):
    path = tmp_path / "run.jsonl"
    write_lines(path, [HEADER, case_row(32), row])
    with pytest.raises(VimbenchError, match=f"run.jsonl, line 3: .*{words}"):
        load_results(path, kind=row["kind"])


def test_one_bad_file_in_a_folder_is_named_and_skip_bad_reports_the_rest(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    sweeps.run_sweep(tiny(), out=folder / "a.jsonl")
    (folder / "b.jsonl").write_bytes(gzip.compress(b"x"))
    with pytest.raises(VimbenchError, match=r"b.jsonl is not a vimbench results file.*--skip-bad"):
        load_results(folder)
    result = invoke(["report", folder, "-o", tmp_path / "rep", "--no-table"])
    assert result.exit_code == 2 and "b.jsonl" in result.output
    result = invoke(["report", folder, "-o", tmp_path / "rep", "--no-table", "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "left out" in result.output and "b.jsonl" in result.output
    assert (tmp_path / "rep" / "index.html").is_file()


def test_every_committed_results_file_passes_the_row_checks():
    from pathlib import Path

    files = sorted(Path("results").rglob("*.jsonl"))
    assert files
    for path in files:
        assert list(iter_rows(path)), path


# --- typed rows ----------------------------------------------------------------------------------------------

def test_typed_rows_write_the_committed_field_names(tmp_path):
    kernel = KernelResult("conv1d", "vim_t", 224, 64, "bf16", "triton", tokens=197, ms_p50=0.02).to_row()
    profile = ProfileResult("vim_t", 224, 1, "bf16", "triton", None, "cuda", ms={"scan": 1.5}, pct={"scan": 60.0},
                            flops_by={"scan": 1e9}, tflops_by={"scan": 0.6}).to_row()
    assert kernel["kind"] == "kernel" and kernel["ms_p50"] == 0.02 and kernel["tokens"] == 197
    assert profile["kind"] == "profile" and profile["ms_scan"] == 1.5 and profile["pct_scan"] == 60.0
    assert profile["flops_scan"] == 1e9 and profile["tflops_scan"] == 0.6 and "ms" not in profile
    path = tmp_path / "k.jsonl"
    with open_run(path, "kernels", "test", {}) as writer:
        writer.append(KernelResult("conv1d", "vim_t", 224, 64, "bf16", "triton"))
        writer.append(ProfileResult("vim_t", 224, 1, "bf16", "triton", None, "cuda"))
    assert read_header(path)["run_kind"] == "kernels"
    assert [r["kind"] for r in iter_rows(path)] == ["kernel", "profile"]
    assert len(load_results(path, kind="kernel")) == 1
    assert profile["mode"] == "infer"


def test_profile_rows_with_and_without_mode_load(tmp_path):
    step = ProfileResult("vim_t", 1248, 8, "bf16", "triton", None, "cuda", mode="train", latency_ms_p50=200.0,
                         gpu_busy_ms=120.0, gpu_idle_ms=80.0, optimizer="adamw", forward_ms_p50=60.0)
    path = tmp_path / "p.jsonl"
    with open_run(path, "profile", "test", {}) as writer:
        writer.append(step)
        # a row written before profiles had a mode (and the GPU timeline fields): a forward
        writer.append({"kind": "profile", "model": "vim_t", "res": 224, "batch": 64, "dtype": "bf16",
                       "status": "ok", "latency_ms_p50": 16.7, "profiled_ms": 4.3})
    rows = list(iter_rows(path))
    assert rows[0]["mode"] == "train" and rows[0]["gpu_idle_ms"] == 80.0 and "mode" not in rows[1]
    frame = load_results(path, kind="profile")
    assert list(frame["mode"].fillna("infer")) == ["train", "infer"]
    bad = tmp_path / "bad.jsonl"
    with open_run(bad, "profile", "test", {}) as writer:
        writer.append(dict(step.to_row(), gpu_idle_ms="80"))
    with pytest.raises(VimbenchError, match="gpu_idle_ms"):
        list(iter_rows(bad))


# --- smaller items -----------------------------------------------------------------------------------------------

def test_res_not_a_multiple_of_16_warns_and_records_the_effective_size(tmp_path):
    out = tmp_path / "run.jsonl"
    result = invoke(["sweep", "--models", "deit_test", "--res", "40", "--batch", "2", "--device", "cpu",
                     "--attn", "sdpa", "--warmup", "1", "--iters", "5", "--out", out])
    assert result.exit_code == 0, result.output
    assert "--res 40 is not a multiple of the 16 px patch: the models see 32 px (5 tokens)" in result.output
    (row,) = load_results(out).to_dict("records")
    assert row["res"] == 40 and row["res_effective_px"] == 32 and row["tokens"] == 5


def test_out_folder_hint(tmp_path):
    result = invoke(["sweep", "--models", "deit_test", "--res", "32", "--batch", "2", "--device", "cpu",
                     "--out", tmp_path])
    assert result.exit_code == 2 and f"give a file path, e.g. {tmp_path / 'run.jsonl'}" in result.output


@pytest.mark.parametrize("kwargs, words", [
    ({"img_size": "224"}, "img_size must be a whole number"),
    ({"img_size": 224.0}, "img_size must be a whole number"),
    ({"num_classes": -1}, "num_classes must be a whole number >= 0"),
    ({"num_classes": "10"}, "num_classes must be a whole number >= 0"),
])
def test_create_model_checks_its_inputs(kwargs, words):
    from vimbench import create_model

    for name in ("vim_test", "deit_test"):
        with pytest.raises(VimbenchError, match=words):
            create_model(name, **kwargs)


def test_backend_names_are_case_insensitive_everywhere(monkeypatch):
    from vimbench import create_model

    assert create_model("vim_test", img_size=32, backend="TORCH").backend == "torch"
    monkeypatch.setenv("VIMBENCH_BACKEND", "Torch")
    assert create_model("vim_test", img_size=32).backend == "torch"
    with pytest.raises(VimbenchError, match="unknown backend"):
        create_model("vim_test", img_size=32, backend="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_triton_backend_without_gpu_or_interpreter_fails_at_build(monkeypatch):
    from vimbench import create_model

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(VimbenchError, match="needs a CUDA GPU and none is visible"):
        create_model("vim_test", img_size=32, backend="triton")
    result = invoke(["profile", "vim_test", "--res", "32", "--device", "cpu", "--backend", "triton"])
    assert result.exit_code == 2 and "needs a CUDA GPU" in result.output and "Traceback" not in result.output
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert create_model("vim_test", img_size=32, backend="triton").backend == "triton"
