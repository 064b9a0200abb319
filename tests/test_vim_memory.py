"""Vim's inference memory modes (`--vim-memory default,split,lean,lean-gated`): the same output, a lower estimated peak,
an axis of the sweep that reaches the model, and clear errors."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from vimbench.bench import sweep as sweeps
from vimbench.bench.grid import SweepConfig, expand_cases, parse_vim_memory
from vimbench.cli import app
from vimbench.errors import VimbenchError
from vimbench.models.registry import create_model
from vimbench.models.vim import MEMORY_MODES, set_memory_mode


def _outputs(backend: str, modes: tuple[str, ...], batch: int, res: int):
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=res, backend=backend).eval()
    images = torch.randn(batch, 3, res, res)
    out = {}
    with torch.inference_mode():
        for mode in modes:
            set_memory_mode(model, mode)
            out[mode] = model(images)
    return out


@pytest.mark.parametrize("backend, modes, batch, res", [
    ("torch", ("default", "split", "lean-gated"), 3, 32),
    ("triton", ("default", "split", "lean", "lean-gated"), 2, 16)])
def test_memory_modes_give_the_default_output(backend, modes, batch, res):
    """split reorders nothing but when z is made; lean computes delta inside the scan in fp32 (the GEMM path
    rounds it to the activation dtype; here fp32 throughout); lean-gated gates the ungated scan output with z
    made inside the zgate op (torch: its reference), so all match the default closely. triton runs under the
    interpreter at 2 tokens per image."""
    out = _outputs(backend, modes, batch, res)
    for mode in modes[1:]:
        torch.testing.assert_close(out[mode], out["default"], rtol=1e-5, atol=1e-5)


def test_create_model_sets_every_mixer_and_rejects_unknown_modes():
    for mode, flags in MEMORY_MODES.items():
        model = create_model("vim_test", img_size=32, backend="torch", vim_memory=mode)
        assert {(m.fuse_dt_proj, m.split_in_proj, m.gate_z) for m in (layer.mixer for layer in model.layers)} \
            == {flags}
    with pytest.raises(VimbenchError, match="unknown Vim memory mode 'tiny'.*default, split, lean, lean-gated"):
        create_model("vim_test", img_size=32, vim_memory="tiny")


def test_split_lowers_the_estimated_peak():
    """On the meta device with the Triton backend's allocations (Vim-Ti, 512 px, batch 16, bf16): split frees
    x before z exists, lean also drops the delta tensor, lean-gated the z tensor."""
    import vimbench.models.registry as registry
    from vimbench.bench.live_memory import vim_peak_bytes

    real = registry.create_model
    peaks = {}
    try:
        for mode in MEMORY_MODES:
            registry.create_model = lambda *a, _mode=mode, **k: real(*a, vim_memory=_mode, **k)
            peaks[mode] = vim_peak_bytes("vim_t", 512, 16, "bf16")
    finally:
        registry.create_model = real
    tokens = 16 * ((512 // 16) ** 2 + 1)
    assert peaks["default"] > peaks["split"] > peaks["lean"] > peaks["lean-gated"]
    # split: x (tokens, E) in bf16 is no longer alive beside u and z; lean: nor is delta (tokens, 2E)
    assert peaks["default"] - peaks["split"] >= 0.9 * tokens * 384 * 2
    assert peaks["split"] - peaks["lean"] >= 0.9 * tokens * 2 * 384 * 2
    # lean-gated: z (tokens, E) never exists; the peak moves from the z GEMM (u, x_dbl and z alive) to the conv
    # (x and u; x is z's size): x_dbl's bytes less (2 directions x 48 columns, 16-bit on the meta device)
    assert peaks["lean"] - peaks["lean-gated"] >= 0.9 * tokens * 2 * 48 * 2


def test_fp32_fusion_lowers_the_estimated_fp32_peak(monkeypatch):
    """The estimate runs fp32 forwards too (no autocast), and there the default hands dt_proj to the scan at any
    size where the scan runs in one pass (FUSE_DT_FP32): no (2, tokens, E) fp32 delta tensor. Vim-Ti, 512 px,
    batch 64 (65,600 token rows, above FUSE_DT_MAX_ROWS), fp32, and bf16 (unchanged)."""
    import vimbench.models.vim as vim
    from vimbench.bench.live_memory import vim_peak_bytes

    tokens = 64 * ((512 // 16) ** 2 + 1)
    assert tokens > vim.FUSE_DT_MAX_ROWS
    fused, bf16 = vim_peak_bytes("vim_t", 512, 64, "fp32"), vim_peak_bytes("vim_t", 512, 64, "bf16")
    monkeypatch.setattr(vim, "FUSE_DT_FP32", False)
    gemm = vim_peak_bytes("vim_t", 512, 64, "fp32")
    assert gemm - fused >= 0.9 * tokens * 2 * 384 * 4
    assert vim_peak_bytes("vim_t", 512, 64, "bf16") == bf16 < fused


def test_vim_memory_axis():
    assert parse_vim_memory("default, lean,default") == ("default", "lean")
    with pytest.raises(VimbenchError, match="vim memory mode"):
        parse_vim_memory("small")
    config = SweepConfig(models=("vim_t", "deit_t"), res=(1248,), batch=(64,), dtypes=("bf16",),
                         backends=("triton", "torch"), device="cuda", modes=("infer", "train"),
                         vim_memory=("default", "split", "lean", "lean-gated"))
    cases, dropped = expand_cases(config)
    vim_infer = sorted((c.implementation, c.vim_memory) for c in cases if c.model == "vim_t" and c.mode == "infer")
    assert vim_infer == [("torch", "default"), ("torch", "split"),
                         ("triton", "default"), ("triton", "lean"), ("triton", "lean-gated"), ("triton", "split")]
    assert {c.vim_memory for c in cases if c.mode == "train" or c.model == "deit_t"} == {"default"}
    whats = " | ".join(d.what for d in dropped)
    assert "vim-memory split,lean,lean-gated x deit_t" in whats
    assert "vim-memory lean,lean-gated x backend torch" in whats
    assert "x mode train" in whats


def test_sweep_records_the_mode_and_the_cli_rejects_a_bad_one(tmp_path):
    config = sweeps.make_config({"models": "vim_test", "res": 32, "batch": 2, "device": "cpu", "warmup": 1,
                                 "iters": 5, "vim_memory": "default,split"}, cuda_available=False)
    results = sweeps.run_sweep(config, out=tmp_path / "run.jsonl")
    assert [(r.key.vim_memory, r.status) for r in results] == [("default", "ok"), ("split", "ok")]
    assert "mem-split" in results[1].key.label()
    rows = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [r.get("vim_memory") for r in rows if r.get("kind") == "case"] == ["default", "split"]
    out = tmp_path / "bad.jsonl"
    result = CliRunner().invoke(app, ["sweep", "--models", "vim_test", "--res", "32", "--batch", "2", "--device",
                                      "cpu", "--vim-memory", "frugal", "--out", str(out)])
    assert result.exit_code == 2 and "vim memory mode" in result.output and not out.exists()


def test_rows_from_before_the_axis_key_as_default():
    """A row without vim_memory (older files), or with it None (a filled table column), keys as 'default', so
    resumes and comparisons match it with new rows, and labels stay as they were."""
    from vimbench.results import key_of_row

    row = {"model": "vim_t", "res": 224, "batch": 64, "dtype": "bf16", "implementation": "triton", "attn": None,
           "device": "cuda"}
    assert key_of_row(row) == key_of_row({**row, "vim_memory": None, "vim_slice": None}) \
        == key_of_row({**row, "vim_memory": "default"})
    assert key_of_row({**row, "vim_memory": None}).label() == "vim_t triton 224px b64 bf16 cuda"
    assert key_of_row({**row, "vim_memory": "lean"}).vim_memory == "lean"


@pytest.mark.gpu
def test_memory_modes_agree_on_the_gpu_in_bf16():
    """Vim-Ti at 224 px, batch 4, bf16 autocast on the Triton kernels: lean and lean-gated give the default's
    logits within bf16 rounding (their paths round z, delta and the gated sum at other points)."""
    torch.manual_seed(0)
    model = create_model("vim_t", img_size=224, backend="triton").cuda().eval()
    images = torch.randn(4, 3, 224, 224, device="cuda")
    out = {}
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for mode in ("default", "lean", "lean-gated"):
            set_memory_mode(model, mode)
            out[mode] = model(images).float()
    scale = out["default"].abs().max()
    for mode in ("lean", "lean-gated"):
        assert (out[mode] - out["default"]).abs().max() <= 0.03 * scale, mode


def test_traced_mixers_keep_one_in_proj_gemm(monkeypatch):
    """While torch.compile traces, split and lean run in_proj as one GEMM: inductor's freezing would merge the two
    GEMMs (shared input, constant weights) and copy the halves of its output for our ops."""
    model = create_model("vim_test", img_size=32, backend="torch", vim_memory="split")
    mixer = model.layers[0].mixer
    with torch.no_grad():
        assert mixer.splits_in_proj()
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not mixer.splits_in_proj()


def test_the_estimate_follows_the_gpus_dt_proj_choice():
    """The allocation twin answers whether an eager scan takes dt_proj as the scan does on a GPU of 132 SMs, not
    as the interpreter would (which never runs chunk-parallel): Vim-Ti at 512 px (1,025 tokens) runs chunked up
    to batch 21 there, so the mixer keeps the delta GEMM and its delta tensor."""
    from vimbench.bench.live_memory import allocation_twin_ops

    meta = torch.device("meta")
    twin = allocation_twin_ops()
    assert not twin.scan_takes_dt_proj(16, 384, 1025, 12, 16, meta), "chunk-parallel on 132 SMs"
    assert twin.scan_takes_dt_proj(24, 384, 1025, 12, 16, meta), "one pass from batch 22"
    assert twin.scan_takes_dt_proj(1, 384, 197, 12, 16, meta), "short sequences never chunk in eager calls"
    assert allocation_twin_ops(gpu_sms=8).scan_takes_dt_proj(16, 384, 1025, 12, 16, meta), "a small GPU: one pass"


@pytest.mark.parametrize("backend, batch, res", [("torch", 5, 32), ("triton", 3, 16)])
def test_lean_gated_makes_x_and_the_conv_in_slices_with_the_same_output(monkeypatch, backend, batch, res):
    """Eager lean-gated mixers make x = h W_x^T and the conv in slices of at most X_CONV_SLICE_ROWS token rows, each
    slice's conv writing its images' part of one u: with a limit that cuts the batch into uneven slices (5 images
    of 5 tokens in slices of 2, 2, 1; triton: 3 images of 2 tokens in 2 + 1), every mode still gives the default's
    output, the conv ran once per slice in lean-gated and once per layer in the others."""
    import vimbench.models.vim as vim

    model_tokens = (res // 16) ** 2 + 1
    monkeypatch.setattr(vim, "X_CONV_SLICE_ROWS", 2 * model_tokens)
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=res, backend=backend).eval()
    calls = []
    for layer in model.layers:
        def counted(*a, _conv=layer.mixer.ops.conv1d_silu_bidir, **k):
            calls.append(a[0].shape[0])  # the images of this call
            return _conv(*a, **k)
        layer.mixer.ops = dataclasses.replace(layer.mixer.ops, conv1d_silu_bidir=counted)
    images = torch.randn(batch, 3, res, res)
    out = {}
    with torch.inference_mode():
        for mode in ("default", "split", "lean-gated") if backend == "torch" else ("default", "lean", "lean-gated"):
            calls.clear()
            set_memory_mode(model, mode)
            out[mode] = model(images)
            per_layer = calls[:len(calls) // len(model.layers)]
            assert per_layer == ([batch] if mode != "lean-gated" else ([2, 2, 1] if batch == 5 else [2, 1])), mode
    for mode, value in out.items():
        torch.testing.assert_close(value, out["default"], rtol=1e-5, atol=1e-5, msg=mode)


def test_lean_gated_gates_over_the_scan_output_in_eager_calls(monkeypatch):
    """In eager lean-gated inference the gated sum is written over the scan's first half (zgate's out= lies over
    y[0] element for element), so the gate's output takes no memory of its own; traced calls keep the functional
    op."""
    model = create_model("vim_test", img_size=32, backend="torch", vim_memory="lean-gated").eval()
    mixer = model.layers[0].mixer
    seen = []

    def watched(y, h, w, out=None, _zgate=mixer.ops.zgate):
        seen.append((y, out))
        return _zgate(y, h, w, out)
    mixer.ops = dataclasses.replace(mixer.ops, zgate=watched)
    with torch.inference_mode():
        model(torch.randn(2, 3, 32, 32))
    (y, out), = seen
    assert out is not None and out.data_ptr() == y.data_ptr() and out.shape == (2, y.shape[-1], y.shape[-2])
    seen.clear()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with torch.inference_mode():
        mixer(torch.randn(2, 5, model.embed_dim))
    assert seen[0][1] is None


def test_the_conv_slices_lower_the_estimated_lean_gated_peak(monkeypatch):
    """On the meta device (Vim-Ti, 512 px, batch 16, bf16, lean-gated): slicing x and the conv into 4 lowers the
    estimated peak by at least half of x's bytes against one slice (x alive beside u was one of the two largest
    points; the gate's, written over u, is below it now)."""
    import vimbench.models.registry as registry
    import vimbench.models.vim as vim
    from vimbench.bench.live_memory import vim_peak_bytes

    real = registry.create_model
    monkeypatch.setattr(registry, "create_model", lambda *a, **k: real(*a, vim_memory="lean-gated", **k))
    tokens = 16 * ((512 // 16) ** 2 + 1)
    monkeypatch.setattr(vim, "X_CONV_SLICE_ROWS", 1 << 30)
    whole = vim_peak_bytes("vim_t", 512, 16, "bf16")
    monkeypatch.setattr(vim, "X_CONV_SLICE_ROWS", tokens // 4)
    sliced = vim_peak_bytes("vim_t", 512, 16, "bf16")
    assert whole - sliced >= 0.5 * tokens * 384 * 2


def test_the_reference_ops_refuse_an_out_they_would_broadcast_or_cast_into():
    """The torch backend's conv and gate take out= as the Triton ops do; an out of another shape or dtype raises
    instead of being filled by a broadcast or a silent cast."""
    from kernels.conv1d.reference import conv1d_silu_bidir_ref
    from kernels.zgate.reference import zgate_ref

    x, weight, bias = torch.randn(1, 4, 6), torch.randn(2, 4, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match="out must be"):
        conv1d_silu_bidir_ref(x, weight, bias, out=torch.empty(2, 3, 4, 6))
    with pytest.raises(ValueError, match="out must be"):
        conv1d_silu_bidir_ref(x, weight, bias, out=torch.empty(2, 1, 4, 6, dtype=torch.float64))
    y, h, z_weight = torch.randn(2, 1, 4, 6), torch.randn(1, 6, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="out must be"):
        zgate_ref(y, h, z_weight, out=torch.empty(2, 6, 4))
