"""Training mode: the step (loss goes down), the CLI end to end on CPU with the tiny models, the row's fields and
how a backend that cannot train is recorded. No timing assertions."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import vimbench
from vimbench.bench import runner as runners
from vimbench.bench import sweep as sweeps
from vimbench.bench.train import check_gradients, make_train_step
from vimbench.cli import app
from vimbench.errors import VimbenchError
from vimbench.results import load_results, read_header

TRAIN = ["sweep", "--models", "vim_test,deit_test", "--res", "32", "--batch", "2", "--warmup", "1", "--iters", "5",
         "--device", "cpu", "--attn", "sdpa", "--backend", "torch"]


def invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name", ["vim_test", "deit_test"])
def test_adamw_steps_on_one_batch_lower_the_loss(name):
    torch.manual_seed(0)
    model = vimbench.create_model(name, img_size=32, num_classes=10, backend="torch")
    step = make_train_step(model, batch=4, res=32, dtype="fp32", device="cpu")
    assert model.training and step.labels.shape == (4,) and int(step.labels.max()) < 10
    losses = [float(step()) for _ in range(6)]
    check_gradients(model, "torch")  # every parameter took part in the backward pass
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


def test_train_mode_end_to_end_on_the_cli(tmp_path):
    out = tmp_path / "run.jsonl"
    result = invoke([*TRAIN, "--mode", "infer,train", "--out", out])
    assert result.exit_code == 0, result.output
    assert "fwd ms" in result.output and "bwd ms" in result.output and "AdamW" in result.output
    df = load_results(out)
    assert len(df) == 4 and set(df["status"]) == {"ok"}, df[["model", "mode", "error"]]
    assert sorted(zip(df["model"], df["mode"])) == [("deit_test", "infer"), ("deit_test", "train"),
                                                    ("vim_test", "infer"), ("vim_test", "train")]
    header = read_header(out)
    assert header["sweep"]["mode"] == ["infer", "train"] and "AdamW" in header["protocol"]["train"]["step"]
    for _, row in df[df["mode"] == "train"].iterrows():
        assert (row["optimizer"], row["loss"], row["activation_checkpointing"]) == ("adamw", "cross_entropy", False)
        assert row["lr"] > 0 and row["iters"] == 5 and row["warmup"] == 1
        # CPU: wall clock per step and the process's peak RSS; no allocator numbers pretend to exist
        assert row["timing_method"] == "perf_counter" and row["memory_method"].startswith("process_rss")
        assert row["cpu_peak_rss_mib"] > 0
        for name in ("peak_alloc_mib", "peak_reserved_mib", "baseline_alloc_mib", "nvml_used_mib"):
            assert pd.isna(row[name]), name
        steps, fwd, bwd = row["latency_ms_samples"], row["forward_ms_samples"], row["backward_ms_samples"]
        assert len(steps) == len(fwd) == len(bwd) == 5
        # the split is taken inside the same steps: forward + backward is the step, sample by sample
        for s, f, b in zip(steps, fwd, bwd):
            assert f > 0 and b > 0 and f + b == pytest.approx(s, rel=1e-6)
        assert row["fps"] == pytest.approx(row["batch"] / (row["latency_ms_p50"] / 1e3))
    for _, row in df[df["mode"] == "infer"].iterrows():
        assert pd.isna(row["optimizer"]) and row["forward_ms_samples"] is None


def test_a_backend_whose_backward_is_disconnected_is_an_error_and_the_sweep_goes_on(tmp_path, monkeypatch):
    build = runners.build_model

    def detached(key):
        model = build(key)
        if key.model == "vim_test":  # what a forward-only kernel does under autograd: no path back
            model.layers[0].mixer.register_forward_hook(lambda module, inputs, output: output.detach())
        return model

    monkeypatch.setattr(runners, "build_model", detached)
    config = sweeps.make_config({"models": "vim_test,deit_test", "res": 32, "batch": 2, "attn": "sdpa",
                                 "mode": "train", "warmup": 1, "iters": 5, "device": "cpu"}, cuda_available=False)
    out = tmp_path / "run.jsonl"
    results = sweeps.run_sweep(config, out=out)
    status = {r.key.model: r for r in results}
    assert status["deit_test"].status == "ok"
    vim = status["vim_test"]
    assert vim.status == "error" and vim.fps is None
    assert "no gradient" in vim.error and "layers.0.mixer" in vim.error and "cannot train" in vim.error
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert [r["status"] for r in rows] == ["error", "ok"]


def test_triton_backend_training_case_on_the_interpreter():
    """The triton backend under autograd (interpreter, tiny shape): a step that trains every parameter, or, until
    the backward kernels land, a recorded error that says so; never a silent success."""
    pytest.importorskip("triton")
    key = runners.CaseKey("vim_test", 32, 2, "fp32", "triton", None, "cpu", mode="train")
    result = runners.run_case(key, warmup=1, iters=5)
    if result.status == "ok":
        assert result.optimizer == "adamw" and len(result.backward_ms_samples) == 5
    else:
        assert result.status == "error" and result.fps is None
        assert "backward" in result.error.lower() or "grad" in result.error.lower(), result.error


def test_train_suite_lists_the_issue_points():
    config, _ = sweeps.resolve_config("train_h200", {}, cuda_available=True)
    cases = sweeps.plan_sweep(config).cases
    assert {c.mode for c in cases} == {"train"} and {c.device for c in cases} == {"cuda"}
    shape = {(c.model, c.implementation, c.attn, c.res, c.batch, c.dtype) for c in cases}
    for impl, attn in (("triton", None), ("timm", "sdpa"), ("timm", "eager")):
        model = "vim_t" if impl == "triton" else "deit_t"
        for res, batch in ((224, 128), (512, 32), (1024, 8), (1248, 8)):
            assert (model, impl, attn, res, batch, "bf16") in shape
        for res, batch in ((224, 128), (1248, 8)):
            assert (model, impl, attn, res, batch, "fp32") in shape
    assert ("vim_s", "triton", None, 1248, 8, "bf16") in shape and ("vim_b", "triton", None, 1248, 8, "bf16") in shape
    assert len(cases) == 20 and (config.warmup, config.iters) == (2, 5)
    # a resumed run rebuilds the sweep, blocks included, from the header's copy
    rebuilt = sweeps.make_config(config.to_suite(), cuda_available=True)
    assert sweeps.plan_sweep(rebuilt).cases == cases


def test_command_line_values_override_every_block(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('models = "deit_test"\nattn = "sdpa"\npoints = ["32x2"]\nmode = "train"\n'
                    '[[also]]\nmodels = "vim_test"\npoints = ["48x1"]\n')
    config, _ = sweeps.resolve_config(str(path), {"device": "cpu", "dtype": "bf16"}, cuda_available=False)
    cases = sweeps.plan_sweep(config).cases
    assert [(c.model, c.res, c.batch, c.dtype) for c in cases] == [("deit_test", 32, 2, "bf16"),
                                                                   ("vim_test", 48, 1, "bf16")]
    config, _ = sweeps.resolve_config(str(path), {"device": "cpu", "res": "64", "batch": "3"}, False)
    assert {(c.res, c.batch) for c in sweeps.plan_sweep(config).cases} == {(64, 3)}


@pytest.mark.parametrize("text, words", [
    ('models = "vim_t"\npoints = ["224x8"]\n[[also]]\niters = 7\n', "sets 'iters'"),
    ('models = "vim_t"\npoints = ["224x8"]\nalso = 3\n', "list of tables"),
    ('models = "vim_t"\npoints = ["224x8"]\nres = 224\n', "both points and res/batch"),
])
def test_bad_blocks(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(VimbenchError, match=words):
        sweeps.resolve_config(str(path), {}, cuda_available=False)
