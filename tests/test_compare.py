"""`vimbench compare A B`: verdicts that respect the rows' noise, the summary, unmatched cases, formats, exit codes."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.report.compare import Side, compare_results, verdict
from vimbench.results import SCHEMA, CaseKey, CaseResult

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "results" / "history" / "triton-h200-2026-11-29-kernel-v1.jsonl"
NEW = REPO / "results" / "triton-h200-2026-11-30.jsonl"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["compare", *[str(a) for a in args]])


def side(p20, p50, p80, status="ok", peak=None):
    return Side(status, p20, p50, p80, peak, "x")


@pytest.mark.parametrize("a, b, expected", [
    (side(9.8, 10.0, 10.2), side(10.9, 11.0, 11.1), "slower"),    # bands apart, +10 %
    (side(9.8, 10.0, 10.2), side(8.9, 9.0, 9.1), "faster"),
    (side(9.0, 10.0, 11.5), side(10.5, 11.0, 12.0), "same"),      # +10 % but the bands overlap: noise
    (side(9.99, 10.0, 10.01), side(10.1, 10.1, 10.11), "same"),   # bands apart but +1 % < min change
    (side(None, 10.0, None), side(None, 11.0, None), "slower"),   # no bands recorded: min change alone
    (side(9.8, 10.0, 10.2), side(None, None, None, status="oom"), "status changed"),
])
def test_verdicts(a, b, expected):
    assert verdict(a, b, min_change=0.02) == expected


def write(path, rows):
    header = {"kind": "header", "schema": SCHEMA, "run_id": path.stem, "created": "2026-12-01T00:00:00",
              "command": "synthetic", "env": {}}
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return path


def row(res, p50, spread=0.01, peak=100.0, status="ok", batch=8):
    r = CaseResult(key=CaseKey("vim_t", res, batch, "bf16", "triton", None, "cuda"), status=status,
                   latency_ms_p20=p50 * (1 - spread), latency_ms_p50=p50, latency_ms_p80=p50 * (1 + spread),
                   peak_alloc_mib=peak)
    return r.to_row()


def test_unmatched_cases_newest_row_wins_and_geomean(tmp_path):
    a = write(tmp_path / "a.jsonl", [row(224, 10.0), row(512, 40.0), row(1024, 100.0)])
    b = write(tmp_path / "b.jsonl", [row(224, 99.0), row(224, 5.0, peak=50.0), row(512, 40.0), row(2048, 1.0)])
    result = compare_results([a], [b])
    by_res = {c.key.res: c for c in result.cases}
    assert by_res[224].ratio == pytest.approx(0.5) and by_res[224].verdict == "faster"   # the later 224 row
    assert by_res[224].memory_ratio == pytest.approx(0.5) and by_res[512].verdict == "same"
    assert [k.res for k in result.only_a] == [1024] and [k.res for k in result.only_b] == [2048]
    assert result.latency_geomean == pytest.approx(0.5 ** 0.5)
    assert "1 only in A, 1 only in B" in result.summary() and "1 faster, 0 slower, 1 same" in result.summary()


def test_committed_files_kernel_v1_against_2026_11_30():
    result = invoke(OLD, NEW)
    assert result.exit_code == 0, result.output
    assert "16 faster, 0 slower, 0 same" in result.output and "0 only in A, 0 only in B" in result.output
    back = invoke(NEW, OLD)
    assert back.exit_code == 1 and "0 faster, 16 slower" in back.output   # CI fails on a slowdown
    same = invoke(NEW, NEW)
    assert same.exit_code == 0 and "0 faster, 0 slower, 16 same" in same.output
    assert "geometric mean 1.000" in same.output


def test_markdown_and_csv_formats(tmp_path):
    md = invoke(OLD, NEW, "--format", "md")
    assert md.exit_code == 0 and md.output.splitlines()[2].startswith("| case | A p50 (ms) | B p50 (ms) | B/A")
    assert "| vim_t triton 1248px b64 bf16 cuda |" in md.output
    out = invoke(OLD, NEW, "--format", "csv")
    assert out.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 16 and {r["verdict"] for r in rows} == {"faster"}
    case = next(r for r in rows if r["case"] == "vim_t triton 1248px b64 bf16 cuda")
    assert float(case["B/A"]) == pytest.approx(float(case["B p50 (ms)"]) / float(case["A p50 (ms)"]))


def test_run_folders_and_bad_input(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write(a / "part1.jsonl", [row(224, 10.0)])
    write(a / "part2.jsonl", [row(512, 40.0)])
    write(b / "all.jsonl", [row(224, 10.0), row(512, 48.0)])
    result = invoke(a, b)
    assert result.exit_code == 1 and "0 faster, 1 slower, 1 same" in result.output
    assert invoke(a, b, "--format", "xml").exit_code == 2
    assert invoke(a, tmp_path / "missing.jsonl").exit_code == 2
    other = write(tmp_path / "other.jsonl", [row(224, 10.0, batch=1)])
    none = invoke(a, other)
    assert none.exit_code == 2 and "no case in common" in none.output


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1"])
def test_min_change_must_be_a_finite_non_negative_number(tmp_path, value):
    """--min-change nan passed the old `< 0` check and turned every case "same": a CI gate that never fails."""
    a = write(tmp_path / "a.jsonl", [row(224, 10.0)])
    b = write(tmp_path / "b.jsonl", [row(224, 20.0)])
    result = invoke(a, b, "--min-change", value)
    assert result.exit_code == 2 and "must be a finite number >= 0" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_every_format_says_which_memory_the_peak_is(tmp_path):
    a = write(tmp_path / "a.jsonl", [row(224, 10.0)])
    for fmt in ("table", "md"):
        flat = " ".join(invoke(a, a, "--format", fmt).output.split())
        assert "peak: the row's torch allocator peak (peak_alloc_mib, CUDA rows)" in flat, (fmt, flat)
        assert "peak RSS (cpu_peak_rss_mib, CPU rows); MiB = 2^20 bytes" in flat and "p50: median latency" in flat


def test_compare_says_when_a_and_b_ran_at_different_host_speeds(tmp_path):
    """Rows carry host_us_per_op; when A's and B's medians differ by more than HOST_DRIFT the summary says so
    (host-bound cases move with the host), otherwise, and for rows without the field, it says nothing."""
    def hosted(res, p50, host):
        r = row(res, p50)
        r["host_us_per_op"] = host
        return r

    a = write(tmp_path / "a.jsonl", [hosted(224, 10.0, 2.0), hosted(512, 40.0, 2.2)])
    slow_host = write(tmp_path / "b.jsonl", [hosted(224, 15.0, 4.0), hosted(512, 41.0, 4.4)])
    same_host = write(tmp_path / "c.jsonl", [hosted(224, 15.0, 2.1), hosted(512, 41.0, 2.0)])
    old = write(tmp_path / "d.jsonl", [row(224, 15.0), row(512, 41.0)])
    moved = compare_results([a], [slow_host]).summary()
    assert "Host speed differs: a tiny CPU torch op took 2.1 us in A, 4.2 us in B" in moved
    for other in (same_host, old):
        assert "Host speed" not in compare_results([a], [other]).summary()
