"""The scan with dt_proj fused (`bimamba_scan(..., dt_proj=W)`: delta computed per token from the low-rank dt)
against the reference, which computes delta = W @ dt_low first and runs the plain scan. fp32 under the
interpreter on CPU; bf16/fp32 at the Vim-Ti/S/B shapes on a GPU."""
from __future__ import annotations

import pytest
import torch

from kernels.launch import call_replay
from kernels.selective_scan.reference import bimamba_scan_ref
from _tolerances import TOL, assert_close_to_f64

N_STATE = 16


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.selective_scan.op")


def fused_inputs(batch, channels, length, rank, dtype=torch.float32, device="cpu", seed=0, x_dbl_dtype=None):
    """Direction-stacked inputs as the Vim mixer passes them on the fused path: u channel-last, z a view of
    xz, B, C and the low-rank dt views of one x_dbl buffer in XDblLayout order [B | C | dt | pad], and dt_proj a
    (2, E, R) view of the stacked (2, R, E) weight. Weights drawn like the model's init (uniform +-R^-0.5), the
    bias around softplus^-1 of small steps, so Delta is small and positive."""
    from vimbench.layout import XDblLayout

    lay = XDblLayout(dt_rank=rank, d_state=N_STATE)
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, length, 2 * channels, generator=g)
    x_dbl = torch.randn(2, batch, length, lay.width, generator=g)
    A = -(torch.arange(1, N_STATE + 1).float().repeat(2, channels, 1)
          * (1 + 0.1 * torch.rand(2, channels, N_STATE, generator=g)))
    weight = (torch.rand(2, rank, channels, generator=g) * 2 - 1) * rank ** -0.5
    cast = lambda t, dt=dtype: t.to(device=device, dtype=dt)  # noqa: E731
    x_dbl = cast(x_dbl, x_dbl_dtype or dtype)
    return dict(u=cast(torch.randn(2, batch, length, channels, generator=g)).transpose(2, 3),
                delta=x_dbl[..., lay.dt].transpose(2, 3), A=A.to(device),
                B=x_dbl[..., lay.B].transpose(2, 3), C=x_dbl[..., lay.C].transpose(2, 3),
                D=torch.randn(2, channels, generator=g).to(device), z=cast(xz)[..., channels:].transpose(1, 2),
                delta_bias=(torch.rand(2, channels, generator=g) * 2.0 - 4.0).to(device),
                dt_proj=cast(weight).transpose(1, 2))


def unfused(x, precision=torch.float32):
    """The same call with delta computed first (what the model does without fusion), in `precision`."""
    delta = torch.einsum("der,dbrl->dbel", x["dt_proj"].to(precision), x["delta"].to(precision))
    return {**{k: v for k, v in x.items() if k != "dt_proj"}, "delta": delta}


def _check_fused(op, x, combine, in_place=False):
    ref = bimamba_scan_ref(**unfused(x), combine=combine)
    if in_place:
        u = x["u"].clone()
        out = op.bimamba_scan(**{**x, "u": u}, combine=False, out=u)
        assert out.data_ptr() == u.data_ptr()
    else:
        out = op.bimamba_scan(**x, combine=combine)
    assert out.shape == ref.shape and out.dtype == x["u"].dtype
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    assert not torch.allclose(ref, torch.zeros_like(ref)), "a vacuous comparison"


# L = 1, 2, 3 end inside the masked last trips; 37 and 197 (Vim at 224 px) run the unmasked main loop; 13
# channels leave a channel mask in the interpreter's 8-wide blocks.
@pytest.mark.parametrize("length", [1, 2, 3, 37, 197])
@pytest.mark.parametrize("form", ["combined", "halves", "halves_over_u"])
def test_fused_dt_proj_matches_reference_vim_ti_rank(op, device, length, form):
    x = fused_inputs(1, 13, length, rank=12, device=device)
    _check_fused(op, x, combine=form == "combined", in_place=form == "halves_over_u")


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("length", [3, 37])
@pytest.mark.parametrize("form", ["combined", "halves_over_u"])
def test_fused_dt_proj_small_ranks(op, device, rank, length, form):
    x = fused_inputs(2, 13, length, rank=rank, device=device, seed=rank)
    _check_fused(op, x, combine=form == "combined", in_place=form == "halves_over_u")


