"""dt_proj fused with the dt bias and the softplus (kernels/dt_softplus) vs its PyTorch reference and float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.dt_softplus.reference import dt_softplus_ref


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.dt_softplus.op")


def make_inputs(rows, channels, rank, w_dtype=torch.float32, device="cpu", seed=0, representable=True):
    """dt as the mixer passes it: a (2, M, R) view of x_dbl's dt columns (row stride the x_dbl width, fp32);
    weight (2, R, E) in w_dtype (dt_proj_t), bias (2, E) fp32. representable: dt rounded to w_dtype first, because
    the interpreter's fp32 -> 16-bit cast does not round to nearest as the GPU's does (triton 3.6), so the product
    is compared exactly there and the rounding on the GPU (`test_dt_softplus_gpu`)."""
    g = torch.Generator().manual_seed(seed)
    x_dbl = torch.randn(2, rows, rank + 37, generator=g) * 2
    if representable:
        x_dbl = x_dbl.to(w_dtype).float()
    dt = x_dbl[..., 5:5 + rank]
    weight = torch.randn(2, rank, channels, generator=g) * rank ** -0.5
    bias = torch.randn(2, channels, generator=g) - 3  # softplus's both sides: deltas from ~0 to ~10
    return dt.to(device), weight.to(device=device, dtype=w_dtype), bias.to(device)


def _poly_error(out_dtype):
    """The short log1p fit's relative error where the kernel takes it (16-bit outputs), else 0."""
    from kernels.dt_softplus import fwd
    return fwd.LOG1P_ERROR_16BIT if fwd.short_log1p(out_dtype) else 0.0


def test_short_log1p_fit_is_within_its_stated_error():
    """The 16-bit outputs' degree-4 fit, evaluated as the kernel does (fp32 Horner on fp32 coefficients): y s(y)
    within LOG1P_ERROR_16BIT of log1p(y) relative on (0, 1], and well inside half an fp16 ulp (2^-11 relative)."""
    from kernels.dt_softplus import fwd
    y = torch.linspace(0, 1, 200_001, dtype=torch.float32)[1:]
    s = torch.zeros_like(y)
    for c in reversed(fwd.LOG1P_S):
        s = s * y + torch.tensor(c, dtype=torch.float32)
    rel = ((y * s).double() / torch.log1p(y.double()) - 1).abs().max().item()
    assert rel <= fwd.LOG1P_ERROR_16BIT < 2.0 ** -11 / 4


def _f64(dt, weight, bias):
    return F.softplus(torch.bmm(dt.to(weight.dtype).double(), weight.double()) + bias.double()[:, None, :])


