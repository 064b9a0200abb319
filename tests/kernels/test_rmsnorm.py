"""Triton fused residual add + RMSNorm vs the PyTorch reference."""
from __future__ import annotations

import pytest
import torch

from kernels.rmsnorm.reference import add_rmsnorm_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def norm():
    return pytest.importorskip("kernels.rmsnorm.op").add_rmsnorm


@pytest.mark.parametrize("shape", [(1, 1, 32), (2, 197, 32), (3, 5, 48), (7, 192)])
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("out_dtype", [None, torch.float32])
def test_add_rmsnorm_matches_reference_fp32(norm, device, shape, with_residual, out_dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(device)
    res = torch.randn(*shape, generator=g).to(device) if with_residual else None
    w = (1 + 0.1 * torch.randn(shape[-1], generator=g)).to(device)
    y, r = norm(x, res, w, 1e-5, out_dtype)
    y_ref, r_ref = add_rmsnorm_ref(x, res, w, 1e-5, out_dtype)
    assert y.dtype == y_ref.dtype and r.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(r, r_ref, rtol=0, atol=0)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_add_rmsnorm_strided_rows(norm, device):
    x = torch.randn(4, 10, 40, device=device)[:, ::2, :32]  # rows not contiguous
    w = torch.ones(32, device=device)
    y, r = norm(x, None, w)
    y_ref, r_ref = add_rmsnorm_ref(x, None, w)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("dim", [192, 384, 768])
def test_add_rmsnorm_gpu(norm, dtype, dim):
    x = torch.randn(8, 6085, dim, device="cuda", dtype=dtype)
    res = torch.randn(8, 6085, dim, device="cuda")
    w = 1 + 0.1 * torch.randn(dim, device="cuda")
    y, r = norm(x, res, w, 1e-5, dtype)
    y64, r64 = add_rmsnorm_ref(x.double(), res.double(), w.double(), 1e-5, torch.float64)
    torch.testing.assert_close(r.double(), r64.double(), rtol=1e-6, atol=1e-6)
    assert_close_to_f64(y, y64, dtype, add_rmsnorm_ref(x, res, w, 1e-5, dtype)[0])