# Blocks of 4 tokens: L = 1 and 5 end inside a block, 37 crosses nine; 13 channels leave a masked channel block;
# ranks 12 (Vim-Ti: a 16-wide rank tile, 4 of it masked) and 3.
@pytest.mark.parametrize("rank", [12, 3])
@pytest.mark.parametrize("length", [1, 5, 37])
@pytest.mark.parametrize("form", ["combined", "halves_over_u"])
def test_fused_dt_proj_in_token_blocks(op, device, monkeypatch, rank, length, form):
    """The small-grid token-block scan with dt_proj fused (each block's (R, T) low-rank rows times the program's
    (R, C) slice of dt_proj) gives the reference's output."""
    from kernels.selective_scan import fwd

    monkeypatch.setattr(fwd, "INTERPRETED_TOKEN_BLOCK", 4)
    assert fwd.scan_launch_config(1, 13, 2, interpreted=True, dt_rank=rank).kernel == "_scan_blocks_kernel"
    x = fused_inputs(1, 13, length, rank=rank, device=device, seed=rank + length)
    _check_fused(op, x, combine=form == "combined", in_place=form == "halves_over_u")


@pytest.mark.parametrize("form", ["combined", "halves"])
def test_fused_dt_proj_in_token_blocks_without_bias_and_optional_inputs(op, device, monkeypatch, form):
    from kernels.selective_scan import fwd

    monkeypatch.setattr(fwd, "INTERPRETED_TOKEN_BLOCK", 8)
    x = fused_inputs(2, 8, 11, rank=5, device=device, seed=9)
    x["delta_bias"] = None
    _check_fused(op, x, combine=form == "combined")
    x.update(D=None, z=None)
    _check_fused(op, x, combine=form == "combined")


@pytest.mark.parametrize("form", ["combined", "halves"])
def test_fused_dt_proj_without_bias_and_optional_inputs(op, device, form):
    x = fused_inputs(2, 8, 9, rank=12, device=device, seed=5)
    x["delta_bias"] = None
    _check_fused(op, x, combine=form == "combined")
    x.update(D=None, z=None)
    _check_fused(op, x, combine=form == "combined")


@pytest.mark.parametrize("form", ["combined", "halves_over_u"])
def test_chunk_parallel_path_computes_delta_first(op, device, form):
    """Where the launcher picks the chunk-parallel passes (forced here: split=8), which do not fuse dt_proj, it
    computes delta first: same result as the reference."""
    from kernels.selective_scan import fwd

    x = fused_inputs(1, 13, 37, rank=12, device=device, seed=7)
    ref = bimamba_scan_ref(**unfused(x), combine=form == "combined")
    if form == "combined":
        out = fwd.bimamba_scan(**x, split=8)
    else:
        u = x["u"].clone()
        out = fwd.bimamba_scan(**{**x, "u": u}, combine=False, out=u, split=8)
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)


def test_reference_takes_dt_proj_too():
    """The reference's fused signature computes delta first: same result as the unfused call."""
    x = fused_inputs(1, 5, 7, rank=3)
    for combine in (True, False):
        torch.testing.assert_close(bimamba_scan_ref(**x, combine=combine),
                                   bimamba_scan_ref(**unfused(x), combine=combine), rtol=0, atol=0)


def test_fused_dt_proj_bad_inputs_raise(op, device):
    x = fused_inputs(1, 8, 5, rank=3, device=device)
    with pytest.raises(ValueError, match="dt_proj must be"):
        op.bimamba_scan(**{**x, "dt_proj": x["dt_proj"][:, :4]})
    with pytest.raises(ValueError, match="low-rank dt"):
        op.bimamba_scan(**unfused(x), dt_proj=x["dt_proj"])  # a channel delta where the low-rank one belongs
    with pytest.raises(ValueError, match="low-rank delta"):
        op.bimamba_scan(**x, combine=False, out=_aliasing_out(x))


