"""The --compile axis on CPU: torch.compile with the debug backends (dynamo tracing without inductor's code
generation, which takes minutes per model on two cores), rows and headers, and results files from before the axis.
The inductor modes run on the GPU box (the gpu-marked test)."""
from __future__ import annotations

import json

import pytest
import torch

from vimbench.bench import compiler
from vimbench.bench import sweep as sweeps
from vimbench.bench.runner import run_case
from vimbench.errors import VimbenchError
from vimbench.models.registry import create_model
from vimbench.results import CaseKey, ResultsFile, header_settings, key_of_row, load_results, read_header


def tiny(**kw):
    values = {"models": "deit_test", "res": "32", "batch": 2, "attn": "sdpa", "warmup": 1, "iters": 5,
              "device": "cpu", **kw}
    return sweeps.make_config(values, cuda_available=False)


def test_compiled_vim_matches_eager_and_reads_the_weight_cache_without_graph_breaks():
    """The torch backend under dynamo: same output as eager; its only graph breaks are the reference scan's host
    reads (Tensor.item), none from the mixer's weight cache (a data-pointer key dynamo cannot trace)."""
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=32, backend="torch").eval()
    images = torch.randn(2, 3, 32, 32)
    compiler.reset()
    try:
        with torch.inference_mode():
            eager = model(images)  # fills the stacked-weights cache, as the runner's eager call does
            compiled = compiler.compile_model(model, "default", backend="eager")(images)
        stats = compiler.stats()
    finally:
        compiler.reset()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    assert stats.graphs >= 1 and stats.graph_breaks >= 1
    assert stats.break_reasons and all("item()" in r for r in stats.break_reasons), stats.break_reasons


@pytest.mark.parametrize("patch_gemm, fuse_conv_xproj", [(False, False), (True, False), (False, True)])
def test_compiled_vim_on_the_triton_ops_is_one_graph_and_matches_eager(patch_gemm, fuse_conv_xproj, monkeypatch):
    """The Triton backend's ops are torch custom ops: dynamo traces the whole forward as one graph (the kernels
    run under the interpreter here, as opaque nodes), with the stacked mixer weights built inside it; the patch
    embedding as the convolution and as the GEMM over gathered patches (big inputs' path, forced here); the conv
    fused with x_proj (vim.FUSE_CONV_XPROJ) as one more custom op."""
    import vimbench.models.vim as vim

    monkeypatch.setattr(vim, "FUSE_CONV_XPROJ", fuse_conv_xproj)
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=16, backend="triton").eval()
    model.patch_embed.as_gemm = patch_gemm
    images = torch.randn(2, 3, 16, 16)
    compiler.reset()
    try:
        with torch.inference_mode():
            eager = model(images)
            compiled = compiler.compile_model(model, "default", backend="eager")(images)
        stats = compiler.stats()
    finally:
        compiler.reset()
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    assert (stats.graphs, stats.graph_breaks) == (1, 0), stats.break_reasons


def test_sweep_over_compile_modes_records_mode_compile_time_and_settings(tmp_path):
    out = tmp_path / "run.jsonl"
    results = sweeps.run_sweep(tiny(compile="none,default", compile_backend="aot_eager"), out=out)
    assert [r.key.compile for r in results] == ["none", "default"]
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    eager, compiled = results
    assert eager.compile_s > 0 and eager.compile_backend is None and eager.graph_breaks is None
    assert compiled.compile_s > 0 and compiled.compile_backend == "aot_eager"
    assert compiled.compiled_graphs == 1 and compiled.graph_breaks == 0
    assert compiled.compile_settings is None  # inductor settings only where inductor compiles
    header = header_settings(read_header(out))
    assert header["compile"]["modes"] == ["none", "default"] and header["compile"]["backend"] == "aot_eager"
    assert header["sweep"]["compile"] == ["none", "default"] and header["sweep"]["compile_backend"] == "aot_eager"
    assert "compile_s" in header["protocol"]["compile"]
    df = load_results(out)
    assert list(df["compile"]) == ["none", "default"] and df["compile_s"].notna().all()
    # resuming the file reruns nothing: the compile mode is part of the case key
    assert sweeps.run_sweep(tiny(compile="none,default", compile_backend="aot_eager"), out=out, resume=True) == []


