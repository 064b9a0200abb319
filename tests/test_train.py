"""Training mode: the step (loss goes down), the CLI end to end on CPU with the tiny models, the row's fields and
how a backend that cannot train is recorded. No timing assertions."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import vimbench
from vimbench.bench import runner as runners
from vimbench.bench import sweep as sweeps
from vimbench.bench import compiler
from vimbench.bench.train import check_gradients, compile_train_step, make_train_step
from vimbench.cli import app
from vimbench.errors import VimbenchError
from vimbench.results import header_settings, load_results, read_header

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
    settings = header_settings(read_header(out))
    assert settings["sweep"]["mode"] == ["infer", "train"] and "AdamW" in settings["protocol"]["train"]["step"]
    train_rows = df[df["mode"] == "train"]
    boundary = dict(zip(train_rows["model"], train_rows["train_boundary"]))
    assert boundary["vim_test"] == "fused" and pd.isna(boundary["deit_test"])  # Vim's saved-activation policy
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


@pytest.mark.gpu
def test_triton_backend_training_case_on_the_gpu():
    """A Vim-Ti training case on the triton backend: a step that trains every parameter, timed with the split.
    (On CPU the interpreter takes minutes for the 8 steps of a case; the backward kernels' own tests cover it.)"""
    key = runners.CaseKey("vim_t", 224, 8, "bf16", "triton", None, "cuda", mode="train")
    result = runners.run_case(key, warmup=1, iters=5)
    assert result.status == "ok", result.error
    assert result.optimizer == "adamw" and len(result.backward_ms_samples) == 5
    assert result.baseline_alloc_mib > 0 and result.peak_alloc_mib > result.baseline_alloc_mib
    assert result.timing_method == "cuda_events" and result.memory_method.startswith("torch_allocator")


def test_cases_hand_back_cublas_workspaces_between_them(monkeypatch):
    """Between cases the runner clears cuBLAS's per-stream workspaces before emptying the allocator's cache:
    otherwise every graph-captured case leaves its capture streams' workspaces (and the graph pool segments
    they pin) allocated into every later case's baseline and peak."""
    calls = []
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append("clear"), raising=False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty"))
    runners._free("cuda")
    assert calls == ["clear", "empty"]
    calls.clear()
    runners._free("cpu")
    assert calls == []


@pytest.mark.gpu
def test_a_graph_captured_training_case_leaves_no_memory_to_the_next():
    """The same case twice in one process, after a graph-captured case: the same baseline and peak (on the H200
    each captured training case used to leave ~65 MiB allocated to all later cases)."""
    graphs = runners.CaseKey("deit_test", 64, 4, "bf16", "timm", "sdpa", "cuda", mode="train", compile="cuda-graphs")
    eager = runners.CaseKey("vim_test", 64, 4, "bf16", "triton", None, "cuda", mode="train")
    _assert_cases_leave_nothing(eager, graphs)


@pytest.mark.gpu
def test_a_frozen_compiled_case_leaves_no_memory_to_the_next():
    """The same for compiled inference (its frozen constants had stayed: ~11-18 MiB per compiled case on the H200)."""
    compiled = runners.CaseKey("deit_test", 64, 4, "bf16", "timm", "sdpa", "cuda", compile="default")
    eager = runners.CaseKey("vim_test", 64, 4, "bf16", "triton", None, "cuda")
    _assert_cases_leave_nothing(eager, compiled)


def _assert_cases_leave_nothing(probe, other):
    first = runners.run_case(probe, warmup=1, iters=5)
    for _ in range(2):
        assert runners.run_case(other, warmup=2, iters=5).status == "ok"
    again = runners.run_case(probe, warmup=1, iters=5)
    assert first.status == again.status == "ok", (first.error, again.error)
    assert abs(again.baseline_alloc_mib - first.baseline_alloc_mib) < 1.0
    assert abs(again.peak_alloc_mib - first.peak_alloc_mib) < 1.0
    assert again.allocated_at_start_mib < 1.0  # nothing of the earlier cases left


def test_graph_captured_step_needs_cuda_and_says_so():
    """compile cuda-graphs for a training step: refused on CPU with one clear message, never run eagerly instead."""
    from vimbench.bench.train import time_train_steps

    model = vimbench.create_model("deit_test", img_size=32)
    with pytest.raises(VimbenchError, match="needs --device cuda"):
        make_train_step(model, 2, 32, "fp32", "cpu", capturable=True)
    step = make_train_step(model, 2, 32, "fp32", "cpu")
    with pytest.raises(VimbenchError, match="needs --device cuda"):
        time_train_steps(step, "cpu", 1, 5, cuda_graphs=True)


def _twin_gpu_models(model_name, backend, n=2):
    """n (two) identically initialised models on the GPU at 64 px (backend: Vim's op backend, None: DeiT with sdpa)
    and a copy of their starting parameters."""
    kwargs = {"backend": backend} if backend else {"attn": "sdpa"}
    models = []
    for _ in range(n):
        torch.manual_seed(0)
        models.append(vimbench.create_model(model_name, img_size=64, **kwargs).cuda())
    return models, [p.detach().clone() for p in models[0].parameters()]


@pytest.mark.gpu
@pytest.mark.parametrize("model_name, backend, dtype", [("vim_t", "triton", "bf16"), ("deit_t", None, "bf16"),
                                                         ("vim_t", "triton", "fp32")])
def test_graph_captured_training_steps_train_like_eager_steps(model_name, backend, dtype):
    """The whole step captured into a CUDA graph (compile cuda-graphs): replays update the parameters as eager
    steps do (same start, same batch: the weights after capture warm-up + replays equal eager steps' within
    accumulation-order noise), and the case runs through the runner with graph-replay timing."""
    from vimbench.bench import timing
    from vimbench.bench.runner import precision_flags

    models, start = _twin_gpu_models(model_name, backend)
    with precision_flags(dtype):
        eager = make_train_step(models[0], 4, 64, dtype, "cuda")
        graphed = make_train_step(models[1], 4, 64, dtype, "cuda", capturable=True)
        graphed()  # the runner's untimed first step (AdamW state)
        graph = timing.capture_graph(graphed, warmup=2)  # 2 warm-up steps, then capture (runs nothing)
        graph.replay()
        graph.replay()
        for _ in range(5):  # 1 + 2 + 2 steps
            eager()
        torch.cuda.synchronize()
    # the updates over the 5 steps: every parameter moved in the graph, and all updates together within 5%
    # (relative L2) of the eager steps' (bf16 autocast, a non-deterministic attention backward and AdamW's
    # capturable arithmetic differ slightly; single tensors are not compared: DeiT's key bias has a zero gradient
    # in exact arithmetic, so AdamW turns rounding noise into full-size steps there)
    eager_updates, graph_updates = [], []
    for (name, a), b, p0 in zip(models[0].named_parameters(), models[1].parameters(), start):
        eager_updates.append((a.detach() - p0).flatten())
        graph_updates.append((b.detach() - p0).flatten())
        assert graph_updates[-1].norm() > 0, name
    eager_all, graph_all = torch.cat(eager_updates), torch.cat(graph_updates)
    assert (graph_all - eager_all).norm() <= 0.05 * eager_all.norm()
    key = runners.CaseKey(model_name, 224, 8, dtype, backend or "timm", None if backend else "sdpa", "cuda",
                          mode="train", compile="cuda-graphs")
    result = runners.run_case(key, warmup=2, iters=5)
    assert result.status == "ok", result.error
    assert result.timing_method == timing.CUDA_GRAPH_EVENTS and result.backward_ms_p50 is None


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
    graphs = {(c.model, c.attn, c.res, c.batch, c.dtype) for c in cases if c.compile == "cuda-graphs"}
    assert graphs == {("vim_t", None, 224, 128, "bf16"), ("vim_t", None, 1248, 8, "bf16"),
                      ("deit_t", "sdpa", 224, 128, "bf16"), ("deit_t", "sdpa", 1248, 8, "bf16")}
    assert len(cases) == 24 and (config.warmup, config.iters) == (2, 5)
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


# ------------------------------------------------------------------------------------------ reports and anchors
def _write(path, cases):
    from vimbench.results import ResultsFile

    store = ResultsFile(path, {"run_id": "synthetic-train", "created": "2026-12-02T01:00:00", "command": "test",
                               "env": {"gpu_name": "Test GPU", "gpu_count": 1}})
    for case in cases:
        store.append(case)
    return path


def _case(model, impl, attn, res, mode, fps, peak):
    from vimbench.results import CaseKey, CaseResult

    key = CaseKey(model=model, res=res, batch=8, dtype="bf16", implementation=impl, attn=attn, device="cuda",
                  mode=mode)
    extra = dict(optimizer="adamw", loss="cross_entropy", forward_ms_p50=300.0 / fps, backward_ms_p50=500.0 / fps,
                 baseline_alloc_mib=peak / 4) if mode == "train" else {}
    return CaseResult(key=key, status="ok", fps=fps, latency_ms_p50=8000.0 / fps, peak_alloc_mib=peak,
                      timing_method="cuda_events", warmup=2, iters=5, timestamp="2026-12-02T01:00:00", **extra)


def test_report_keeps_modes_apart(tmp_path):
    from vimbench.report import build_report

    src = _write(tmp_path / "mixed.jsonl", [
        _case("vim_t", "triton", None, 224, "infer", 4000.0, 100.0),
        _case("vim_t", "triton", None, 1248, "infer", 600.0, 900.0),
        _case("deit_t", "timm", "sdpa", 224, "infer", 8000.0, 50.0),
        _case("deit_t", "timm", "sdpa", 1248, "infer", 650.0, 1000.0),
        _case("vim_t", "triton", None, 224, "train", 1000.0, 400.0),
        _case("vim_t", "triton", None, 1248, "train", 100.0, 5000.0),
        _case("deit_t", "timm", "sdpa", 224, "train", 2000.0, 200.0),
        _case("deit_t", "timm", "sdpa", 1248, "train", 160.0, 4000.0),
    ])
    out = build_report([src], tmp_path / "report")
    names = {f.name for f in out.figures}
    # (the accuracy figure is inference-only: published accuracy against measured inference img/s)
    assert names == {"throughput_memory_vs_res-bf16-b8", "throughput_memory_vs_res-train-bf16-b8",
                     "accuracy_vs_throughput"}
    train_fig = next(f for f in out.figures if "train" in f.name)
    assert "mode train" in train_fig.title
    tables = {t.name: t for t in out.tables}
    assert set(tables) == {"summary", "results", "ratios", "summary-train", "results-train", "ratios-train"}
    infer_rows = read_rows(tmp_path / "report" / "tables" / "results.csv")
    train_rows = read_rows(tmp_path / "report" / "tables" / "results-train.csv")
    assert sorted(float(r["throughput (img/s)"]) for r in infer_rows) == [600.0, 650.0, 4000.0, 8000.0]
    assert sorted(float(r["throughput (img/s)"]) for r in train_rows) == [100.0, 160.0, 1000.0, 2000.0]
    assert "forward p50 (ms)" not in infer_rows[0] and float(train_rows[0]["forward p50 (ms)"]) > 0
    ratios = {int(r["res (px)"]): float(r["speed-up (x)"])
              for r in read_rows(tmp_path / "report" / "tables" / "ratios-train.csv")}
    assert ratios == {224: pytest.approx(0.5), 1248: pytest.approx(100.0 / 160.0)}
    assert "Training steps" in tables["results-train"].caption


def read_rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_import_anchors_converts_train_rows(tmp_path):
    src = tmp_path / "anchors.jsonl"
    lines = [
        {"kind": "header", "gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "timm": "1.0.29", "date": "2026-12-01",
         "vim_impl": "official", "deit_impl": "timm", "protocol_infer": "3 warm-up, 10 timed calls",
         "protocol_train": "one step = zero_grad, forward, cross-entropy, backward, AdamW; 3 warm-up, 8 timed"},
        {"kind": "train", "model": "vim_t", "implementation": "official", "res": 1248, "batch": 8, "dtype": "bf16",
         "status": "ok", "img_s": 42.6, "step_ms_p50": 187.74, "peak_alloc_gib": 8.273},
        {"kind": "train", "model": "deit_t", "implementation": "timm", "attn": "sdpa", "res": 1248, "batch": 8,
         "dtype": "bf16", "status": "ok", "img_s": 162.3, "step_ms_p50": 49.3, "peak_alloc_gib": 4.366},
        {"kind": "model", "model": "deit_t", "implementation": "timm", "attn": "sdpa", "res": 1248, "batch": 8,
         "dtype": "bf16", "status": "ok", "fps": 600.0, "latency_ms_p50": 13.3, "peak_alloc_gib": 0.5},
    ]
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    dst = tmp_path / "anchors-converted.jsonl"
    result = invoke(["import-anchors", src, "-o", dst])
    assert result.exit_code == 0, result.output
    assert "3 case rows (2 train, 1 infer)" in result.output
    df = load_results(dst)
    train = df[df["mode"] == "train"]
    vim = train[train["model"] == "vim_t"].iloc[0]
    assert vim["implementation"] == "official" and vim["fps"] == 42.6 and vim["latency_ms_p50"] == 187.74
    assert vim["peak_alloc_mib"] == pytest.approx(8.273 * 1024) and vim["optimizer"] == "adamw"
    assert (vim["warmup"], vim["iters"]) == (3, 8) and vim["loss"] == "cross_entropy"
    assert df[df["mode"] == "infer"].iloc[0]["fps"] == 600.0
    assert header_settings(read_header(dst))["protocol"]["train"].startswith("one step")


@pytest.mark.parametrize("name", ["vim_test", "deit_test"])
def test_compiled_training_step_trains_like_the_eager_step(name):
    """compile_train_step wraps the model in torch.compile (aot_eager here: dynamo and AOTAutograd trace forward
    and backward, no code generation); three steps give the eager steps' losses and weights, and the optimizer
    updates the same parameters the compiled model reads."""
    torch.manual_seed(0)
    eager_model = vimbench.create_model(name, img_size=32, num_classes=10, backend="torch")
    compiled_model = copy.deepcopy(eager_model)
    eager = make_train_step(eager_model, batch=4, res=32, dtype="fp32", device="cpu")
    compiled = make_train_step(compiled_model, batch=4, res=32, dtype="fp32", device="cpu")
    compiler.reset()
    try:
        compile_train_step(compiled, "default", "aot_eager")
        losses = [(float(eager()), float(compiled())) for _ in range(3)]
        stats = compiler.stats()
    finally:
        compiler.reset()
    assert compiled.model is not compiled_model and not compiled.mark_steps  # no CUDA graphs in this mode
    assert stats.graphs >= 1
    for e, c in losses:
        assert c == pytest.approx(e, rel=1e-5, abs=1e-6), losses
    assert losses[-1][1] < losses[0][1], losses
    for (name_, p), q in zip(eager_model.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=name_)


def test_sweep_times_compiled_training_steps_and_records_the_compile(tmp_path):
    out = tmp_path / "run.jsonl"
    config = sweeps.make_config({"models": "vim_test,deit_test", "res": 32, "batch": 2, "attn": "sdpa",
                                 "mode": "train", "compile": "none,default", "compile_backend": "aot_eager",
                                 "warmup": 1, "iters": 5, "device": "cpu"}, cuda_available=False)
    results = sweeps.run_sweep(config, out=out)
    assert [(r.key.model, r.key.compile) for r in results] == [("vim_test", "none"), ("vim_test", "default"),
                                                               ("deit_test", "none"), ("deit_test", "default")]
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    for r in results:
        assert r.compile_s > 0 and r.fps > 0 and len(r.forward_ms_samples) == 5  # the first step's wall time
        if r.key.compile == "default":
            assert r.compile_backend == "aot_eager" and r.compiled_graphs >= 1 and r.graph_breaks is not None
        else:
            assert r.compile_backend is None and r.compiled_graphs is None
    assert "no freezing" in header_settings(read_header(out))["protocol"]["train"]["timing"]


@pytest.mark.gpu
@pytest.mark.parametrize("model_name, backend, mode", [("vim_t", "triton", "default"), ("deit_t", None, "default"),
                                                        ("vim_t", "triton", "reduce-overhead")])
def test_compiled_training_steps_on_the_gpu_train_like_eager_steps(model_name, backend, mode):
    """torch.compile with inductor (kernels generated, and inductor's own CUDA graphs in reduce-overhead): five
    compiled bf16 steps move the weights as five eager bf16 steps do, judged against five fp32 steps: the compiled
    updates' distance from the fp32 ones is at most twice the eager bf16 updates' distance plus 1% (inductor's own
    kernels round differently; AdamW's first steps, ~lr g / |g| per element, turn that into visible differences:
    DeiT-Ti's compiled updates were 5.3% (relative L2) from eager's on an H100, session v); and the case runs through
    the runner with its compile recorded."""
    from vimbench.bench.runner import precision_flags

    models, start = _twin_gpu_models(model_name, backend, n=3)
    with precision_flags("fp32"):
        reference = make_train_step(models[2], 4, 64, "fp32", "cuda")
        for _ in range(5):
            reference()
    compiler.reset()
    try:
        with precision_flags("bf16"):
            eager = make_train_step(models[0], 4, 64, "bf16", "cuda")
            compiled = make_train_step(models[1], 4, 64, "bf16", "cuda")
            compile_train_step(compiled, mode)
            for _ in range(5):
                eager()
                compiled()
            torch.cuda.synchronize()
    finally:
        compiler.reset()
    assert compiled.mark_steps == (mode == "reduce-overhead")
    eager_all, compiled_all, fp32_all = (
        torch.cat([(p.detach() - p0).flatten() for p, p0 in zip(m.parameters(), start)]) for m in models)
    eager_err, compiled_err = ((u - fp32_all).norm().item() for u in (eager_all, compiled_all))
    assert compiled_err <= 2 * eager_err + 0.01 * fp32_all.norm().item(), (compiled_err, eager_err)
    key = runners.CaseKey(model_name, 224, 8, "bf16", backend or "timm", None if backend else "sdpa", "cuda",
                          mode="train", compile=mode)
    result = runners.run_case(key, warmup=2, iters=5)
    assert result.status == "ok", result.error
    assert result.compile_backend == "inductor" and result.compiled_graphs >= 1 and result.compile_s > 0


def test_cuda_training_steps_record_the_hosts_submission_time(monkeypatch):
    """Per timed step on CUDA the host's time from the step's start to its return (the optimizer step issued) is
    kept: a step that keeps the host busy 1 ms in the forward and 2 ms in the backward gives samples >= 3 ms
    (events stubbed: no GPU here)."""
    import time

    from vimbench.bench.train import time_train_steps
    from _fake_cuda import fake_cuda_timing

    class Step:
        def forward_loss(self):
            time.sleep(0.001)
            return torch.zeros(())

        def backward_update(self, loss):
            time.sleep(0.002)

        def __call__(self):
            self.backward_update(self.forward_loss())

    fake_cuda_timing(monkeypatch)
    timing = time_train_steps(Step(), "cuda", warmup=1, iters=5)
    assert len(timing.step.host_ms_samples) == 5 and min(timing.step.host_ms_samples) >= 3.0
    assert len(timing.forward_ms_samples) == 5 and timing.step.host_ms_p50 is not None
    cpu = time_train_steps(Step(), "cpu", warmup=1, iters=5)
    assert cpu.step.host_ms_samples is None
