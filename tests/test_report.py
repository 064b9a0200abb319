"""`vimbench report` and the anchors import, from synthetic results rows (and the committed anchors file).

The HTML page is opened in headless Chromium (Debian package `chromium`); that test is skipped, with the reason,
only where no Chromium is installed."""
from __future__ import annotations

import csv
import html.parser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.results import CaseKey, CaseResult, ResultsFile, load_results

REPO = Path(__file__).resolve().parents[1]
ANCHORS = REPO / "results" / "anchors-official-h200-2026-11-29.jsonl"
GPU = "Test GPU 80GB"
RUN_ID = "synthetic-run-1"
RESOLUTIONS = (224, 512, 1024, 1248)


def vim_fps(res: int, batch: int) -> float:
    return round(3000.0 * (224 / res) ** 1.2 * (1 + batch / 640), 3)


def deit_fps(res: int, batch: int, attn: str) -> float:
    return round((9000.0 if attn == "sdpa" else 8000.0) * (224 / res) ** 2.2 * (1 + batch / 640), 3)


def peak_mib(model: str, attn: str | None, res: int, batch: int) -> float:
    tokens = (res // 16) ** 2
    if model.startswith("vim"):
        return round(0.02 * tokens * batch, 2)
    return round((0.01 * tokens + (1e-5 * tokens ** 2 if attn == "eager" else 0)) * batch, 2)


def synthetic_cases(oom: bool = True) -> list[CaseResult]:
    """Vim-Ti (triton) and DeiT-Ti (sdpa, eager) at four resolutions, batch 8 and 64, fp32; DeiT eager OOMs at
    1248 px batch 64."""
    cases = []
    for batch in (8, 64):
        for res in RESOLUTIONS:
            for model, impl, attn in (("vim_t", "triton", None), ("deit_t", "timm", "sdpa"),
                                      ("deit_t", "timm", "eager")):
                key = CaseKey(model=model, res=res, batch=batch, dtype="fp32", implementation=impl, attn=attn,
                              device="cuda")
                if oom and attn == "eager" and res == 1248 and batch == 64:
                    cases.append(CaseResult(key=key, status="oom", error="CUDA out of memory"))
                    continue
                fps = vim_fps(res, batch) if attn is None else deit_fps(res, batch, attn)
                p50 = round(1000 * batch / fps, 4)
                cases.append(CaseResult(key=key, status="ok", params=7_000_000, tokens=(res // 16) ** 2 + 1,
                                        timing_method="cuda_events", warmup=3, iters=10,
                                        latency_ms_p20=0.97 * p50, latency_ms_p50=p50, latency_ms_p80=1.05 * p50,
                                        fps=fps,
                                        memory_method="torch_allocator+nvml",
                                        peak_alloc_mib=peak_mib(model, attn, res, batch),
                                        timestamp="2026-11-30T10:00:00"))
    return cases


def write_results(path: Path, cases: list[CaseResult], run_id: str = RUN_ID, gpu: str = GPU) -> Path:
    store = ResultsFile(path, {"run_id": run_id, "created": "2026-11-30T09:59:00", "command": "synthetic",
                               "env": {"gpu_name": gpu, "gpu_count": 1, "torch": "2.11.0", "timm": "1.0.29",
                                       "device": "cuda", "tf32_matmul": False, "cudnn_benchmark": False}})
    for case in cases:
        store.append(case)
    return path


@pytest.fixture
def synthetic(tmp_path) -> Path:
    return write_results(tmp_path / "synthetic.jsonl", synthetic_cases())


@pytest.fixture
def report_dir(synthetic, tmp_path) -> Path:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(synthetic), "-o", str(out)])
    assert result.exit_code == 0, result.output
    # The terminal gets the short summary (ratios and crossover per pair), not every case.
    assert "Vim vs DeiT, fp32, batch 64" in result.output and "Measured cases" not in result.output
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


