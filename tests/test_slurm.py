"""SLURM sweeps through submitit: end to end with submitit's local executor (array tasks as processes, tiny
models), and against stand-in `sbatch`/`sacct` commands: the sbatch script submitit writes carries the options
given, --status reads the scheduler's states, --resubmit-failed submits the failed shards again."""
from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

pytest.importorskip("submitit", reason="submitit is the optional extra vimbench[slurm] (in the test extra)")

from vimbench.bench import rundir, slurm  # noqa: E402
from vimbench.bench import sweep as sweeps  # noqa: E402
from vimbench.cli import app  # noqa: E402

from _tiny_sweep import TINY, case_counts, tiny  # noqa: E402


@pytest.mark.slow
def test_array_tasks_run_end_to_end_with_the_local_executor(tmp_path):
    folder = tmp_path / "run"
    config = sweeps.make_config({"models": "deit_test", "res": "32", "batch": 2, "attn": "sdpa,eager",
                                 "warmup": 1, "iters": 5, "device": "cpu"}, cuda_available=False)
    manifest, jobs = slurm.submit(config, folder, 2, slurm.SlurmOptions(time_min=10), "test", cluster="local")
    assert [job.result()["shard"] for job in jobs] == [1, 2]
    cases = sweeps.plan_sweep(config).cases
    counts = case_counts(folder)
    assert set(counts) == set(cases) and set(counts.values()) == {1}
    assert sorted(p.name for p in rundir.results_files(folder)) == ["shard-1-of-2.jsonl", "shard-2-of-2.jsonl"]
    status = slurm.run_status(folder)
    assert [(s.shard, s.state, s.done, s.total) for s in status.shards] == [(1, "finished", 1, 1),
                                                                             (2, "finished", 1, 1)]
    assert status.shards[0].job_id == jobs[0].job_id and status.shards[0].error is None

    # shard 1's rows are lost (say, its file was on a scratch disk): its task ended, so it is failed
    shard1 = folder / "shard-1-of-2.jsonl"
    shard1.write_text(shard1.read_text().splitlines()[0] + "\n")
    status = slurm.run_status(folder)
    assert [(s.state, s.done) for s in status.shards] == [("failed", 0), ("finished", 1)]
    again = slurm.resubmit_failed(folder, status)
    assert [k for k, _ in again] == [1]
    again[0][1].result()
    assert [s.state for s in slurm.run_status(folder).shards] == ["finished", "finished"]
    counts = case_counts(folder)
    assert set(counts) == set(cases) and set(counts.values()) == {1}
    assert len(rundir.load_manifest(folder).data["jobs"]["1"]) == 2


