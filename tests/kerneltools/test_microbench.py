"""The kernel microbenchmark's calls: every op runs on the inputs it builds (the model's layouts), and the Triton
op agrees with the torch reference on them (CPU: Triton under the interpreter)."""
from __future__ import annotations

import pytest
import torch

from vimbench.kerneltools import microbench as kb


@pytest.mark.parametrize("op", kb.OPS)
def test_each_op_runs_on_its_benchmark_inputs(op):
    pytest.importorskip("triton")
    out_triton = kb.make_call(op, "triton", channels=16, length=9, batch=2, dtype=torch.float32, device="cpu")()
    out_torch = kb.make_call(op, "torch", channels=16, length=9, batch=2, dtype=torch.float32, device="cpu")()
    expected_shape = {"scan_bidir": (2, 16, 9), "scan_halves": (2, 2, 16, 9), "scan_fwd": (2, 16, 9),
                      "conv1d": (2, 2, 16, 9)}
    if op == "add_rmsnorm":
        assert out_triton[0].shape == (2, 9, 8)
    else:
        assert out_triton.shape == expected_shape[op]
    torch.testing.assert_close(out_triton, out_torch, rtol=1e-4, atol=1e-4)


def test_scan_inputs_use_the_models_x_dbl_layout():
    from vimbench.layout import XDblLayout

    args = kb._inputs("scan_halves", {"E": 16, "L": 5, "R": 1, "D": 8}, 1, torch.bfloat16, "cpu")
    lay = XDblLayout(1, kb.N_STATE)
    assert args["combine"] is False
    assert args["B"].dtype == torch.float32, "16-bit activations get fp32 B and C, as x_proj writes them on a GPU"
    assert args["B"].stride(-1) == lay.width and args["B"].stride(-2) == 1
    assert args["C"].data_ptr() - args["B"].data_ptr() == lay.d_state * args["B"].element_size()