FIGURES = ("headline-vim_t-vs-deit_t-fp32-b64", "headline-vim_t-vs-deit_t-fp32-b8", "throughput_memory_vs_res-fp32-b64",
           "throughput_memory_vs_res-fp32-b8", "throughput_vs_batch-1248px", "accuracy_vs_throughput")


def test_report_writes_every_file(report_dir):
    expected = [report_dir / "index.html"]
    expected += [report_dir / "figures" / f"{name}.{ext}" for name in FIGURES for ext in ("png", "svg")]
    expected += [report_dir / "tables" / f"{name}.{ext}" for name in ("summary", "results", "ratios")
                 for ext in ("md", "csv", "tex")]
    for path in expected:
        assert path.is_file() and path.stat().st_size > 0, path
    assert sorted(p.name for p in (report_dir / "figures").iterdir()) == sorted(
        f"{n}.{e}" for n in FIGURES for e in ("png", "svg"))
    tex = (report_dir / "tables" / "results.tex").read_text()
    assert "\\begin{longtable}" in tex and "vim\\_t" in tex
    md = (report_dir / "tables" / "results.md").read_text()
    assert "| vim_t | triton | - | none | fp32 | 64 | 512 |" in md


def test_results_csv_holds_the_measured_numbers(report_dir):
    rows = read_csv(report_dir / "tables" / "results.csv")
    assert len(rows) == len(synthetic_cases())
    by_key = {(r["model"], r["attn"], int(r["batch"]), int(r["res (px)"])): r for r in rows}
    for batch in (8, 64):
        for res in RESOLUTIONS:
            vim = by_key[("vim_t", "", batch, res)]
            assert float(vim["throughput (img/s)"]) == pytest.approx(vim_fps(res, batch))
            assert float(vim["peak alloc (MiB)"]) == pytest.approx(peak_mib("vim_t", None, res, batch))
            assert vim["gpu"] == GPU and vim["run_id"] == RUN_ID and vim["status"] == "ok"
            sdpa = by_key[("deit_t", "sdpa", batch, res)]
            assert float(sdpa["throughput (img/s)"]) == pytest.approx(deit_fps(res, batch, "sdpa"))
    oom = by_key[("deit_t", "eager", 64, 1248)]
    assert oom["status"] == "oom" and oom["throughput (img/s)"] == "" and oom["peak alloc (MiB)"] == ""


def test_ratios_csv_pairs_vim_with_each_deit_variant(report_dir):
    rows = read_csv(report_dir / "tables" / "ratios.csv")
    by_key = {(r["deit"], int(r["batch"]), int(r["res (px)"])): r for r in rows}
    assert {r["vim"] for r in rows} == {"vim_t triton"}
    assert {r["deit"] for r in rows} == {"deit_t timm/sdpa", "deit_t timm/eager"}
    r = by_key[("deit_t timm/eager", 64, 1024)]
    assert float(r["speed-up (x)"]) == pytest.approx(vim_fps(1024, 64) / deit_fps(1024, 64, "eager"))
    saved = 1 - peak_mib("vim_t", None, 1024, 64) / peak_mib("deit_t", "eager", 1024, 64)
    assert float(r["memory saved (%)"]) == pytest.approx(100 * saved)
    oom = by_key[("deit_t timm/eager", 64, 1248)]
    assert oom["speed-up (x)"] == "" and "DeiT oom" in oom["note"]


def test_figures_carry_provenance(report_dir):
    from PIL import Image

    for name in FIGURES:
        png = Image.open(report_dir / "figures" / f"{name}.png")
        assert png.size[0] > 300 and png.size[1] > 300
        desc = png.info["Description"]
        for needle in (GPU, "fp32", RUN_ID, "2026-11-30", "batch: "):
            assert needle in desc, (name, needle, desc)
        assert png.info["Title"]
        svg = (report_dir / "figures" / f"{name}.svg").read_text()
        title = svg[svg.index("<title>") + 7: svg.index("</title>")]
        desc_svg = svg[svg.index("<desc>") + 6: svg.index("</desc>")]
        assert title == png.info["Title"]
        assert GPU in desc_svg and RUN_ID in desc_svg and "2026-11-30" in desc_svg
    b64 = Image.open(report_dir / "figures" / "throughput_memory_vs_res-fp32-b64.png").info["Description"]
    assert "batch: 64" in b64 and "out of memory" in b64


