"""The mixer front (kernels/norm_in_proj: out_proj + residual add + RMSNorm + in_proj) vs its PyTorch reference
and float64."""
from __future__ import annotations

import pytest
import torch

from kernels.norm_in_proj.reference import norm_in_proj_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.norm_in_proj.op")


def make_inputs(batch, length, dim, channels, form="halves", residual=True, dtype=torch.float32, device="cpu",
                seed=0):
    """As the model passes them: form "halves", the previous scan's halves (B, L, 2E) (a view of (B, L, 2, E)) with
    out_proj's weight doubled along K; "combined", its combined output (B, L, E) as a view of (B, E, L) with the
    weight once; "input", the block input (B, L, D) without out_proj. residual fp32 (B, L, D) or None; in_proj
    (2E, D); the norm weight fp32."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, channels, generator=g) * channels ** -0.5
    if form == "halves":
        y, out_w = torch.randn(batch, length, 2, channels, generator=g).view(batch, length, 2 * channels), \
            torch.cat([weight, weight], 1)
    elif form == "combined":
        y, out_w = torch.randn(batch, channels, length, generator=g).transpose(1, 2), weight
    else:
        y, out_w = torch.randn(batch, length, dim, generator=g), None
    res = torch.randn(batch, length, dim, generator=g) if residual else None
    norm_w = 1 + 0.1 * torch.randn(dim, generator=g)
    in_w = torch.randn(2 * channels, dim, generator=g) * dim ** -0.5
    cast = dict(device=device, dtype=dtype)
    return (y.to(**cast), None if out_w is None else out_w.to(**cast),
            None if res is None else res.to(device), norm_w.to(device), in_w.to(**cast))


def _f64(y, out_w, res, norm_w, in_w):
    d = lambda t: None if t is None else t.double()  # noqa: E731
    return norm_in_proj_ref(d(y), d(out_w), d(res), d(norm_w), 1e-5, d(in_w))


@pytest.mark.parametrize("form", ["halves", "combined", "input"])
@pytest.mark.parametrize("batch, length, dim, channels, residual",
                         [(1, 1, 16, 8, False), (2, 37, 24, 40, True), (3, 5, 17, 33, True)])
def test_norm_in_proj_matches_reference_fp32(op, device, form, batch, length, dim, channels, residual):
    """D not a power of two, N = 2E and K not multiples of the tiles (interpreter: 16 rows x 32 outputs x 16 of
    K), token rows spanning images (b = m // L), one token; r stored once (by the first N tile's programs)."""
    x = make_inputs(batch, length, dim, channels, form, residual, device=device)
    xz, r = op.norm_in_proj(x[0], x[1], x[2], x[3], 1e-5, x[4])
    assert xz.shape == (batch, length, 2 * channels) and xz.dtype == torch.float32 and xz.is_contiguous()
    assert r.shape == (batch, length, dim) and r.dtype == torch.float32 and r.is_contiguous()
    xz64, r64 = _f64(*x)
    torch.testing.assert_close(r.double(), r64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xz.double(), xz64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_norm_in_proj_low_precision(op, device, dtype):
    """16-bit activations, as in bf16 inference: out_proj's output rounded to the activation dtype before the fp32
    add, h rounded before in_proj; within the dtype's tolerance of float64 and about as close as the per-op
    composition in the same dtype."""
    x = make_inputs(2, 21, 24, 40, "halves", True, dtype=dtype, device=device)
    xz, r = op.norm_in_proj(x[0], x[1], x[2], x[3], 1e-5, x[4])
    assert xz.dtype == dtype and r.dtype == torch.float32
    xz64, r64 = _f64(*x)
    plain_xz, plain_r = norm_in_proj_ref(x[0], x[1], x[2], x[3], 1e-5, x[4])
    assert_close_to_f64(r, r64, dtype, plain_r)
    assert_close_to_f64(xz, xz64, dtype, plain_xz)


def test_norm_in_proj_edge_sizes(op, device):
    """No tokens (empty outputs), and in_proj with no outputs: r is still made."""
    x = make_inputs(2, 3, 16, 8, "combined", True, device=device)
    xz, r = op.norm_in_proj(x[0][:, :0], x[1], x[2][:, :0], x[3], 1e-5, x[4])
    assert xz.shape == (2, 0, 16) and r.shape == (2, 0, 16)
    xz, r = op.norm_in_proj(x[0], x[1], x[2], x[3], 1e-5, x[4][:0])
    assert xz.shape == (2, 3, 0)
    torch.testing.assert_close(r.double(), _f64(*x)[1], rtol=1e-5, atol=1e-5)


def test_norm_in_proj_refuses_autograd_and_bad_input(op, device):
    y, out_w, res, norm_w, in_w = make_inputs(1, 4, 16, 4, "halves", True, device=device)  # K = 8 != D
    with pytest.raises(NotImplementedError, match="no backward"):
        op.norm_in_proj(y, out_w, res, norm_w, 1e-5, in_w.clone().requires_grad_())
    with pytest.raises(ValueError, match="out_w must be"):
        op.norm_in_proj(y, out_w[:, :3], res, norm_w, 1e-5, in_w)
    with pytest.raises(ValueError, match="without out_w"):
        op.norm_in_proj(y, None, res, norm_w, 1e-5, in_w)
    with pytest.raises(ValueError, match="residual must be fp32"):
        op.norm_in_proj(y, out_w, res.double(), norm_w, 1e-5, in_w)
    with pytest.raises(ValueError, match="in_w must be"):
        op.norm_in_proj(y, out_w, res, norm_w, 1e-5, in_w[:, :3])
    with pytest.raises(ValueError, match="share one dtype"):
        op.norm_in_proj(y, out_w.double(), res, norm_w, 1e-5, in_w)
    with pytest.raises(ValueError, match="share one dtype"):
        op.norm_in_proj(y, out_w, res, norm_w, 1e-5, in_w.bfloat16())
    xz, _ = op.norm_in_proj(res.bfloat16(), None, res, norm_w, 1e-5, in_w)  # no out_proj: any input dtype
    assert xz.dtype == in_w.dtype


def test_norm_in_proj_writes_given_buffers(op, device):
    """out=(xz, r): the results land in the caller's buffers (the front path reuses them layer after layer);
    buffers of another layout, dtype or device, one that overlaps an input, or half a pair are refused."""
    y, out_w, res, norm_w, in_w = make_inputs(2, 5, 16, 8, "halves", True, device=device)
    want_xz, want_r = op.norm_in_proj(y, out_w, res, norm_w, 1e-5, in_w)
    xz, r = torch.full_like(want_xz, float("nan")), torch.full_like(want_r, float("nan"))
    got = op.norm_in_proj(y, out_w, res, norm_w, 1e-5, in_w, out=(xz, r))
    assert got[0] is xz and got[1] is r
    assert torch.equal(xz, want_xz) and torch.equal(r, want_r)
    for bad, match in [((xz.transpose(0, 1).contiguous().transpose(0, 1), r), "must be"), ((xz.double(), r), "must be"),
                       ((xz, r[:1]), "must be"), ((xz, r, r), "must be None or 2"), ((xz, None), "must be None or 2"),
                       ((xz, res), "shares memory with an input")]:
        with pytest.raises(ValueError, match=match):
            op.norm_in_proj(y, out_w, res, norm_w, 1e-5, in_w, out=bad)


def test_norm_in_proj_opcheck(op, device):
    """Schema and fake implementation (the outputs' shapes, dtypes and layouts), with and without out_proj and
    residual."""
    for form, residual in (("halves", True), ("input", False)):
        x = make_inputs(2, 5, 16, 8, form, residual, device=device)
        torch.library.opcheck(torch.ops.vimbench.norm_in_proj.default, (x[0], x[1], x[2], x[3], 1e-5, x[4]),
                              test_utils=("test_schema", "test_faketensor"))


def test_norm_in_proj_allocation_twin(op, device):
    """vimbench.bench.live_memory's twin allocates what the op allocates (shapes, dtypes, strides), so that memory
    accounting follows the model's front path."""
    from vimbench.bench.live_memory import allocation_twin_ops

    x = make_inputs(2, 5, 16, 8, "halves", True, dtype=torch.bfloat16, device=device)
    got = op.norm_in_proj(x[0], x[1], x[2], x[3], 1e-5, x[4])
    twin = allocation_twin_ops().norm_in_proj(x[0], x[1], x[2], x[3], 1e-5, x[4])
    assert [(t.shape, t.dtype, t.stride()) for t in twin] == [(t.shape, t.dtype, t.stride()) for t in got]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch, length, dim, channels", [(1, 197, 192, 384), (8, 197, 192, 384),
                                                          (1, 197, 384, 768), (1, 197, 768, 1536)])
def test_norm_in_proj_gpu(op, dtype, batch, length, dim, channels):
    """Vim-Ti/S/B shapes on the GPU: bf16 through tl.dot's tensor cores, fp32 with ieee precision (no TF32)."""
    for form in ("halves", "combined", "input"):
        x = make_inputs(batch, length, dim, channels, form, form != "input", dtype=dtype, device="cuda")
        xz, r = op.norm_in_proj(x[0], x[1], x[2], x[3], 1e-5, x[4])
        xz64, r64 = _f64(*x)
        plain_xz, plain_r = norm_in_proj_ref(x[0], x[1], x[2], x[3], 1e-5, x[4])
        assert_close_to_f64(r, r64, dtype, plain_r)
        assert_close_to_f64(xz, xz64, dtype, plain_xz)