@pytest.mark.parametrize("rows, channels, rank", [(1, 8, 1), (37, 40, 12), (17, 33, 24), (50, 64, 48), (3, 130, 5)])
def test_dt_softplus_matches_float64_fp32(op, device, rows, channels, rank):
    """Row and channel counts not multiples of the tiles (interpreter: 16 rows x 32 channels), ranks of Vim-Ti/S/B
    (12, 24, 48) and others (the rank tile is padded to a power of two of at least 16)."""
    dt, weight, bias = make_inputs(rows, channels, rank, device=device)
    out = op.dt_softplus(dt, weight, bias, torch.float32)
    assert out.shape == (2, rows, channels) and out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out.double(), _f64(dt, weight, bias), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, dt_softplus_ref(dt, weight, bias, torch.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("w_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
def test_dt_softplus_low_precision(op, device, w_dtype, out_dtype):
    """16-bit weights (the model's dt_proj under autocast): dt taken in their dtype, fp32 accumulation, one rounding
    to the output dtype: within half an output ulp (plus fp32 noise) of float64 on the same rounded operands on the
    GPU; one ulp under the interpreter, whose fp32 -> bf16 cast does not round to nearest."""
    dt, weight, bias = make_inputs(37, 40, 12, w_dtype=w_dtype, device=device)
    out = op.dt_softplus(dt, weight, bias, out_dtype)
    assert out.dtype == out_dtype and (out >= 0).all()
    exact = _f64(dt, weight, bias)
    ulp = torch.finfo(out_dtype).eps
    ulps = 0.5 if device == "cuda" else 1.0
    assert ((out.double() - exact).abs() <= (ulps * ulp + _poly_error(out_dtype) + 1e-6) * exact.abs() + 1e-7).all()
    torch.testing.assert_close(out, dt_softplus_ref(dt, weight, bias, out_dtype), rtol=ulp, atol=1e-6)


def test_dt_softplus_large_and_negative_pre_activations(op, device):
    """softplus far out on both sides: x itself above torch's threshold (20), ~e^x far below zero, never NaN."""
    dt = torch.zeros(2, 3, 1, device=device)
    weight = torch.zeros(2, 1, 4, device=device)
    bias = torch.tensor([[-80.0, -10.0, 25.0, 90.0], [0.0, 1.0, -1.0, 40.0]], device=device)
    out = op.dt_softplus(dt, weight, bias, torch.float32)
    expected = F.softplus(bias.double())[:, None, :].expand(2, 3, 4)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-30)


def test_dt_softplus_refuses_autograd_and_bad_arguments(op, device):
    dt, weight, bias = make_inputs(4, 8, 3, device=device)
    with pytest.raises(NotImplementedError, match="no backward"):
        op.dt_softplus(dt, weight.requires_grad_(), bias, torch.float32)
    weight = weight.detach()
    with pytest.raises(ValueError, match="weight must be"):
        op.dt_softplus(dt, weight[:, :2], bias, torch.float32)
    with pytest.raises(ValueError, match="both directions"):
        op.dt_softplus(dt[:1], weight, bias, torch.float32)
    with pytest.raises(ValueError, match="bias must be"):
        op.dt_softplus(dt, weight, bias[:, :5], torch.float32)
    with pytest.raises(ValueError, match="out_dtype"):
        op.dt_softplus(dt, weight, bias, torch.int32)
    with pytest.raises(ValueError, match="at least one rank"):
        op.dt_softplus(dt[..., :0], weight[:, :0], bias, torch.float32)


def test_dt_softplus_opcheck(op, device):
    """Schema and fake implementation (the output's shape, dtype and layout)."""
    dt, weight, bias = make_inputs(5, 8, 3, device=device)
    torch.library.opcheck(torch.ops.vimbench.dt_softplus.default, (dt, weight, bias, torch.float16),
                          test_utils=("test_schema", "test_faketensor"))


def test_row_tiles_per_program_keeps_the_grid_large():
    """The GPU's row tiles per program: MAX_ROW_TILES where the grid stays at MIN_PROGRAMS or more (Vim-Ti and
    Vim-B at 1248 px, batch 64: 16, as measured fastest), halved for smaller grids, 1 where one tile per program
    already leaves fewer; the launch config's grid covers every row tile exactly once."""
    from kernels.dt_softplus import fwd
    from kernels.runtime import cdiv

    assert (fwd.MAX_ROW_TILES, fwd.MIN_PROGRAMS) == (16, 2048)
    for rows, channels, expected in [(64 * 6085, 384, 16), (64 * 6085, 1536, 16), (64 * 197, 384, 1),
                                     (64 * 1297, 384, 2), (8 * 6085, 384, 2), (1, 384, 1)]:
        cfg = fwd.dt_softplus_launch_config(rows, channels, 12, interpreted=False)
        tiles, block_m = cfg.constexprs["ROW_TILES"], cfg.constexprs["BLOCK_M"]
        assert tiles == expected, (rows, channels, tiles)
        programs = cfg.grid[0] * cfg.grid[1] * cfg.grid[2]
        assert tiles == 1 or programs >= fwd.MIN_PROGRAMS
        assert tiles == fwd.MAX_ROW_TILES or cdiv(cdiv(rows, block_m), 2 * tiles) * cfg.grid[0] * 2 < fwd.MIN_PROGRAMS
        assert cfg.grid[1] * tiles >= cdiv(rows, block_m) > (cfg.grid[1] - 1) * tiles
    assert fwd.dt_softplus_launch_config(64 * 6085, 384, 12, interpreted=True).constexprs["ROW_TILES"] == 2


@pytest.mark.gpu
@pytest.mark.parametrize("rows, channels, rank", [(8 * 197, 384, 12), (2 * 577, 768, 24), (2 * 197, 1536, 48),
                                                  (6085, 384, 12), (16 * 6085, 1536, 48)])
def test_dt_softplus_gpu(op, rows, channels, rank):
    """Vim-Ti/S/B shapes on the GPU: bf16 weights through tl.dot's tensor cores with fp32 dt cast to bf16 (rounded
    to nearest, as the model's GEMM), the fp16 output the model stores; fp32 weights with ieee precision. The last
    shape runs 16 row tiles per program with a partial last program (1,522 row tiles)."""
    dt, weight, bias = make_inputs(rows, channels, rank, w_dtype=torch.bfloat16, device="cuda", representable=False)
    out = op.dt_softplus(dt, weight, bias, torch.float16)
    exact = _f64(dt, weight, bias)  # dt rounded to bf16 by torch, as the kernel must
    bound = 0.5 * torch.finfo(torch.float16).eps + _poly_error(torch.float16) + 1e-5
    assert ((out.double() - exact).abs() <= bound * exact.abs() + 1e-6).all()
    dt, weight, bias = make_inputs(rows, channels, rank, device="cuda", representable=False)
    torch.testing.assert_close(op.dt_softplus(dt, weight, bias, torch.float32).double(), _f64(dt, weight, bias),
                               rtol=1e-5, atol=1e-6)