def test_report_filters_and_bad_input(synthetic, tmp_path):
    runner = CliRunner()
    out = tmp_path / "only64"
    result = runner.invoke(app, ["report", str(synthetic), "-o", str(out), "--batch", "64", "--models",
                                 "vim_t,deit_t", "--group-by", "none", "--no-table"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "tables" / "results.csv")
    assert {r["batch"] for r in rows} == {"64"} and len(rows) == 12
    assert (out / "figures" / "throughput_memory_vs_res.png").is_file()
    assert not list((out / "figures").glob("throughput_vs_batch*"))   # one batch size: no batch figure

    for args, needle in (([str(synthetic), "--dtype", "bf16"], "no case rows are left"),
                         ([str(synthetic), "--group-by", "colour"], "cannot group by colour"),
                         ([str(tmp_path / "missing.jsonl")], "does not exist"),
                         ([str(synthetic), "--batch", "sixty"], "integers")):
        result = runner.invoke(app, ["report", *args, "-o", str(tmp_path / "bad")])
        assert result.exit_code == 2, result.output
        assert needle in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------- in a browser
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _RenderCheck(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.check: dict[str, str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") == "render-check":
            self.check = {k: v or "" for k, v in attrs.items()}

    def handle_data(self, data):
        self.text.append(data)


def test_html_renders_in_headless_chromium(report_dir, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`): the HTML report was not opened in a "
                    "browser")
    page = report_dir / "index.html"
    text = page.read_text()
    assert 'src="http' not in text and "<link" not in text   # self-contained: nothing fetched
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1024",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = _RenderCheck()
    parser.feed(proc.stdout)
    check = parser.check
    assert check.get("data-status") == "loaded", (check, proc.stderr[-2000:])
    assert int(check["data-images"]) == len(FIGURES)
    assert int(check["data-images-loaded"]) == len(FIGURES)
    for size in check["data-sizes"].split():
        natural, shown = size.split("@")
        assert all(int(n) > 100 for n in natural.split("x")), size
        assert all(int(n) > 100 for n in shown.split("x")), size
    assert int(check["data-tables"]) == 3
    n_ratios = len(read_csv(report_dir / "tables" / "ratios.csv"))
    n_summary = len(read_csv(report_dir / "tables" / "summary.csv"))
    assert int(check["data-table-rows"]) == len(synthetic_cases()) + n_ratios + n_summary
    dom_text = " ".join(parser.text)
    assert GPU in dom_text and RUN_ID in dom_text and "env.tf32_matmul" in dom_text


# ------------------------------------------------------------------------------------------- anchors
def test_committed_anchors_file_loads_with_known_numbers():
    df = load_results(ANCHORS)
    row = df[(df.model == "deit_t") & (df.attn == "eager") & (df.dtype == "fp32") & (df.res == 1248)
             & (df.batch == 64)]
    assert len(row) == 1
    assert row.iloc[0].fps == pytest.approx(56.0)
    assert row.iloc[0].peak_alloc_mib == pytest.approx(56.092 * 1024)
    assert row.iloc[0].implementation == "timm" and row.iloc[0].gpu_name == "NVIDIA H200"
    assert set(df[df.model.str.startswith("vim")].implementation) == {"official"}
    assert df[df.model.str.startswith("vim")].attn.isna().all()
    assert (df.status == "oom").sum() == 1
    header = json.loads(ANCHORS.read_text().splitlines()[0])
    assert header["imported"] is True and header["env"]["torch"] == "2.11.0+cu130"
    assert "CUDA events" in header["protocol"]


def test_import_anchors_round_trip(tmp_path):
    src = tmp_path / "anchors.jsonl"
    lines = [
        {"kind": "header", "gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "timm": "1.0.29", "date": "2026-11-29",
         "vim_impl": "official", "deit_impl": "timm", "protocol": "3 warm-up, 8 timed calls, median"},
        {"kind": "model", "model": "deit_t", "attn": "eager", "implementation": "timm", "res": 1248, "tokens": 6085,
         "batch": 64, "dtype": "fp32", "params": 6847912, "status": "ok", "fps": 56.0, "latency_ms_p50": 1143.871,
         "peak_alloc_gib": 56.092, "rel_spread": 0.003},
        {"kind": "model", "model": "vim_t", "attn": None, "implementation": "official", "res": 1248, "tokens": 6085,
         "batch": 64, "dtype": "fp32", "params": 7148008, "status": "ok", "fps": 126.3, "latency_ms_p50": 506.7,
         "peak_alloc_gib": 7.704},
        {"kind": "model", "model": "deit_s", "attn": "eager", "implementation": "timm", "res": 1248, "tokens": 6085,
         "batch": 64, "dtype": "bf16", "params": 24311656, "status": "oom"},
        {"kind": "kernel", "op": "selective_scan_fwd", "B": 64, "ms_p50": 5.9},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    dst = tmp_path / "converted.jsonl"
    runner = CliRunner()
    result = runner.invoke(app, ["import-anchors", str(src), "-o", str(dst)])
    assert result.exit_code == 0, result.output
    assert "3 case rows" in result.output and "1 kernel" in result.output
    df = load_results(dst)
    assert len(df) == 3
    deit = df[(df.model == "deit_t")].iloc[0]
    assert deit.fps == 56.0 and deit.peak_alloc_mib == pytest.approx(56.092 * 1024) and deit.attn == "eager"
    vim = df[df.model == "vim_t"].iloc[0]
    assert vim.implementation == "official" and vim.device == "cuda" and vim.params == 7148008
    assert df[df.model == "deit_s"].iloc[0].status == "oom"
    # Not twice without --force; a results file is not an anchors file.
    result = runner.invoke(app, ["import-anchors", str(src), "-o", str(dst)])
    assert result.exit_code == 2 and "--force" in result.output
    result = runner.invoke(app, ["import-anchors", str(dst), "-o", str(tmp_path / "again.jsonl")])
    assert result.exit_code == 2 and "already a vimbench results file" in result.output


_ANCHOR_HEADER = {"kind": "header", "gpu": "NVIDIA H200", "date": "2026-11-29", "protocol": "3 warm-up, 8 timed"}
_ANCHOR_ROW = {"kind": "model", "model": "deit_t", "attn": "eager", "res": 224, "batch": 64, "dtype": "fp32",
               "status": "ok", "fps": 56.0, "latency_ms_p50": 11.4, "peak_alloc_gib": 1.5}
BAD_ANCHORS = [
    ("[1, 2]", "line 3: not a JSON object"),
    (json.dumps({**_ANCHOR_ROW, "peak_alloc_gib": "big"}), "line 3: peak_alloc_gib is 'big', not a number"),
    (json.dumps({**_ANCHOR_ROW, "model": 5}), "line 3: anchors model row lacks a usable field"),
    (json.dumps({"kind": "train", "model": "vim_t", "res": 224, "batch": 8, "dtype": "bf16", "img_s": "x"}),
     "line 3: fps is 'x', not a number"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (json.dumps({**_ANCHOR_ROW, "dtype": "int8"}), "dtype 'int8' is not one of fp32, tf32, bf16, fp16"),
    (json.dumps({"kind": "train", "model": "vim_t", "res": 224, "batch": 8, "dtype": "float8", "img_s": 9.0}),
     "dtype 'float8' is not one of"),
]


@pytest.mark.parametrize("line, words", BAD_ANCHORS, ids=[w for _, w in BAD_ANCHORS])
def test_import_anchors_bad_row_is_one_line_and_writes_nothing(tmp_path, line, words):
    """A row the converter cannot use, or that the results loaders would reject, stops the import with one line
    naming it (it was a traceback, or a results file that `report` then refused), and no file is written."""
    src = tmp_path / "anchors.jsonl"
    good = "\n".join(json.dumps(x) for x in (_ANCHOR_HEADER, _ANCHOR_ROW)) + "\n"
    src.write_bytes(good.encode() + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    dst = tmp_path / "converted.jsonl"
    result = CliRunner().invoke(app, ["import-anchors", str(src), "-o", str(dst)])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and words in lines[0], result.output
    assert not dst.exists()


# ------------------------------------------------------------------------------------------- a real sweep
@pytest.mark.slow
def test_report_of_a_tiny_cpu_sweep(tmp_path):
    sweep = pytest.importorskip("vimbench.bench.sweep", reason="the sweep engine is not in this checkout")
    config = sweep.make_config({"models": "vim_test,deit_test", "res": "32,64", "batch": "1,2", "dtype": "fp32",
                                "attn": "sdpa,eager", "device": "cpu", "warmup": 1, "iters": 5},
                               cuda_available=False)
    results = tmp_path / "tiny.jsonl"
    sweep.run_sweep(config, out=results)
    out = tmp_path / "tiny-report"
    result = CliRunner().invoke(app, ["report", str(results), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    rows = read_csv(out / "tables" / "results.csv")
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}
    assert all(float(r["throughput (img/s)"]) > 0 for r in rows)
    assert {r["deit"] for r in read_csv(out / "tables" / "ratios.csv")} == {"deit_test timm/sdpa",
                                                                            "deit_test timm/eager"}
    assert (out / "figures" / "throughput_vs_batch-64px.png").is_file()
    assert (out / "index.html").is_file()


# ------------------------------------------------------------------------------------------- figures' content
def _svg_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_headline_states_ratios_and_crossover_and_leaves_the_reference_out(tmp_path):
    cases = synthetic_cases()
    # A torch-reference Vim line: in the full figure, not in the headline.
    for res in RESOLUTIONS:
        key = CaseKey(model="vim_t", res=res, batch=64, dtype="fp32", implementation="torch", attn=None,
                      device="cuda")
        cases.append(CaseResult(key=key, status="ok", fps=10.0, latency_ms_p50=6400.0, peak_alloc_mib=9000.0,
                                memory_method="torch_allocator+nvml"))
    src = write_results(tmp_path / "r.jsonl", cases)
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(src), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    head = _svg_text(out / "figures" / "headline-vim_t-vs-deit_t-fp32-b64.svg")
    full = _svg_text(out / "figures" / "throughput_memory_vs_res-fp32-b64.svg")
    assert "torch reference" not in head and "torch reference" in full
    # Vim/DeiT sdpa at 1248 px: (1/3) * 1248/224 = 1.857x, written on the figure with the paper's wording.
    speed = vim_fps(1248, 64) / deit_fps(1248, 64, "sdpa")
    assert f"{speed:.2f}x faster" in head
    saved = 1 - peak_mib("vim_t", None, 1248, 64) / peak_mib("deit_t", "sdpa", 1248, 64)
    assert (f"{100 * saved:.1f}% less memory" if saved >= 0 else f"{1 - saved:.2f}x the memory") in head
    # The throughput ratio crosses 1 between 512 and 1024 px for both DeiT attentions.
    assert head.count("crossover: between 512 and 1024 px") == 2
    summary = read_csv(out / "tables" / "summary.csv")
    assert {r["crossover (Vim overtakes DeiT)"].split(" (")[0] for r in summary
            if r["vim"] == "Vim-Ti triton"} == {"between 512 and 1024 px"}
    torch_rows = {r["deit"]: r["crossover (Vim overtakes DeiT)"] for r in summary if r["vim"] == "Vim-Ti torch"}
    assert torch_rows["DeiT-Ti sdpa"] == "none in 224..1248 px: slower at every resolution"
    # DeiT eager runs out of memory at 1248 px: an OOM loses, so the torch reference "overtakes" it there.
    assert torch_rows["DeiT-Ti eager"].startswith("between 1024 and 1248 px")
    # The headline figures come first in index.html.
    page = (out / "index.html").read_text()
    assert page.index("figure-headline-vim_t-vs-deit_t-fp32-b64") < page.index("figure-throughput_memory_vs_res")
    assert page.index("figure-headline-vim_t-vs-deit_t-fp32-b64") < page.index(
        "figure-headline-vim_t-vs-deit_t-fp32-b8")


def test_one_colour_per_implementation_everywhere():
    from vimbench.report.style import colour, line_style

    def key(model, impl, attn=None, compile=None):
        return {"model": model, "implementation": impl, "attn": attn, "compile": compile}

    assert colour(key("vim_t", "triton")) == colour(key("vim_s", "triton")) == colour(key("vim_b", "triton"))
    assert colour(key("deit_t", "timm", "sdpa")) == colour(key("deit_b", "timm", "sdpa"))
    distinct = [key("vim_t", "triton"), key("vim_t", "official"), key("vim_t", "torch"),
                key("deit_t", "timm", "sdpa"), key("deit_t", "timm", "eager"),
                key("deit_t", "timm", "sdpa", "max-autotune")]
    assert len({colour(k) for k in distinct}) == len(distinct)
    # A timm peer gets a colour from its name, whatever else is in the figure.
    assert colour(key("timm:convnext_tiny", "timm")) == colour(key("timm:convnext_tiny", "timm"))
    assert line_style(key("vim_t", "triton"))["marker"] != line_style(key("vim_s", "triton"))["marker"]


def test_cpu_results_use_the_recorded_peak_rss(tmp_path):
    cases = []
    for res in (32, 64, 96):
        for model, impl, attn, rss in (("vim_test", "torch", None, 400.0 + res), ("deit_test", "timm", "sdpa",
                                                                                   500.0 + res)):
            key = CaseKey(model=model, res=res, batch=2, dtype="fp32", implementation=impl, attn=attn,
                          device="cpu")
            cases.append(CaseResult(key=key, status="ok", fps=100.0 / res, latency_ms_p50=20.0 * res,
                                    memory_method="process_rss", cpu_peak_rss_mib=rss))
    src = write_results(tmp_path / "cpu.jsonl", cases, gpu=None)
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(src), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    ratios = read_csv(out / "tables" / "ratios.csv")
    by_res = {int(r["res (px)"]): r for r in ratios}
    assert float(by_res[64]["memory saved (%)"]) == pytest.approx(100 * (1 - 464 / 564))
    svg = _svg_text(out / "figures" / "throughput_memory_vs_res-fp32-b2.svg")
    assert "peak RSS" in svg and "max_memory_allocated" not in svg
    results = read_csv(out / "tables" / "results.csv")
    assert {float(r["peak RSS (MiB)"]) for r in results if r["res (px)"] == "32"} == {432.0, 532.0}


def test_compiled_rows_are_their_own_peer_line(tmp_path):
    src = write_results(tmp_path / "r.jsonl", synthetic_cases(oom=False))
    lines = [json.loads(line) for line in src.read_text().splitlines()]
    extra = []
    for row in lines[1:]:
        if row["attn"] == "sdpa" and row["batch"] == 64:
            extra.append({**row, "compile": "max-autotune", "fps": row["fps"] * 1.5,
                          **{c: row[c] / 1.5 for c in ("latency_ms_p20", "latency_ms_p50", "latency_ms_p80")}})
    with open(src, "a", encoding="utf-8") as fh:
        for row in extra:
            fh.write(json.dumps(row) + "\n")
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(src), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    deits = {r["deit"] for r in read_csv(out / "tables" / "ratios.csv") if r["batch"] == "64"}
    assert deits == {"deit_t timm/sdpa", "deit_t timm/eager", "deit_t timm/sdpa compiled(max-autotune)"}
    results = read_csv(out / "tables" / "results.csv")
    assert sum(r["compile"] == "max-autotune" for r in results) == len(extra)
    head = _svg_text(out / "figures" / "headline-vim_t-vs-deit_t-fp32-b64.svg")
    assert "compiled (max-autotune)" in head


def test_graph_replayed_rows_at_one_resolution_report_without_a_doubled_label(tmp_path):
    """Rows of both models with compile cuda-graphs beside eager ones, where nothing else varies per line (the
    train sweep's shape): the report is written, and legends say "graphs" once."""
    src = write_results(tmp_path / "r.jsonl", [c for c in synthetic_cases(oom=False)
                                               if c.key.batch == 8 and c.key.attn != "eager"])
    lines = [json.loads(line) for line in src.read_text().splitlines()]
    with open(src, "a", encoding="utf-8") as fh:
        for row in lines[1:]:
            fh.write(json.dumps({**row, "compile": "cuda-graphs", "fps": row["fps"] * 2}) + "\n")
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(src), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    svgs = list((out / "figures").glob("*.svg"))
    assert svgs
    text = " ".join(_svg_text(path) for path in svgs)
    assert "graphs" in text and "graphs graphs" not in text
    # the tables pair eager with eager and graphs with graphs, and their labels tell the two pairs apart
    pairs = [(r["vim"], r["deit"]) for r in read_csv(out / "tables" / "ratios.csv") if r["res (px)"] == "1248"]
    assert len(pairs) == 2 and len(set(pairs)) == 2, pairs
    assert sum("graphs" in vim and "graphs" in deit for vim, deit in pairs) == 1
    # the results table names the graph-replayed rows (prepare() moves them out of `compile` into a flag)
    executions = [r["compile"] for r in read_csv(out / "tables" / "results.csv")]
    assert executions.count("cuda-graphs") == executions.count("none") == len(lines) - 1


def test_accuracy_pareto_front():
    from vimbench.report.accuracy import Point, pareto, published_accuracy

    pub = {(p.model, p.variant): p for p in published_accuracy()}
    assert pub[("vim_t", "official")].top1 == 76.1 and "2401.09417" in pub[("vim_t", "official")].source
    assert pub[("deit_b", "official")].top1 == 81.8
    pts = [Point({"model": m}, fps, acc, "") for m, fps, acc in
           (("a", 100, 80), ("b", 200, 76), ("c", 150, 75), ("d", 50, 81), ("e", 200, 70))]
    assert [p.key["model"] for p in pareto(pts)] == ["d", "a", "b"]


def test_terminal_tables_keep_key_columns_whole(monkeypatch):
    import io

    from rich.console import Console

    from vimbench import render

    for width in (80, 120):
        buf = io.StringIO()
        monkeypatch.setattr(render, "console", Console(width=width, file=buf, force_terminal=False))
        render.table("t", ["model", "implementation", "dtype", "gpu", "status", "run_id", "note"],
                     [["deit_t", "timm/sdpa", "bf16", "NVIDIA H200", "ok", "20261129-230945-c3fde9",
                       "x" * 60]] * 3, keep=["model", "implementation", "dtype", "gpu", "status"])
        text = buf.getvalue()
        assert all(len(line) <= width for line in text.splitlines())
        for cell in ("deit_t", "timm/sdpa", "bf16", "NVIDIA H200", "ok"):
            assert cell in text, (width, text)
        assert "…" not in text
        assert "Left out to fit" in text


def _results_csv_rows(tmp_path, src):
    """`vimbench report SRC --no-table` into a folder of its own; the rows of its tables/results.csv."""
    out = tmp_path / f"rep-{src.stem}"
    result = CliRunner().invoke(app, ["report", str(src), "-o", str(out), "--no-table"])
    assert result.exit_code == 0, result.output
    return read_csv(out / "tables" / "results.csv")


def test_results_table_shows_memory_carried_over_from_earlier_cases(tmp_path):
    """Rows that began with memory of earlier cases (allocated_at_start_mib) get a "carried over" column in the
    results table; files where nothing was carried (or that predate the field) do not."""
    cases = [c for c in synthetic_cases(oom=False) if c.key.batch == 8 and c.key.attn != "eager"]
    for i, case in enumerate(cases):
        case.allocated_at_start_mib = 0.0 if i == 0 else 11.5 * i
    clean = write_results(tmp_path / "clean.jsonl", synthetic_cases(oom=False))
    leaky = write_results(tmp_path / "leaky.jsonl", cases)
    for src, expect in ((clean, False), (leaky, True)):
        rows = _results_csv_rows(tmp_path, src)
        assert ("carried over (MiB)" in rows[0]) is expect
        if expect:
            assert sorted(float(r["carried over (MiB)"]) for r in rows) == sorted(c.allocated_at_start_mib
                                                                                   for c in cases)


def test_results_table_shows_vim_options_and_host_speed_only_when_they_vary(tmp_path):
    """The results table gains "vim memory" / "vim slice" columns when a row is off their default, and a "host
    (us/op)" column when the recorded host speed moved more than HOST_DRIFT between rows; plain files keep
    neither."""
    from dataclasses import replace

    from vimbench.bench.env import HOST_DRIFT

    base = [c for c in synthetic_cases(oom=False) if c.key.batch == 8 and c.key.attn != "eager"]
    for case in base:
        case.host_us_per_op = 2.0
    vim = next(c for c in base if c.key.model.startswith("vim"))
    lean = replace(vim, key=replace(vim.key, vim_memory="lean"), host_us_per_op=2.0 * HOST_DRIFT * 1.1)
    plain = write_results(tmp_path / "plain.jsonl", base)
    varied = write_results(tmp_path / "varied.jsonl", [*base, lean])
    for src, expect in ((plain, False), (varied, True)):
        rows = _results_csv_rows(tmp_path, src)
        assert ("vim memory" in rows[0]) is expect and ("host (us/op)" in rows[0]) is expect
        assert "vim slice" not in rows[0]
        if expect:
            assert sorted(r["vim memory"] for r in rows if r["vim memory"] not in ("", "default")) == ["lean"]


@pytest.mark.parametrize("lo,hi,expected", [
    (1.0, 1.12, ["1x", "1.05x", "1.1x"]),          # a memory ratio near 1x: round values, not "1x" alone
    (0.5, 0.9, ["0.5x", "0.6x", "0.7x", "0.8x", "0.9x", "1x"]),
    (0.47, 1.83, ["0.5x", "0.6x", "0.7x", "0.8x", "0.9x", "1x", "1.5x"]),   # a label above 1x too
])
def test_ratio_axis_labels_ticks_inside_narrow_ranges(lo, hi, expected):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vimbench.report.figures import _log_axis
    fig, ax = plt.subplots()
    try:
        ax.plot([0, 1], [lo, hi])
        ax.axhline(1.0)
        _log_axis(ax, suffix="x")
        fig.canvas.draw()
        bottom, top = ax.get_ylim()
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text() and bottom <= t.get_position()[1] <= top]
    finally:
        plt.close(fig)
    assert labels == expected


def test_results_table_shows_host_submission_time_where_recorded(tmp_path):
    """Rows with the host's submission time (host_ms_p50, CUDA rows of newer files) get a "host submit p50 (ms)"
    column with their values; files without the field do not."""
    cases = [c for c in synthetic_cases(oom=False) if c.key.batch == 8 and c.key.attn != "eager"]
    for case in cases:
        case.host_ms_p50 = round(0.5 * case.latency_ms_p50, 3)
    plain = write_results(tmp_path / "plain.jsonl", synthetic_cases(oom=False))
    timed = write_results(tmp_path / "timed.jsonl", cases)
    for src, expect in ((plain, False), (timed, True)):
        rows = _results_csv_rows(tmp_path, src)
        assert ("host submit p50 (ms)" in rows[0]) is expect
        if expect:
            assert sorted(round(float(r["host submit p50 (ms)"]), 2) for r in rows) == \
                sorted(round(c.host_ms_p50, 2) for c in cases)
