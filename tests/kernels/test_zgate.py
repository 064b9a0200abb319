"""The z gate fused with the halves' sum (kernels/zgate) vs its PyTorch reference and float64."""
from __future__ import annotations

import pytest
import torch

from kernels.zgate.reference import zgate_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.zgate.op")


def make_inputs(batch, channels, length, dim, dtype=torch.float32, device="cpu", halves=True, seed=0):
    """y laid out as the mixer lays it out: the halves (2, B, E, L) as a view of (B, L, 2, E) (the scan's output
    over u), or the combined (B, E, L) as a view of (B, L, E); h (B, L, D); z_weight a row slice of in_proj."""
    g = torch.Generator().manual_seed(seed)
    if halves:
        y = torch.randn(batch, length, 2, channels, generator=g).permute(2, 0, 3, 1)
    else:
        y = torch.randn(batch, length, channels, generator=g).transpose(1, 2)
    h = torch.randn(batch, length, dim, generator=g)
    in_proj = torch.randn(2 * channels, dim, generator=g) * dim ** -0.5
    cast = dict(device=device, dtype=dtype)
    return y.to(**cast), h.to(**cast), in_proj.to(**cast)[channels:]


def _f64(y, h, w):
    return zgate_ref(y.double(), h.double(), w.double())


@pytest.mark.parametrize("halves", [True, False])
@pytest.mark.parametrize("batch, channels, length, dim", [(1, 8, 1, 4), (2, 40, 37, 24), (3, 33, 5, 17)])
def test_zgate_matches_reference_fp32(op, device, halves, batch, channels, length, dim):
    """Channel counts and widths not multiples of the tiles (interpreter: 16 rows x 32 channels x 16 of D),
    token rows spanning images (b = m // L), one token."""
    y, h, w = make_inputs(batch, channels, length, dim, device=device, halves=halves)
    out = op.zgate(y, h, w)
    assert out.shape == (batch, length, channels) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out.double(), _f64(y, h, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_zgate_low_precision(op, device, dtype):
    y, h, w = make_inputs(2, 40, 19, 24, dtype=dtype, device=device)
    out = op.zgate(y, h, w)
    assert out.dtype == dtype
    assert_close_to_f64(out, _f64(y, h, w), dtype, zgate_ref(y, h, w))


def test_zgate_strided_inputs(op, device):
    """Token-contiguous halves and a transposed weight view: any strides."""
    y, h, w = make_inputs(2, 12, 9, 8, device=device)
    y_tok = y.contiguous()  # (2, B, E, L) with tokens contiguous
    w_t = w.t().contiguous().t()
    torch.testing.assert_close(op.zgate(y_tok, h, w_t).double(), _f64(y, h, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("halves", [True, False])
def test_zgate_writes_over_the_scan_output(op, device, halves):
    """out= lying over y's first direction (halves) or over the sum, element for element, as lean-gated eager
    inference passes it: the same values as a new buffer (each program reads its y tile before writing it; several
    programs, partial tiles); and the reference does the same."""
    y, h, w = make_inputs(2, 40, 37, 24, device=device, halves=halves)
    expected = op.zgate(y, h, w)
    over = (y[0] if halves else y).transpose(1, 2)
    assert op.zgate(y, h, w, out=over) is over
    torch.testing.assert_close(over, expected, rtol=0, atol=0)
    y, h, w = make_inputs(2, 40, 37, 24, halves=halves)
    over = (y[0] if halves else y).transpose(1, 2)
    expected = zgate_ref(y, h, w)
    assert zgate_ref(y, h, w, out=over) is over
    torch.testing.assert_close(over, expected, rtol=0, atol=0)


def test_zgate_refuses_out_buffers_that_would_race(op, device):
    """An out over y other than element for element (another program would read what it writes), over h, of
    the wrong shape or dtype: one clear ValueError each."""
    y, h, w = make_inputs(2, 40, 37, 24, device=device)
    with pytest.raises(ValueError, match="element for element"):  # the second direction: the check keeps
        op.zgate(y, h, w, out=y[1].transpose(1, 2))  # to the two maps named in fwd.check_out
    with pytest.raises(ValueError, match="element for element"):  # y's first element, rows of another stride
        op.zgate(y, h, w, out=torch.as_strided(y, (2, 37, 40), (y.stride(1), 40, 1)))
    with pytest.raises(ValueError, match="h or z_weight"):
        op.zgate(y, h, w, out=h[..., :1].expand(2, 37, 40))
    with pytest.raises(ValueError, match="out must be"):
        op.zgate(y, h, w, out=torch.empty(2, 37, 39, device=device))
    with pytest.raises(ValueError, match="out must be"):
        op.zgate(y, h, w, out=torch.empty(2, 37, 40, dtype=torch.float64, device=device))


def test_zgate_refuses_autograd_and_bad_shapes(op, device):
    y, h, w = make_inputs(1, 8, 3, 4, device=device)
    with pytest.raises(NotImplementedError, match="no backward"):
        op.zgate(y, h.requires_grad_(), w)
    h = h.detach()
    with pytest.raises(ValueError, match="z_weight must be"):
        op.zgate(y, h, w[:, :3])
    with pytest.raises(ValueError, match="halves"):
        op.zgate(y[:1], h, w)
    with pytest.raises(ValueError, match="share one dtype"):
        op.zgate(y, h, w.double())


def test_zgate_opcheck(op, device):
    """Schema and fake implementation (the output's shape, dtype and layout) for both forms."""
    for halves in (True, False):
        y, h, w = make_inputs(2, 8, 5, 4, device=device, halves=halves)
        torch.library.opcheck(torch.ops.vimbench.zgate.default, (y, h, w),
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch, channels, length, dim", [(8, 384, 197, 192), (2, 768, 577, 384),
                                                          (2, 1536, 197, 768), (1, 384, 6085, 192)])
def test_zgate_gpu(op, dtype, batch, channels, length, dim):
    """Vim-Ti/S/B shapes on the GPU: bf16 through tl.dot's tensor cores, fp32 with ieee precision (no TF32)."""
    for halves in (True, False):
        y, h, w = make_inputs(batch, channels, length, dim, dtype=dtype, device="cuda", halves=halves)
        assert_close_to_f64(op.zgate(y, h, w), _f64(y, h, w), dtype, zgate_ref(y, h, w))
