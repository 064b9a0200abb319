"""`vimbench sweep`, `env` and `models` through typer's CliRunner on CPU with the tiny test models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.results import load_results, open_run

runner = CliRunner()
TINY = ["sweep", "--models", "vim_test,deit_test", "--res", "32", "--batch", "2", "--warmup", "1", "--iters", "5",
        "--device", "cpu"]


def invoke(args):
    return runner.invoke(app, [str(a) for a in args])


def test_sweep_tiny_models(tmp_path):
    out = tmp_path / "run.jsonl"
    result = invoke([*TINY, "--out", out])
    assert result.exit_code == 0, result.output
    df = load_results(out)
    # the base suite (cpu_smoke) runs DeiT with both attention paths
    assert sorted(df["model"]) == ["deit_test", "deit_test", "vim_test"] and set(df["status"]) == {"ok"}
    assert "img/s" in result.output and "p50 ms" in result.output and str(out) in result.output
    assert "perf_counter" in result.output


def test_default_out_goes_to_results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VIMBENCH_RESULTS_DIR", str(tmp_path / "res"))
    result = invoke([*TINY, "--models", "deit_test", "--attn", "sdpa"])
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "res").glob("*.jsonl"))
    assert len(files) == 1
    header = json.loads(files[0].read_text().splitlines()[0])
    assert files[0].stem == header["run_id"] and header["command"].startswith("vimbench ")


def test_dry_run_lists_cases_and_drops_without_running(tmp_path):
    out = tmp_path / "run.jsonl"
    result = invoke([*TINY, "--dtype", "fp32,tf32", "--backend", "torch,triton", "--attn", "sdpa,eager",
                     "--out", out, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "vim_test torch 32px b2 fp32 cpu" in result.output
    assert "deit_test timm/eager 32px b2 fp32 cpu" in result.output
    assert "dtype tf32 on cpu" in result.output and "backend triton on cpu" in result.output
    assert not out.exists()


def test_model_is_an_alias_of_models(tmp_path):
    args = ["--res", "32", "--batch", "2", "--device", "cpu", "--dry-run"]
    plural = invoke(["sweep", "--models", "vim_test", *args])
    singular = invoke(["sweep", "--model", "vim_test", *args])
    assert singular.exit_code == 0, singular.output
    assert "vim_test torch 32px b2" in singular.output and "deit_test" not in singular.output
    assert singular.output == plural.output


def test_dry_run_previews_a_gpu_suite_anywhere():
    result = invoke(["sweep", "--suite", "foundation_h200", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "48 cases to run" in result.output and "vim_t torch 1248px b64 bf16 cuda" in result.output


def test_resume_reruns_the_recorded_sweep(tmp_path):
    out = tmp_path / "run.jsonl"
    assert invoke([*TINY, "--models", "deit_test", "--out", out]).exit_code == 0
    result = invoke(["sweep", "--resume", out])
    assert result.exit_code == 0, result.output
    assert "is complete: all 2 cases of its sweep are measured" in result.output
    assert len(load_results(out)) == 2


def test_interrupt_keeps_rows_and_says_how_to_resume(tmp_path, monkeypatch):
    import vimbench.bench.runner as runner_module

    real = runner_module.run_case
    seen = []

    def interrupt_second(key, warmup, iters, **options):
        seen.append(key)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(key, warmup, iters, **options)

    monkeypatch.setattr(runner_module, "run_case", interrupt_second)
    out = tmp_path / "run.jsonl"
    result = invoke([*TINY, "--out", out])
    assert result.exit_code == 130
    assert f"vimbench sweep --resume {out}" in result.output
    assert len(load_results(out)) == 1


BAD_INPUTS = [
    (["--models", "vim_t,resnet50"], "unknown model 'resnet50'"),
    (["--res", "1248..224"], "ends below its start"),
    (["--res", "12"], "smaller than the 16 px patch"),
    (["--res", "224..x"], "not a whole number"),
    (["--res", "[/x]"], "'[/x]' is not a whole number"),  # brackets are not Rich markup in an error
    (["--batch", "0"], "not a positive number"),
    (["--dtype", "int8"], "unknown dtype"),
    (["--attn", "flash"], "unknown attention"),
    (["--backend", "cuda"], "unknown backend"),
    (["--mode", "fit"], "unknown mode 'fit'; choose from infer, train"),
    (["--mode", "infer,"], "has an empty item"),
    (["--points", "32x2"], "gives both points and res/batch"),
    (["--iters", "2"], "at least 5 timed calls"),
    (["--device", "tpu"], "unknown device"),
    (["--suite", "no_such_suite"], "unknown suite"),
    (["--resume", "{tmp}/missing.jsonl"], "no such file"),
    (["--resume", "{tmp}/garbage.jsonl"], "is not a vimbench results file"),
    # it ran the default suite and appended its rows to the kernels (or profile, anchors) file
    (["--resume", "{tmp}/kernels.jsonl"], "is not a sweep's results file (its run kind is kernels)"),
    (["--resume", "{tmp}/profile.jsonl"], "is not a sweep's results file (its run kind is profile)"),
    (["--resume", "{tmp}/anchors.jsonl"], "is not a sweep's results file (its run kind is anchors)"),
    (["--suite", "{tmp}/bad.toml"], "unknown key"),
    (["--suite", "{tmp}"], "is a folder; give a .toml file or a suite name"),
    (["--out", "{tmp}/a.jsonl", "--resume", "{tmp}/garbage.jsonl"], "not both"),
    (["--compile", "fast"], "unknown compile mode 'fast'"),
    (["--compile-backend", "tvm"], "unknown compile backend"),
    (["--compile", "max-autotune-no-cudagraphs", "--compile-backend", "eager"], "needs the inductor backend"),
    (["--compile", "reduce-overhead"], "needs a CUDA device"),
]
if not torch.cuda.is_available():
    BAD_INPUTS += [(["--device", "cuda"], "no CUDA GPU"), (["--cuda-graphs"], "needs a CUDA device")]


@pytest.mark.parametrize("extra, words", BAD_INPUTS, ids=[" ".join(b[0]) for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(tmp_path, extra, words):
    (tmp_path / "garbage.jsonl").write_text("this is not json\n")
    (tmp_path / "bad.toml").write_text('models = "vim_t"\nspeed = 1\n')
    results = Path(__file__).parents[1] / "results"
    shutil.copy(results / "kernels-h200-2026-11-30.jsonl", tmp_path / "kernels.jsonl")   # rows of kind kernel
    shutil.copy(results / "anchors-official-h200-2026-11-29.jsonl", tmp_path / "anchors.jsonl")  # "imported"
    with open_run(tmp_path / "profile.jsonl", "profile", "vimbench profile", {}):       # run_kind profile
        pass
    args = ["sweep", "--models", "vim_test", "--res", "32", "--batch", "2", "--device", "cpu"]
    overrides = {extra[i]: extra[i + 1] if i + 1 < len(extra) and not extra[i + 1].startswith("--") else None
                 for i in range(len(extra)) if extra[i].startswith("--")}
    for flag, value in overrides.items():
        if flag in args:
            i = args.index(flag)
            del args[i:i + 2]
        args += [flag] if value is None else [flag, value.format(tmp=tmp_path)]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert "Traceback" not in result.output


USAGE_ERRORS = [
    (["sweep", "--iters", "abc"], "Invalid value for '--iters'"),
    (["sweep", "--no-such-option"], "No such option: --no-such-option"),
    (["no-such-command"], "No such command 'no-such-command'"),
    (["kernels", "no-such-command"], "No such command 'no-such-command'"),
    (["kernels", "check"], "Missing option '--baseline'"),
    (["kernels", "check", "--baseline", "b.json", "--repeats", "1"], "Invalid value for '--repeats'"),
    (["profile"], "Missing argument 'model'"),
    (["profile", "vim_test", "--batch", "x"], "Invalid value for '--batch'"),
    (["compare", "a.jsonl"], "Missing argument 'b'"),
]


@pytest.mark.parametrize("args, words", USAGE_ERRORS, ids=[" ".join(u[0]) for u in USAGE_ERRORS])
def test_usage_errors_typer_finds_are_one_line_and_exit_2(args, words):
    """Typer's own parsing errors follow the same rule as VimbenchError: one line, exit 2, no usage box."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert "--help" in lines[0] and "╭" not in result.output


