"""Reports of results from several GPU models (a run folder whose workers ran on different GPUs): rows keep their
own host/GPU identity, figures are grouped per GPU model, and the cross-GPU figure and table compare them."""
from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.results import CaseKey, CaseResult, ResultsFile, load_results

H200, A100 = "NVIDIA H200", "NVIDIA A100-SXM4-80GB"


def _rows(gpu: str, index: int, speed: float, resolutions=(224, 512)) -> list[CaseResult]:
    rows = []
    for res in resolutions:
        for model, impl, attn, base in (("vim_t", "triton", None, 5000.0), ("deit_t", "timm", "sdpa", 9000.0)):
            fps = round(speed * base * (224 / res) ** 2, 3)
            rows.append(CaseResult(
                key=CaseKey(model, res, 64, "bf16", impl, attn, "cuda"), status="ok", fps=fps,
                latency_ms_p50=1000 * 64 / fps, peak_alloc_mib=100.0 * res / 224, timestamp="2026-12-02T01:00:00",
                hostname=f"node{index}", gpu_name=gpu, gpu_index=index, gpu_uuid=f"GPU-{index:08d}-uuid"))
    return rows


def _write(path: Path, rows: list[CaseResult], header_gpu: str) -> None:
    store = ResultsFile(path, {"run_id": "cross", "created": "2026-12-02T00:59:00", "command": "synthetic",
                               "env": {"gpu_name": header_gpu, "device": "cuda", "hostname": "login"}})
    for row in rows:
        store.append(row)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_report_of_a_run_folder_with_two_gpu_models(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    # the H200 worker also measured 1024 px, which the A100 did not reach
    _write(folder / "worker-0.jsonl", _rows(H200, 0, 2.0, (224, 512, 1024)), header_gpu=H200)
    # a file resumed on another machine: its header names the first GPU, its rows the one they ran on
    _write(folder / "worker-1.jsonl", _rows(A100, 3, 1.0), header_gpu="a stale header GPU")

    df = load_results(folder)
    assert set(df["gpu_name"]) == {H200, A100}
    a100 = df[df["gpu_name"] == A100]
    assert set(a100["gpu_index"]) == {3} and set(a100["hostname"]) == {"node3"}
    assert set(a100["gpu_uuid"]) == {"GPU-00000003-uuid"}

    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(folder), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    figures = out / "figures"
    # one resolution figure per GPU model, and the comparison
    assert (figures / "throughput_memory_vs_res-bf16-b64-nvidia-h200.png").is_file()
    assert (figures / "throughput_memory_vs_res-bf16-b64-nvidia-a100-sxm4-80gb.png").is_file()
    svg = (figures / "cross_gpu_throughput_vs_res.svg").read_text()
    assert H200 in svg and A100 in svg

    rows = _csv(out / "tables" / "cross_gpu.csv")
    ratio = f"{A100} / {H200}"      # the H200 measured more cases: it is the reference
    assert len(rows) == 6
    for row in rows:
        if row["res (px)"] == "1024":
            assert row[f"img/s {A100}"] == "" and row[ratio] == ""
        else:
            assert float(row[ratio]) == 0.5
            assert float(row[f"img/s {H200}"]) == 2 * float(row[f"img/s {A100}"])
    assert "cross_gpu_throughput_vs_res" in (out / "index.html").read_text()


def test_one_gpu_model_draws_no_comparison(tmp_path):
    path = tmp_path / "one.jsonl"
    _write(path, _rows(H200, 0, 1.0), header_gpu=H200)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(path), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    assert not list(out.rglob("cross_gpu*"))
    assert (out / "figures" / "throughput_memory_vs_res-bf16-b64.png").is_file()