def _aliasing_out(x):
    """A halves buffer in the storage of the low-rank delta (x_dbl), which every lane reads."""
    x_dbl = torch.empty(0, dtype=x["u"].dtype, device=x["u"].device).set_(x["delta"].untyped_storage())
    return x_dbl[:x["u"].numel()].view(x["u"].shape)


def test_fused_dt_proj_is_refused_under_autograd(op, device):
    x = fused_inputs(1, 8, 3, rank=3, device=device)
    x["dt_proj"] = x["dt_proj"].detach().requires_grad_()
    with pytest.raises(NotImplementedError, match="no backward"):
        op.bimamba_scan(**x)


def test_fused_dt_proj_custom_ops_opcheck(op, device):
    """Schemas and fakes of both custom ops with the dt_proj argument (what torch.compile traces)."""
    x = fused_inputs(1, 6, 3, rank=3, device=device)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan.default, (*args, True, True, x["dt_proj"]))
    over_u = x["u"].clone()
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan_halves_.default,
                          (over_u, *args[1:], True, over_u, x["dt_proj"]))


# ---- GPU: the model shapes -------------------------------------------------------------------------------------

def _ref64(x):
    return bimamba_scan_ref(**{k: (v.double() if torch.is_tensor(v) else v)
                               for k, v in unfused(x, torch.float64).items()}, combine=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels,length", [(384, 197), (384, 6085), (768, 6085), (1536, 1025)])
def test_fused_dt_proj_gpu(op, dtype, channels, length):
    """Vim-Ti/S/B widths (R = 12, 24, 48); x_dbl in fp32 as the bf16 model's x_proj writes it. Against a float64
    reference; for bf16 also no worse than twice the unfused path's error (delta rounded to bf16 by its GEMM)."""
    rank = {384: 12, 768: 24, 1536: 48}[channels]
    x = fused_inputs(2, channels, length, rank, dtype=dtype, device="cuda", x_dbl_dtype=torch.float32)
    ref64 = _ref64(x)
    halves = op.bimamba_scan(**x, combine=False)
    combined = op.bimamba_scan(**x)
    plain = op.bimamba_scan(**unfused(x, dtype))  # the unfused Triton path, delta in the activation dtype
    assert halves.dtype == dtype and combined.dtype == dtype
    assert_close_to_f64(combined, ref64, dtype, plain)
    assert_close_to_f64(halves.double().sum(0), ref64, dtype, plain)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,channels,length", [(1, 384, 197), (8, 384, 197), (1, 768, 197), (1, 1536, 197),
                                                   (2, 384, 1025)])
def test_fused_dt_proj_token_blocks_gpu(op, monkeypatch, dtype, batch, channels, length):
    """Small grids (batch 1-8), where the fused scan runs the token-block kernel, at the Vim-Ti/S/B ranks
    (12, 24, 48: rank tiles of 16, 32, 64; Vim-B's only with TOKEN_BLOCK_MAX_DT_RANK raised); x_dbl in fp32, as
    the bf16 model writes it."""
    from kernels.selective_scan import fwd

    monkeypatch.setattr(fwd, "TOKEN_BLOCK_MAX_DT_RANK", 64)
    rank = {384: 12, 768: 24, 1536: 48}[channels]
    assert fwd.scan_launch_config(batch, channels, 2, False, dt_rank=rank).kernel == "_scan_blocks_kernel"
    x = fused_inputs(batch, channels, length, rank, dtype=dtype, device="cuda", x_dbl_dtype=torch.float32)
    ref64 = _ref64(x)
    with call_replay(False):
        halves = fwd.bimamba_scan(**x, combine=False, split=0)
        combined = fwd.bimamba_scan(**x, split=0)
        plain = fwd.bimamba_scan(**unfused(x, dtype), split=0)
    assert_close_to_f64(combined, ref64, dtype, plain)
    assert_close_to_f64(halves.double().sum(0), ref64, dtype, plain)
