"""Parallel sweeps on CPU workers (the same code that runs one worker per GPU): rows of every worker merged from
one run folder, a killed worker loses nothing of the others, and a resume of the folder finishes the job."""
from __future__ import annotations

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from vimbench.bench import rundir
from vimbench.bench import sweep as sweeps
from vimbench.bench.workers import make_slots
from vimbench.cli import app
from vimbench.errors import VimbenchError
from vimbench.results import iter_rows, load_results, read_header

from _tiny_sweep import TINY, case_counts, tiny


def test_cli_workers_merge_into_one_run_folder(tmp_path):
    folder = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", *TINY, "--workers", "2", "--run-dir", str(folder)])
    assert result.exit_code == 0, result.output
    files = rundir.results_files(folder)
    assert [f.name for f in files] == ["worker-0.jsonl", "worker-1.jsonl"]
    expected = set(sweeps.plan_sweep(tiny()).cases)
    counts = case_counts(folder)
    assert set(counts) == expected and set(counts.values()) == {1}     # every case once, over both files
    for path in files:                                                  # each file is a whole results file
        header = read_header(path)
        assert header["worker"] in (0, 1) and header["settings"]["sweep"]["models"] == ["vim_test", "deit_test"]
        assert header["run_id"] == rundir.load_manifest(folder).data["run_id"]
    df = load_results(folder)
    assert len(df) == 6 and set(df["status"]) == {"ok"} and set(df["hostname"].dropna()) and \
        df["gpu_uuid"].isna().all()
    assert "cpu worker 0" in result.output and "cpu worker 1" in result.output
    # the folder now holds a run: a second start is refused, a resume has nothing left to do
    again = CliRunner().invoke(app, ["sweep", *TINY, "--workers", "2", "--run-dir", str(folder)])
    assert again.exit_code == 2 and "--resume" in again.output
    done = CliRunner().invoke(app, ["sweep", "--resume", str(folder), "--workers", "1"])
    assert done.exit_code == 0 and "0 cases to run (6 already in the folder)" in done.output
    other = CliRunner().invoke(app, ["sweep", "--resume", str(folder), "--workers", "1", "--iters", "7"])
    assert other.exit_code == 2 and "iters 7 differs from the run's recorded 5" in other.output


def test_killed_worker_keeps_the_others_rows_and_resume_finishes(tmp_path):
    folder = tmp_path / "run"
    config = tiny()
    killed = []

    def progress(event):
        if event.worker == 1 and event.kind == "start" and not killed:
            os.kill(event.pid, signal.SIGKILL)   # worker 1 dies while measuring its first case
            killed.append(event.label)

    plan, outcome = sweeps.run_parallel_sweep(config, folder, make_slots("cpu", workers=2), progress=progress)
    assert outcome.died == [1] and [k.label() for k in outcome.lost] == killed and not outcome.not_run
    # worker 0 took over the queue: every other case is measured, in worker 0's file, intact
    counts = case_counts(folder)
    assert set(counts) == set(plan.cases) - set(outcome.lost) and set(counts.values()) == {1}
    rows = [r for r in iter_rows(folder / "worker-0.jsonl") if r["kind"] == "case"]
    assert len(rows) == 5 and {r["status"] for r in rows} == {"ok"}
    assert [r for r in iter_rows(folder / "worker-1.jsonl") if r["kind"] == "case"] == []

    # the resume measures only what is missing, through the CLI (the folder names its sweep)
    result = CliRunner().invoke(app, ["sweep", "--resume", str(folder), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "1 cases to run (5 already in the folder)" in result.output
    counts = case_counts(folder)
    assert set(counts) == set(plan.cases) and set(counts.values()) == {1}
    resumed = [json.loads(line) for line in (folder / "worker-0.jsonl").read_text().splitlines()]
    assert sum(1 for r in resumed if r["kind"] == "resume") == 1


def test_a_foreign_file_in_the_folder_stops_before_any_worker_starts(tmp_path):
    folder = tmp_path / "run"
    rundir.create_run_dir(folder, {"run_id": "x", "sweep": tiny().to_suite(), "shard": None})
    (folder / "worker-0.jsonl").write_text("not a results file\n")
    with pytest.raises(VimbenchError, match="worker-0.jsonl is not a vimbench results file"):
        sweeps.run_parallel_sweep(tiny(), folder, make_slots("cpu", workers=1), resume=True)


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0", "--device", "cpu"], "--gpus needs --device cuda"),
    (["--workers", "2", "--out", "x.jsonl"], "use --run-dir instead of --out"),
    (["--shard", "5/4"], "K must be between 1 and N"),
    (["--resume", "nowhere"], "cannot resume nowhere: no such file"),
    (["--resubmit-failed"], "goes with --status"),
])
def test_bad_parallel_options(args, message, tmp_path):
    result = CliRunner().invoke(app, ["sweep", *TINY, *args])
    assert result.exit_code == 2 and message in result.output.replace("\n", " "), result.output


@pytest.mark.parametrize("where, message", [
    ("file", "--run-dir {path} is a file, not a folder"),
    ("file/run", "cannot create --run-dir {path}"),
    ("used", "{path} already holds a run; continue it with --resume"),
])
def test_a_bad_run_dir_is_the_only_line_before_any_worker_starts(tmp_path, where, message):
    """The run folder is checked before the workers' progress view starts: the error is the one line on stderr
    (it came after the view's first lines)."""
    (tmp_path / "file").write_text("a file, not a folder\n")
    rundir.create_run_dir(tmp_path / "used", {"run_id": "x", "sweep": tiny().to_suite(), "shard": None})
    path = tmp_path / where
    result = CliRunner().invoke(app, ["sweep", *TINY, "--workers", "1", "--run-dir", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message.format(path=path) in lines[0], result.stderr
    assert "workers (cpu worker 0)" not in result.output
