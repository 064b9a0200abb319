"""`vimbench sweep`, `env` and `models` through typer's CliRunner on CPU with the tiny test models."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.results import load_results

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


def test_dry_run_previews_a_gpu_suite_anywhere():
    result = invoke(["sweep", "--suite", "foundation_h200", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "48 cases to run" in result.output and "vim_t torch 1248px b64 bf16 cuda" in result.output


def test_resume_reruns_the_recorded_sweep(tmp_path):
    out = tmp_path / "run.jsonl"
    assert invoke([*TINY, "--models", "deit_test", "--out", out]).exit_code == 0
    result = invoke(["sweep", "--resume", out])
    assert result.exit_code == 0, result.output
    assert "0 cases to run (2 already in the file)" in result.output
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
    (["--suite", "{tmp}/bad.toml"], "unknown key"),
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
