"""Vim's batch slicing at inference (issue 12: the mixer's temporaries for a slice of the batch at a time): same
output, lower peak; and the live-bytes counter that estimates the peak from tensor sizes."""
from __future__ import annotations

import pytest
import torch

from vimbench.bench import sweep as sweeps
from vimbench.bench.grid import SweepConfig, expand_cases, parse_vim_slice
from vimbench.bench.live_memory import LiveBytes, vim_peak_bytes
from vimbench.errors import VimbenchError
from vimbench.models.registry import create_model


def _outputs(backend: str, batch: int, slices: tuple[int, ...], res: int = 32):
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=res, backend=backend).eval()
    images = torch.randn(batch, 3, res, res)
    out = {}
    with torch.inference_mode():
        for size in slices:
            for layer in model.layers:
                layer.mixer.batch_slice = size
            out[size] = model(images)
    return out


@pytest.mark.parametrize("backend, batch, slices, res", [("torch", 5, (0, 2, 4), 32), ("triton", 3, (0, 2), 16)])
def test_sliced_batch_gives_the_unsliced_output(backend, batch, slices, res):
    """Slices of 2 and 4 images (the last one shorter) against the whole batch; triton under the interpreter
    (2 tokens per image there: the interpreter's cost grows with every program it runs)."""
    out = _outputs(backend, batch, slices, res)
    for size in slices[1:]:
        torch.testing.assert_close(out[size], out[0], rtol=1e-5, atol=1e-5)


def test_slicing_is_inference_only():
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=32, backend="torch", batch_slice=1)
    images = torch.randn(2, 3, 32, 32)
    model(images).sum().backward()  # with autograd the batch goes through whole: gradients reach the weights
    assert model.layers[0].mixer.in_proj.weight.grad is not None
    with pytest.raises(ValueError, match="batch_slice must be >= 0"):
        create_model("vim_test", img_size=32, batch_slice=-1)


def test_live_bytes_counts_storages_until_their_last_view_dies():
    with LiveBytes() as mode:
        a = torch.empty(1000)              # 4000 bytes
        view = a[10:]                      # same storage: no new bytes
        b = torch.empty(500)               # 2000
        del a                              # the view keeps the storage alive
        c = torch.empty(250)               # 1000: live 7000
        del view, b
        d = torch.empty(100)               # 400: the first two storages are gone
    assert mode.peak == 7000 and mode.current == 1400
    assert c.numel() + d.numel() == 350


def test_the_peak_falls_with_the_slice():
    """Vim-Ti at 512 px, batch 16, bf16, on the meta device (sizes only): each halving of the slice lowers the
    peak, and the whole-batch peak holds at least the input and the mixer temporaries of all 16 images."""
    peaks = {s: vim_peak_bytes("vim_t", 512, 16, "bf16", batch_slice=s) for s in (0, 8, 4)}
    assert peaks[0] > peaks[8] > peaks[4]
    tokens = 16 * ((512 // 16) ** 2 + 1)
    images = 16 * 3 * 512 * 512 * 4
    # at inference on the triton allocations, at least in_proj's z half (tokens, E) and the conv output
    # (tokens, 2E), 16-bit (the default path also holds x and delta; the memory mode of set_dt_proj_fusion not)
    mixer = tokens * 384 * 2 * (1 + 2)
    assert peaks[0] > images + mixer
    # slicing 16 -> 8 images frees half of those temporaries, less the (tokens, D) output the sliced mixer fills
    assert peaks[0] - peaks[8] >= mixer / 2 - tokens * 192 * 2


def test_vim_slice_axis():
    assert parse_vim_slice("0,16, off") == (0, 16)
    with pytest.raises(VimbenchError, match="negative"):
        parse_vim_slice("-2")
    config = SweepConfig(models=("vim_t", "deit_t"), res=(1248,), batch=(8, 64), dtypes=("bf16",),
                         backends=("triton",), device="cuda", vim_slice=(0, 16))
    cases, dropped = expand_cases(config)
    vim = sorted((c.batch, c.vim_slice) for c in cases if c.model == "vim_t")
    assert vim == [(8, 0), (64, 0), (64, 16)]  # a slice of 16 at batch 8 is no slicing: run once, as 0
    assert {c.vim_slice for c in cases if c.model == "deit_t"} == {0}
    assert any("vim-slice" in d.what and "DeiT" in d.reason for d in dropped)


def test_sweep_records_the_slice(tmp_path):
    config = sweeps.make_config({"models": "vim_test", "res": 32, "batch": 3, "device": "cpu", "warmup": 1,
                                 "iters": 5, "vim_slice": "0,2"}, cuda_available=False)
    results = sweeps.run_sweep(config, out=tmp_path / "run.jsonl")
    assert [(r.key.vim_slice, r.status) for r in results] == [(0, "ok"), (2, "ok")]
    assert "slice2" in results[1].key.label()