def test_inductor_settings_follow_the_mode():
    base = compiler.inductor_settings()
    assert {"max_autotune", "triton.cudagraphs", "coordinate_descent_tuning", "freezing"} <= set(base)
    assert compiler.inductor_settings("reduce-overhead")["triton.cudagraphs"] is True
    no_graphs = compiler.inductor_settings("max-autotune-no-cudagraphs")
    assert no_graphs["max_autotune"] is True and no_graphs["triton.cudagraphs"] == base["triton.cudagraphs"]
    header = compiler.header_settings(("none", "default", "max-autotune"), "inductor")
    assert header["inductor_by_mode"]["max-autotune"]["max_autotune"] is True
    assert "inductor" not in compiler.header_settings(("none",), "inductor")


def test_inference_compiles_freeze_the_weights_on_top_of_the_mode_options(monkeypatch):
    """torch.compile takes a mode or options: a frozen compile passes the mode's own options plus freezing; the
    debug backends and unfrozen compiles keep the plain mode."""
    seen = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: seen.append(kw) or model)
    model = torch.nn.Linear(2, 2)
    compiler.compile_model(model, "reduce-overhead", "inductor", freeze=True)
    compiler.compile_model(model, "default", "inductor", freeze=True)
    compiler.compile_model(model, "reduce-overhead", "inductor")
    compiler.compile_model(model, "default", "aot_eager", freeze=True)
    assert seen[0]["options"] == {**torch._inductor.list_mode_options("reduce-overhead"), "freezing": True}
    assert "mode" not in seen[0] and seen[1]["options"] == {"freezing": True}
    assert seen[2]["mode"] == "reduce-overhead" and "options" not in seen[2]
    assert seen[3]["mode"] is None and "options" not in seen[3]
    frozen = compiler.inductor_settings("reduce-overhead", freeze=True)
    assert frozen["freezing"] is True and frozen["triton.cudagraphs"] is True


class _Stacked(torch.nn.Module):
    """Like Vim's mixer: a weight built from parameters on every call (stack, exp) before a matmul."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.randn(8, 8)), torch.nn.Parameter(torch.randn(8, 8))

    def forward(self, x):
        w = torch.stack([self.a, self.b]).exp()
        return x @ w[0] + x @ w[1]


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_inductor_compile_really_folds_the_weights(freeze):
    """With freezing the parameters are constants of the compiled graph: an in-place change after compiling
    does not reach the compiled output (it does without freezing, and in eager). Passing freezing as a
    torch.compile option alone left them graph inputs (compiler.FreezingCompile says why)."""
    torch._dynamo.reset()
    model, x = _Stacked().eval(), torch.randn(4, 8)
    with torch.inference_mode():
        compiled = compiler.compile_model(model, "default", "inductor", freeze=freeze)
        before = compiled(x)
        torch.testing.assert_close(before, model(x))
    with torch.no_grad():
        model.a.mul_(2)
    with torch.inference_mode():
        after, eager = compiled(x), model(x)
    torch._dynamo.reset()
    assert not torch.allclose(eager, before)
    if freeze:
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    else:
        torch.testing.assert_close(after, eager)


def test_reset_releases_a_frozen_compile_constants():
    """A frozen compile's constants (here the weights cast to bf16 under autocast) live in inductor's generated
    module; after the case (model deleted, compiler.reset()) no tensor of theirs may stay alive: on the H200 they
    had added 11-18 MiB per compiled case to every later case's memory."""
    import gc

    class TwoLinear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = torch.nn.Linear(24, 40), torch.nn.Linear(40, 8)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    def live_casts() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects()
                   if isinstance(o, torch.Tensor) and o.dtype == torch.bfloat16 and tuple(o.shape) == (40, 24))

    compiler.reset()
    model = TwoLinear().eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        compiled = compiler.compile_model(model, "default", "inductor", freeze=True)
        compiled(torch.randn(4, 24))
    assert live_casts() == 1  # the folded bf16 copy of first.weight
    del compiled, model
    compiler.reset()
    assert live_casts() == 0