def test_bare_vimbench_still_prints_the_help():
    result = runner.invoke(app, [])
    assert "Usage" in result.output and "sweep" in result.output and "error:" not in result.output


def test_paths_with_brackets_print_as_they_are(tmp_path):
    """Paths and labels go into notes and tables as text, not Rich markup: an --out holding "[/x]" raised a
    MarkupError (a traceback after the results file was opened; after the measurement for profile and report)."""
    out = tmp_path / "run[/x]" / "r[red].jsonl"
    result = invoke([*TINY, "--models", "deit_test", "--attn", "sdpa", "--out", out])
    assert result.exit_code == 0, result.output
    assert f"1 cases to run; results: {out}" in result.output and len(load_results(out)) == 1
    assert str(out) in "".join(result.output.split())   # the table's caption, wrapped
    report = invoke(["report", out, "-o", tmp_path / "rep[/x]"])
    assert report.exit_code == 0, report.output
    assert f"under {tmp_path / 'rep[/x]'}; open" in report.output


def test_env_prints_the_fingerprint():
    result = invoke(["env", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert torch.__version__ in result.output and "git_commit" in result.output and "timm" in result.output


def test_models_lists_params_at_a_resolution():
    result = invoke(["models", "--res", "1248"])
    assert result.exit_code == 0, result.output
    assert "8,278,504" in result.output  # Vim-Ti at 1248 px (vim_model.md)
    assert "6,085" in result.output and "vim_test" not in result.output
    assert "vim_test" in invoke(["models", "--all"]).output
    bad = invoke(["models", "--res", "224,512"])
    assert bad.exit_code == 2 and "give one" in bad.output
    off = invoke(["models", "--res", "1250"])  # off the 16 px patch: said, as the sweep says it
    assert off.exit_code == 0 and "not a multiple of the 16 px patch: the models see 1248 px" in off.output
    assert "8,278,504" in off.output and "6,085" in off.output
    assert "not a multiple" not in invoke(["models", "--res", "1248"]).output


def test_default_out_is_outside_the_committed_results(tmp_path, monkeypatch):
    monkeypatch.delenv("VIMBENCH_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    result = invoke([*TINY, "--models", "deit_test", "--attn", "sdpa"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "runs").glob("*.jsonl"))) == 1 and not (tmp_path / "results").exists()


def test_sweep_table_shows_the_spread_and_progress_prints_once(tmp_path):
    out = tmp_path / "run.jsonl"
    result = invoke([*TINY, "--models", "vim_test,deit_test", "--attn", "sdpa", "--out", out])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "spread" in flat and "(p80 - p20) / p50" in flat
    # not a terminal: one progress line per case, not two
    assert result.output.count("[1/2] vim_test torch 32px") == 1
    assert result.output.count("[2/2] deit_test timm/sdpa 32px") == 1
    # resuming a complete file says so instead of printing an empty table
    again = invoke(["sweep", "--resume", out])
    assert again.exit_code == 0, again.output
    assert "is complete" in again.output and "all 2 cases" in again.output


def test_version_and_every_help_teaches():
    from vimbench import __version__

    result = invoke(["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"vimbench {__version__}"
    for command in (["sweep"], ["models"], ["env"], ["report"], ["reproduce"], ["import-anchors"], ["profile"],
                    ["kernels"], ["kernels", "check"], ["kernels", "static"]):
        text = invoke([*command, "--help"]).output
        assert "Example" in text and "vimbench " + command[0] in text, command
    sweep_help = " ".join(invoke(["sweep", "--help"]).output.replace("│", " ").split())
    assert "[default: runs/<run_id>.jsonl" in sweep_help and "[default: the suite's]" in sweep_help


def _command_paths(command, path=()):
    """(path, click command) of every command and group under `command`, the app itself first."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _command_paths(sub, (*path, name))


def test_every_help_shows_each_example_on_its_own_line():
    """The group helps (typer.Typer(help=...)) and every command's docstring: each `vimbench ...` example is one
    line of the rendered help, not run together into a paragraph (markdown mode re-dedents the text after the
    first paragraph, so an indented block right after "Examples:" used to become plain text)."""
    import re

    import typer

    root = typer.main.get_command(app)
    seen = []
    for path, command in _command_paths(root):
        examples = [line.strip() for line in (command.help or "").splitlines()
                    if line.strip().startswith("vimbench ")]
        assert examples, f"`vimbench {' '.join(path)} --help` shows no example"
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        lines = {re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in result.output.splitlines()}
        for example in examples:
            assert example in lines, (path, example, result.output)
        seen.append(" ".join(path))
    assert {"", "kernels", "kernels static", "kernels check", "sweep", "models", "env", "compare"} <= set(seen)
    # option helps are markdown too: <run id> was taken for an HTML tag, batch*E*L for emphasis
    kernels_help = " ".join(runner.invoke(app, ["kernels", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "runs/kernels-<run_id>.jsonl" in kernels_help and "batch x E x L elements" in kernels_help


def test_models_table_is_static_and_matches_built_models():
    import subprocess
    import sys

    from vimbench.models.registry import count_params, create_model, describe

    for res in (224, 738):
        for row in describe(res, include_test=True):
            with torch.device("meta"):
                model = create_model(row["alias"], img_size=res, backend="torch")
            assert row["params"] == count_params(model), (row["alias"], res)
    # the table needs neither torch nor timm
    code = ("import sys; from typer.testing import CliRunner; from vimbench.cli import app; "
            "r = CliRunner().invoke(app, ['models']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_load_results_is_typed(tmp_path):
    out = tmp_path / "run.jsonl"
    assert invoke([*TINY, "--models", "deit_test", "--attn", "sdpa", "--out", out]).exit_code == 0
    df = load_results(out)
    import pandas as pd

    # a CPU file has no allocator numbers: still a float column, not objects
    assert df["peak_alloc_mib"].dtype == "float64" and df["peak_alloc_mib"].isna().all()
    assert df["cpu_peak_rss_mib"].dtype == "float64" and (df["cpu_peak_rss_mib"] > 0).all()
    assert str(df["res"].dtype) == "Int64" and str(df["batch"].dtype) == "Int64"
    assert isinstance(df["timestamp"].dtype, pd.DatetimeTZDtype) and isinstance(df["run_created"].dtype,
                                                                                pd.DatetimeTZDtype)
    assert (df["img_s"] == df["fps"]).all() and df["h2d"].dtype == bool
    from vimbench.errors import VimbenchError

    with pytest.raises(VimbenchError, match="no results files given"):
        load_results([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VimbenchError, match=r"no results files \(\*.jsonl\) found in .*empty"):
        load_results(tmp_path / "empty")


def test_public_api_runs_a_sweep_without_private_classes(tmp_path):
    import vimbench

    config = vimbench.SweepConfig(models=("deit_test",), res=(32,), batch=(1,), device="cpu", warmup=1, iters=5)
    plan = vimbench.plan_sweep(config)
    assert [k.model for k in plan.cases] == ["deit_test"] and isinstance(plan.cases[0], vimbench.CaseKey)
    rows = vimbench.run_sweep(config, out=tmp_path / "api.jsonl")
    assert len(rows) == 1 and isinstance(rows[0], vimbench.CaseResult) and rows[0].status == "ok"
    assert set(vimbench.__all__) >= {"create_model", "list_models", "SweepConfig", "plan_sweep", "run_sweep",
                                     "load_results", "CaseKey", "CaseResult", "__version__"}


def test_sweep_marks_cases_that_began_with_memory_of_earlier_cases(tmp_path, monkeypatch):
    """A case that starts with memory still allocated by earlier cases (a leak) is marked "carry-over" in the
    table, the caption says how much, and the row keeps the number."""
    from vimbench.bench import runner as runner_module

    real = runner_module.run_case

    def leaky_second(key, *args, **kwargs):
        result = real(key, *args, **kwargs)
        result.allocated_at_start_mib = 65.0 if key.model == "deit_test" else 0.0
        return result

    monkeypatch.setattr(runner_module, "run_case", leaky_second)
    out = tmp_path / "run.jsonl"
    result = invoke([*TINY, "--attn", "sdpa", "--out", out])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert flat.count("(carry-over)") == 1
    assert "1 case(s) began with up to 65 MiB still allocated by earlier cases" in flat
    rows = [r for r in map(json.loads, out.read_text().splitlines()) if r["kind"] == "case"]
    assert {r["model"]: r["allocated_at_start_mib"] for r in rows} == {"vim_test": 0.0, "deit_test": 65.0}


def test_sweep_caption_says_when_the_host_speed_moved(tmp_path, monkeypatch):
    """Cases measured at host speeds more than HOST_DRIFT apart get one caption sentence with the range; a
    steady host gets none."""
    from vimbench.bench import runner as runner_module

    real = runner_module.run_case

    def host(speeds):
        def run(key, *args, **kwargs):
            result = real(key, *args, **kwargs)
            result.host_us_per_op = speeds[key.model]
            return result
        return run

    monkeypatch.setattr(runner_module, "run_case", host({"vim_test": 2.0, "deit_test": 4.5}))
    moved = invoke([*TINY, "--attn", "sdpa", "--out", tmp_path / "moved.jsonl"])
    assert moved.exit_code == 0, moved.output
    assert "Host speed moved during the sweep: a tiny CPU torch op took 2.0-4.5 us" in " ".join(moved.output.split())
    monkeypatch.setattr(runner_module, "run_case", host({"vim_test": 2.0, "deit_test": 2.2}))
    steady = invoke([*TINY, "--attn", "sdpa", "--out", tmp_path / "steady.jsonl"])
    assert steady.exit_code == 0 and "Host speed moved" not in " ".join(steady.output.split())


@pytest.mark.parametrize("extra, words", [
    (["--warmup-ms", "-1"], "--warmup-ms -1.0: give a time in milliseconds >= 0"),
    (["--rep-ms", "0"], "--rep-ms 0.0: give a time in milliseconds > 0"),
    (["--rep-ms", "nan"], "--rep-ms nan: give a time in milliseconds > 0"),
    (["--max-ref-elements", "-5"], "--max-ref-elements -5: give 0"),
])
def test_kernels_bench_timing_options_are_checked_before_the_gpu(extra, words):
    """do_bench with rep 0 takes one sample; a negative --max-ref-elements skipped every reference. Refused up
    front, on any machine (before the no-GPU error)."""
    result = invoke(["kernels", *extra])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.output