def _fake_slurm(tmp_path, monkeypatch, sacct_lines: list[str]):
    """Stand-ins for sbatch (records its calls, answers with a new job id) and sacct (prints given states)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch.calls"
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{calls}" 2>/dev/null | wc -l)\n'
        f'echo "$@" >> "{calls}"\n'
        'echo "Submitted batch job $((4242 + n))"\n')
    (bin_dir / "sacct").write_text("#!/bin/sh\ncat <<'EOF'\nJobID|State|NodeList\n" + "\n".join(sacct_lines)
                                   + "\nEOF\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")   # submitit only checks that it exists
    for tool in ("sbatch", "sacct", "srun"):
        path = bin_dir / tool
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_sbatch_script_status_and_resubmit_through_the_cli(tmp_path, monkeypatch):
    calls = _fake_slurm(tmp_path, monkeypatch, ["4242_0|COMPLETED|n1", "4242_1|RUNNING|n2", "4242_2|PENDING|None"])
    folder = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "sweep", *TINY, "--executor", "slurm", "--shards", "3", "--run-dir", str(folder), "--partition", "gpu-h200",
        "--time-limit", "90", "--gpus-per-task", "2", "--cpus-per-task", "16", "--array-parallelism", "2",
        "--sbatch-arg", "account=vision", "--sbatch-arg", "constraint=h200", "--sbatch-arg", "requeue"])
    assert result.exit_code == 0, result.output
    assert "submitted 3 array tasks (6 cases): job 4242" in result.output
    script = (folder / "slurm" / "4242_submission.sh").read_text()
    for line in ["#SBATCH --partition=gpu-h200", "#SBATCH --time=90", "#SBATCH --gpus-per-task=2",
                 "#SBATCH --cpus-per-task=16", "#SBATCH --array=0-2%2", "#SBATCH --account=vision",
                 "#SBATCH --constraint=h200", "#SBATCH --requeue", "#SBATCH --exclusive", "#SBATCH --nodes=1",
                 "#SBATCH --ntasks-per-node=1"]:
        assert line in script.splitlines(), (line, script)
    assert str(folder / "slurm") in script   # logs go to the run folder
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["jobs"] == {"1": ["4242_0"], "2": ["4242_1"], "3": ["4242_2"]}
    assert manifest["shards"] == 3 and manifest["slurm"]["partition"] == "gpu-h200"

    status = CliRunner().invoke(app, ["sweep", "--status", str(folder)])
    assert status.exit_code == 0, status.output
    states = {line.split()[1]: line.split()[3] for line in status.output.splitlines()
              if line.startswith("│ ") and "/3" in line}
    assert states == {"1/3": "failed", "2/3": "running", "3/3": "waiting"}, status.output
    assert "--resubmit-failed" in status.output

    again = CliRunner().invoke(app, ["sweep", "--status", str(folder), "--resubmit-failed"])
    assert again.exit_code == 0, again.output
    assert "resubmitted shard 1 as job 4243" in again.output
    assert len(calls.read_text().splitlines()) == 2
    assert json.loads((folder / "run.json").read_text())["jobs"]["1"] == ["4242_0", "4243"]


def test_no_exclusive_and_status_of_a_folder_that_was_not_submitted(tmp_path, monkeypatch):
    _fake_slurm(tmp_path, monkeypatch, [])
    folder = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", *TINY, "--executor", "slurm", "--shards", "2", "--no-exclusive",
                                      "--run-dir", str(folder)])
    assert result.exit_code == 0, result.output
    script = (folder / "slurm" / "4242_submission.sh").read_text()
    assert "#SBATCH --exclusive" not in script and "#SBATCH --gpus-per-task=1" in script
    local = tmp_path / "local"
    rundir.create_run_dir(local, {"run_id": "x", "sweep": tiny().to_suite(), "shard": None})
    bad = CliRunner().invoke(app, ["sweep", "--status", str(local)])
    assert bad.exit_code == 2 and "not submitted with --executor slurm" in bad.output


@pytest.mark.parametrize("args, message", [
    (["--shards", "7"], "the sweep has 6 cases"),
    (["--time-limit", "0"], "time limit"),
    (["--sbatch-arg", "account="], "NAME=VALUE"),
    (["--workers", "2"], "drop --resume/--out/--gpus/--workers/--shard"),
])
def test_bad_slurm_options(args, message, tmp_path, monkeypatch):
    _fake_slurm(tmp_path, monkeypatch, [])
    result = CliRunner().invoke(app, ["sweep", *TINY, "--executor", "slurm", "--run-dir", str(tmp_path / "r"),
                                      *args])
    assert result.exit_code == 2 and message in result.output.replace("\n", " "), result.output


def test_no_slurm_on_path_creates_no_run_folder(tmp_path, monkeypatch):
    """Without sbatch/srun the submission stops before the run folder exists (it left a run.json behind, so a
    second try with the same --run-dir said the folder already holds a run)."""
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    folder = tmp_path / "run"
    result = CliRunner().invoke(app, ["sweep", *TINY, "--executor", "slurm", "--run-dir", str(folder)])
    assert result.exit_code == 2 and "sbatch/srun are not on PATH" in result.output, result.output
    assert not folder.exists()


@pytest.mark.parametrize("shards", ["0", "-2", "7"])
def test_dry_run_refuses_the_shard_counts_a_submission_refuses(shards):
    """--dry-run previews the submission: --shards outside 1..cases is refused there too (it showed 1 shard)."""
    result = CliRunner().invoke(app, ["sweep", *TINY, "--executor", "slurm", "--shards", shards, "--dry-run"])
    assert result.exit_code == 2 and f"--shards {shards}: the sweep has 6 cases; use 1..6 shards" in \
        " ".join(result.output.split()), result.output


@pytest.mark.parametrize("done, total, ended, scheduler, state", [
    (3, 3, False, None, "finished"),
    (1, 3, True, None, "failed"),
    (1, 3, False, "PENDING", "waiting"),
    (1, 3, False, "RUNNING", "running"),
    (1, 3, False, "TIMEOUT", "failed"),
    (1, 3, False, "CANCELLED by 123", "failed"),
    (1, 3, False, "OUT_OF_MEMORY", "failed"),
    (0, 3, False, "UNKNOWN", "unknown"),
])
def test_shard_states(done, total, ended, scheduler, state):
    assert slurm._classify(done, total, ended, None, scheduler) == state


def test_a_task_that_raised_is_failed_with_its_error(tmp_path):
    from submitit.core.utils import JobPaths, cloudpickle_dump

    folder = tmp_path / "slurm"
    folder.mkdir()
    cloudpickle_dump(("error", "Traceback (most recent call last):\n  ...\nvimbench.errors.VimbenchError: shard 1/2 "
                               "of run: 3 cases are not measured\n"),
                     JobPaths(folder, job_id="77_0", task_id=0).result_pickle)
    ended, error = slurm._task_outcome(folder, "77_0")
    assert ended and error == "vimbench.errors.VimbenchError: shard 1/2 of run: 3 cases are not measured"
    cloudpickle_dump(("success", {"shard": 2}), JobPaths(folder, job_id="77_1", task_id=0).result_pickle)
    assert slurm._task_outcome(folder, "77_1") == (True, None)
    assert slurm._task_outcome(folder, "77_2") == (False, None)
