"""CPU profiles of tiny models, forwards and training steps: categories sum to 100 %, traces and figure are
written, rows are stored (trace parsing and the GPU idle time: tests/analysis/test_trace.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vimbench.analysis.trace import CATEGORIES
from vimbench.bench import profile as pf
from vimbench.results import CaseKey, iter_rows, read_header


@pytest.mark.parametrize("model, impl, attn, big", [("vim_test", "torch", None, "scan"),
                                                    ("deit_test", "timm", "eager", "gemm")])
def test_cpu_profile_case(tmp_path, model, impl, attn, big):
    key = CaseKey(model, 64, 2, "fp32", impl, attn, "cpu")
    row = pf.profile_case(key, tmp_path, warmup=1, iters=5).to_row()
    assert row["status"] == "ok"
    assert sum(row[f"pct_{c}"] for c in CATEGORIES) == pytest.approx(100, abs=1e-6)
    assert row[f"pct_{big}"] > 0  # shares depend on the machine's load: no stronger timing assertion
    assert row["flops"] > 0 and row["tflops"] > 0
    trace = json.loads(open(row["trace"]).read())
    assert trace["traceEvents"]
    if model == "vim_test":
        assert row["pct_norm"] > 0 and row["pct_conv"] > 0
    else:
        assert row["pct_attention"] > 0


def test_cli_profile_two_resolutions(tmp_path):
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["profile", "vim_test", "--res", "32,64", "--batch", "1", "--device", "cpu",
                                      "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    files = list(tmp_path.glob("profile-vim_test-*.jsonl"))
    assert len(files) == 1 and read_header(files[0])["env"]
    rows = [r for r in iter_rows(files[0]) if r["kind"] == "profile"]
    assert [r["res"] for r in rows] == [32, 64]
    assert list(tmp_path.glob("profile-vim_test-*.png")) and len(list(tmp_path.glob("trace_*.json"))) == 2


def test_cli_profile_training_step(tmp_path):
    from vimbench.analysis.flops import model_counts
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["profile", "vim_test", "--mode", "train", "--device", "cpu", "--res", "32",
                                      "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("profile-vim_test-train-*.jsonl")
    assert read_header(path)["settings"]["mode"] == "train"
    (row,) = [r for r in iter_rows(path) if r["kind"] == "profile"]
    assert row["status"] == "ok" and row["mode"] == "train" and row["res"] == 32
    assert (row["optimizer"], row["loss"], row["timing_method"]) == ("adamw", "cross_entropy", "perf_counter")
    assert row["activation_checkpointing"] is False and row["warmup"] >= 2 and row["iters"] >= 5
    assert row["latency_ms_p50"] > 0 and row["forward_ms_p50"] > 0 and row["backward_ms_p50"] > 0
    assert sum(row[f"pct_{c}"] for c in CATEGORIES) == pytest.approx(100, abs=1e-6)
    assert row["pct_optimizer"] > 0 and row["pct_conv"] > 0  # AdamW's ops in their range; the conv backward
    forward = model_counts("vim_test", 32, 1)
    assert row["flops"] == pytest.approx(3 * forward.flops) and "3 x forward" in row["flop_convention"]
    # GEMMs: forward + input and weight gradients, the patch embedding without an input gradient; no other
    # category gets a training FLOP count, and a step has no analytic bytes
    patch = next(op.flops for op in forward.ops if op.name == "patch_embed")
    assert row["flops_gemm"] == pytest.approx(3 * forward.category_flops("gemm") - patch)
    assert "bytes" not in row and "flops_scan" not in row and "flops_conv" not in row
    assert "gpu_busy_ms" not in row  # no GPU timeline on the CPU
    names = {e["name"] for e in json.loads(Path(row["trace"]).read_text())["traceEvents"]}
    assert any("Backward" in n for n in names) and "vimbench::optimizer" in names  # the backward was profiled
    assert path.with_suffix(".png").exists()
    assert "bwd+opt ms" in result.output and "optimizer %" in result.output


@pytest.mark.parametrize("mode", ["bogus", "infer,train"])
def test_cli_bad_mode_is_one_line(mode, tmp_path):
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["profile", "vim_test", "--mode", mode, "--device", "cpu", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "mode" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_cli_profile_records_the_memory_mode(tmp_path):
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["profile", "vim_test", "--res", "32", "--device", "cpu", "--vim-memory", "split",
                                      "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("profile-vim_test-*.jsonl")
    assert read_header(path)["settings"]["vim_memory"] == "split"
    (row,) = [r for r in iter_rows(path) if r["kind"] == "profile"]
    assert row["status"] == "ok" and row["vim_memory"] == "split"
    assert "mem-split" in result.output


def test_cli_profile_default_folder_is_outside_the_committed_results(tmp_path, monkeypatch):
    """Without -o a profile goes to runs/profiles (as a sweep goes to runs/), not into results/, which holds only
    the runs the project ships."""
    from vimbench.cli import app

    monkeypatch.delenv("VIMBENCH_RESULTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["profile", "deit_test", "--res", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "runs" / "profiles").glob("profile-deit_test-*.jsonl"))) == 1
    assert not (tmp_path / "results").exists()


def test_cli_interrupted_profile_keeps_its_rows_and_says_where(tmp_path, monkeypatch):
    from vimbench.cli import app

    real = pf.profile_case

    def interrupt_second(key, *args, **kwargs):
        if key.res == 48:
            raise KeyboardInterrupt
        return real(key, *args, **kwargs)

    monkeypatch.setattr(pf, "profile_case", interrupt_second)
    result = CliRunner().invoke(app, ["profile", "deit_test", "--res", "32,48", "--device", "cpu", "-o", str(tmp_path)])
    assert result.exit_code == 130, result.output
    assert f"interrupted; the resolutions profiled so far are in {tmp_path}/profile-deit_test-*.jsonl" in result.output
    (path,) = tmp_path.glob("profile-deit_test-*.jsonl")
    assert [r["res"] for r in iter_rows(path) if r["kind"] == "profile"] == [32]


def test_annotate_model_keeps_every_op():
    """The annotated ops wrap the categorized calls and keep the rest of VimOps (zgate, the dt_proj fusion flag):
    a rebuilt VimOps once dropped zgate, so a lean-gated profile ran the lean path."""
    from vimbench.models import create_model

    model = create_model("vim_test", img_size=32, backend="torch")
    before = model.ops
    pf.annotate_model(model)
    after = model.ops
    assert after.zgate is not None and after.zgate is not before.zgate
    assert (after.name, after.scan_fuses_dt_proj, after.bimamba_inner) == \
        (before.name, before.scan_fuses_dt_proj, before.bimamba_inner)
    assert all(m.ops is after for m in model.modules() if hasattr(m, "ops") and m is not model)


@pytest.mark.parametrize("args, message", [
    (["profile", "nope", "--device", "cpu"], "unknown model"),
    (["profile", "deit_t", "--device", "cpu", "--vim-memory", "lean"], "vim mixer option"),
    (["profile", "vim_test", "--device", "cpu", "--vim-memory", "split", "--mode", "train"], "inference only"),
    (["profile", "vim_test", "--device", "cpu", "--vim-memory", "lean-gated"], "--backend triton"),
    (["profile", "vim_test", "--device", "cpu", "--vim-memory", "frugal"], "vim memory mode"),
    (["profile", "vim_test", "--device", "cpu", "--vim-memory", "split,lean"], "one --vim-memory"),
    (["profile", "vim_test", "--dtype", "fp8", "--device", "cpu"], "dtype"),
    (["profile", "vim_test", "--batch", "0", "--device", "cpu"], "batch"),
    # a sweep drops these on CPU; profile ran them and labelled an fp32 run tf32
    (["profile", "vim_test", "--dtype", "tf32", "--device", "cpu"], "--dtype tf32 on cpu: tf32 is a cuda"),
    (["profile", "vim_test", "--dtype", "fp16", "--device", "cpu"], "--dtype fp16 on cpu"),
    (["profile", "vim_test", "--device", "cuda"], "cuda"),
])
def test_cli_bad_input_exits_2(args, message, tmp_path):
    import torch

    from vimbench.cli import app

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present, so --device cuda is valid")
    result = CliRunner().invoke(app, args + ["-o", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output.lower()


def test_profile_figure_shows_ms_idle_and_only_used_categories(tmp_path):
    from vimbench.report.profile_figure import figure_from_results, idle_ms, used_categories

    src = Path(__file__).resolve().parents[1] / "results" / "profiles" / \
        "profile-vim_t-triton-bf16-h200-2026-11-30.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()[1:]]
    # 224 px, bf16, batch 64: the GPU is busy 4.3 ms of a 16.7 ms forward
    at224 = next(r for r in rows if r["res"] == 224)
    assert idle_ms(at224) == pytest.approx(16.685 - 4.279, abs=0.01)
    assert "attention" not in used_categories(rows) and "scan" in used_categories(rows)
    out = figure_from_results(src, tmp_path / "p.png")
    from PIL import Image

    assert Image.open(out).size[0] > 600


def test_profile_figure_keeps_modes_apart(tmp_path):
    from vimbench.errors import VimbenchError
    from vimbench.report.profile_figure import plot_shares

    row = {"res": 224, "latency_ms_p50": 10.0, "profiled_ms": 6.0, "ms_gemm": 4.0, "ms_optimizer": 2.0,
           "model": "vim_t", "implementation": "triton", "batch": 8, "dtype": "bf16", "device": "cuda"}
    old_forward = dict(row)                      # rows written before the mode field are forwards
    step = dict(row, res=512, mode="train")
    with pytest.raises(VimbenchError, match="infer and train"):
        plot_shares([old_forward, step], tmp_path / "mixed.png")
    assert not (tmp_path / "mixed.png").exists()
    assert plot_shares([step, dict(step, res=1024)], tmp_path / "train.png").exists()


@pytest.mark.gpu
def test_gpu_training_step_profile(tmp_path):
    """On the GPU: the triton backend's backward kernels, cuBLAS GEMMs and AdamW land in their categories, and the
    step's GPU timeline is consistent (busy = union of kernels <= summed kernel time; span = busy + idle)."""
    key = CaseKey("vim_t", 224, 8, "bf16", "triton", None, "cuda", mode="train")
    row = pf.profile_case(key, tmp_path).to_row()
    assert row["status"] == "ok" and row["mode"] == "train"
    for category in ("scan", "conv", "norm", "gemm", "optimizer"):
        assert row[f"ms_{category}"] > 0, category
    # the union of the kernels' intervals is at most the sum of their durations, up to the trace's timestamp
    # rounding (the H200 run of 2026-12-03 differed by 5 ns: 9.943390625 vs 9.943386 ms)
    assert 0 < row["gpu_busy_ms"] <= row["profiled_ms"] + 1e-3
    assert row["gpu_span_ms"] == pytest.approx(row["gpu_busy_ms"] + row["gpu_idle_ms"])
    assert row["gpu_idle_ms"] >= 0
    names = {k["name"] for k in row["top_kernels"]}
    assert any("_bwd" in n for n in names)  # the backward kernels were profiled
    assert row["pct_other"] < 5, row["top_kernels"]
