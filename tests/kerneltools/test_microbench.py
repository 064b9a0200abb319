"""The kernel microbenchmark's calls: every registered op runs on the inputs its entry builds (the model's
layouts), and the Triton op agrees with the torch reference on them (CPU: Triton under the interpreter)."""
from __future__ import annotations

import pytest
import torch

from vimbench.kerneltools import microbench as kb
from vimbench.kerneltools.registry import OpShape, get_op, op_names

TINY = OpShape(batch=2, channels=16, length=9)


@pytest.mark.parametrize("op", op_names())
def test_each_op_runs_on_its_benchmark_inputs(op):
    pytest.importorskip("triton")
    out_triton = kb.make_call(op, "triton", TINY, torch.float32, device="cpu")()
    out_torch = kb.make_call(op, "torch", TINY, torch.float32, device="cpu")()
    expected_shape = {"bimamba_scan": (2, 16, 9), "bimamba_scan_halves": (2, 2, 16, 9), "selective_scan": (2, 16, 9),
                      "bimamba_scan_dtproj": (2, 2, 16, 9),
                      "conv1d_silu_bidir": (2, 2, 16, 9), "zgate": (2, 9, 16),  # zgate: (B, L, E)
                      "x_proj_rows": (2, 18, 48),  # x_dbl (2, B * L, W)
                      "dt_softplus": (2, 18, 16)}  # delta (2, B * L, E)
    gradients = {"conv1d_silu_bidir_bwd": [(2, 16, 9), (2, 16, 4), (2, 16)],  # dx, dweight, dbias
                 "add_rmsnorm_bwd": [(2, 9, 8), (2, 9, 8), (8,)],  # dx, dresidual, dweight
                 # du, ddelta, dA, dB, dC, dD, dz, ddelta_bias
                 "bimamba_scan_bwd": [(2, 2, 16, 9), (2, 2, 16, 9), (2, 16, 16), (2, 2, 16, 9), (2, 2, 16, 9),
                                      (2, 16), (2, 16, 9), (2, 16)],
                 "conv_xproj": [(2, 2, 16, 9), (2, 18, 48)],  # not gradients: u and x_dbl (2, B * L, W)
                 "norm_in_proj": [(2, 9, 32), (2, 9, 8)]}  # not gradients: xz (B, L, 2E) and r (B, L, D)
    if op == "add_rmsnorm":
        assert out_triton[0].shape == (2, 9, 8)
    elif op in gradients:
        assert [tuple(t.shape) for t in out_triton] == gradients[op]
    else:
        assert out_triton.shape == expected_shape[op]
    torch.testing.assert_close(out_triton, out_torch, rtol=1e-4, atol=1e-4)


def test_scan_inputs_use_the_models_x_dbl_layout():
    from vimbench.layout import XDblLayout

    shape = OpShape(batch=1, channels=16, length=5)
    args = get_op("bimamba_scan_halves").inputs(shape, torch.bfloat16, "cpu")
    lay = XDblLayout(1, shape.d_state)
    assert args["combine"] is False
    assert args["B"].dtype == torch.float32, "16-bit activations get fp32 B and C, as x_proj writes them on a GPU"
    assert args["B"].stride(-1) == lay.width and args["B"].stride(-2) == 1
    assert args["C"].data_ptr() - args["B"].data_ptr() == lay.d_state * args["B"].element_size()


def test_shape_at_a_model():
    shape = OpShape.for_model("vim_t", 1248, 64)
    assert (shape.batch, shape.channels, shape.length, shape.d_model, shape.dt_rank) == (64, 384, 6085, 192, 12)


def test_traffic_counts_inputs_and_outputs_once():
    x = torch.zeros(4, 8)
    assert kb.traffic_bytes({"x": x, "eps": 1e-5}, (torch.zeros(4, 8, dtype=torch.bfloat16), x)) == \
        4 * 8 * (4 + 2 + 4)