def test_x_proj_reorder_keeps_the_official_rows_and_zero_pads():
    from vimbench.layout import XDblLayout

    lay = XDblLayout(dt_rank=3, d_state=4)
    w = torch.arange((3 + 8) * 5, dtype=torch.float32).view(11, 5)
    out = lay.reorder(w)
    assert out.shape == (lay.width, 5)
    torch.testing.assert_close(out[lay.B], w[3:7], rtol=0, atol=0)
    torch.testing.assert_close(out[lay.C], w[7:11], rtol=0, atol=0)
    torch.testing.assert_close(out[lay.dt], w[:3], rtol=0, atol=0)
    assert not out[11:].any()


def test_results_from_before_the_compile_axis_still_load(tmp_path):
    """Older files stored CUDA-graph replays as cuda_graphs: true; they load as compile cuda-graphs, resume
    correctly, and their recorded sweep reruns as such."""
    path = tmp_path / "old.jsonl"
    old_sweep = {"models": ["vim_t"], "res": [224], "batch": [1], "dtype": ["bf16"], "attn": ["sdpa"],
                 "backend": ["triton"], "device": "cuda", "mode": "infer", "warmup": 3, "iters": 10,
                 "cuda_graphs": True, "h2d": False}
    rows = [{"kind": "header", "schema": "vimbench.results/1", "run_id": "old", "sweep": old_sweep},
            {"kind": "case", "model": "vim_t", "res": 224, "batch": 1, "dtype": "bf16", "implementation": "triton",
             "attn": None, "device": "cuda", "mode": "infer", "cuda_graphs": True, "h2d": False, "status": "ok",
             "fps": 555.0},
            {"kind": "case", "model": "vim_t", "res": 224, "batch": 1, "dtype": "bf16", "implementation": "triton",
             "attn": None, "device": "cuda", "mode": "infer", "cuda_graphs": False, "h2d": False, "status": "ok",
             "fps": 70.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = load_results(path)
    assert list(df["compile"]) == ["cuda-graphs", "none"]
    assert key_of_row(rows[1]).compile == "cuda-graphs" and key_of_row(rows[2]).compile == "none"
    graphs = CaseKey("vim_t", 224, 1, "bf16", "triton", None, "cuda", compile="cuda-graphs")
    assert graphs in ResultsFile(path).done_keys()
    config, _ = sweeps.resolve_config(None, {}, cuda_available=False, resume=path, plan_only=True)
    assert config.compile == ("cuda-graphs",)


def test_legacy_cuda_graphs_switch_is_the_cuda_graphs_mode_and_does_not_mix_with_a_compile_list():
    values = {"models": "vim_t", "res": 224, "batch": 1, "backend": "triton", "device": "cuda", "cuda_graphs": True}
    assert sweeps.make_config(values, cuda_available=False, plan_only=True).compile == ("cuda-graphs",)
    with pytest.raises(VimbenchError, match="cuda_graphs is compile cuda-graphs now"):
        sweeps.make_config({**values, "compile": "default"}, cuda_available=False, plan_only=True)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_vim_triton_compiles_on_the_gpu_and_matches_eager(mode):
    """Inductor on the Vim Triton backend: the measured path of the compile sweep, checked for its numbers."""
    key = CaseKey("vim_test", 64, 2, "bf16", "triton", None, "cuda", compile=mode)
    result = run_case(key, warmup=3, iters=5)
    assert result.status == "ok", result.error
    assert result.compile_backend == "inductor" and result.compile_settings is not None
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=64, backend="triton").cuda().eval()
    images = torch.randn(2, 3, 64, 64, device="cuda")
    compiler.reset()
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            eager = model(images).float()
            compiled = compiler.compile_model(model, mode, freeze=True)  # as the sweep compiles inference
            for _ in range(3):  # reduce-overhead records its graph on a later call
                out = compiled(images).float()
    finally:
        compiler.reset()
    torch.testing.assert_close(out, eager, rtol=2e-2, atol=2e-2)
