"""CPU profiles of tiny models: categories sum to 100 %, traces and figure are written, rows are stored
(trace parsing itself: tests/analysis/test_trace.py)."""
from __future__ import annotations

import json

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


@pytest.mark.parametrize("args, message", [
    (["profile", "nope", "--device", "cpu"], "unknown model"),
    (["profile", "vim_test", "--dtype", "fp8", "--device", "cpu"], "dtype"),
    (["profile", "vim_test", "--batch", "0", "--device", "cpu"], "batch"),
    (["profile", "vim_test", "--device", "cuda"], "cuda"),
])
def test_cli_bad_input_exits_2(args, message, tmp_path):
    import torch

    from vimbench.cli import app

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present, so --device cuda is valid")
    result = CliRunner().invoke(app, args + ["-o", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output.lower()
