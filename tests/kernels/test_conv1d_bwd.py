"""Backward of the Triton bidirectional conv1d + SiLU vs torch.autograd through the float64 reference."""
from __future__ import annotations

import pytest
import torch

from kernels.conv1d.reference import conv1d_silu_bidir_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.conv1d.op")


# Layouts of (x, dout): "model" is training's (x a channel-last view of xz, dout laid out (B, L, 2, E) as the
# forward writes it): the token-walking rows kernel. The others take the tile kernel.
LAYOUTS = {"model": (True, True), "x_channel_last": (True, False), "token_contiguous": (False, False)}


def make_inputs(batch, channels, length, channel_last, dtype=torch.float32, device="cpu", seed=0, width=4,
                dout_channel_last=False):
    """x as the mixer passes it: a (batch, E, L) view of in_proj's output, channel-last, or token-contiguous;
    dout (2, batch, E, L), laid out (batch, L, 2, E) in memory with dout_channel_last."""
    g = torch.Generator().manual_seed(seed)
    if channel_last:
        x = torch.randn(batch, length, 2 * channels, generator=g)[..., :channels].transpose(1, 2)
    else:
        x = torch.randn(batch, 2 * channels, length, generator=g)[:, :channels]
    w = torch.randn(2, channels, width, generator=g) * 0.5
    b = torch.randn(2, channels, generator=g) * 0.5
    dout = torch.randn(2, batch, channels, length, generator=g)
    if dout_channel_last:
        dout = dout.permute(1, 3, 0, 2).contiguous().permute(2, 0, 3, 1)
    return x.to(device=device, dtype=dtype), w.to(device), b.to(device), dout.to(device)


def grads_f64(x, w, b, dout):
    """dL/dx, dL/dweight, dL/dbias of L = <dout, out> through the reference, in float64."""
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    conv1d_silu_bidir_ref(x64, w64, b64).backward(dout.double())
    return x64.grad, w64.grad, None if b is None else b64.grad


def kernel_for(x, dout, width=4):
    """The kernel the launcher picks for these inputs (the interpreter's config)."""
    from kernels.conv1d.bwd import conv1d_bwd_launch_config, is_channel_last

    batch, channels, length = x.shape
    return conv1d_bwd_launch_config(batch, channels, length, width, is_channel_last(x, dout), interpreted=True).kernel


def test_launch_config_picks_the_rows_kernel_for_the_model_layout(op):
    x, _, _, dout = make_inputs(2, 20, 37, True, dout_channel_last=True)
    assert kernel_for(x, dout) == "_conv1d_silu_bidir_bwd_rows_kernel"
    x, _, _, dout = make_inputs(2, 20, 37, True)
    assert kernel_for(x, dout) == "_conv1d_silu_bidir_bwd_kernel"  # dout token-contiguous
    x, _, _, dout = make_inputs(2, 20, 37, True, dout_channel_last=True, width=3)
    assert kernel_for(x, dout, width=3) == "_conv1d_silu_bidir_bwd_kernel"  # the rows kernel is K = 4 only


# Interpreter tiles: rows kernel 16-channel blocks and 8-token chunks, tile kernel 16 x 8 tiles in 16-token chunks.
# 7 and 20 channels: one and two channel blocks, the last one part-masked. L = 1..5: the whole sequence inside
# one 7-token window (both paddings at once); 37 and 197: chunk edges inside the windows, a part-filled last chunk.
# L = 197 for the model layout only (interpreter time).
@pytest.mark.parametrize("layout,length", [(layout, length) for layout in LAYOUTS for length in (1, 2, 3, 4, 5, 37)]
                         + [("model", 197)])
def test_conv1d_backward_matches_f64_autograd(op, device, layout, length):
    channel_last, dout_channel_last = LAYOUTS[layout]
    channels = 20 if length >= 37 else 7
    x, w, b = make_inputs(2, channels, length, channel_last, device=device)[:3]
    dout = make_inputs(2, channels, length, channel_last, device=device, seed=1,
                       dout_channel_last=dout_channel_last)[3]
    for bias in (b, None) if length in (5, 37) else (b,):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        bg = None if bias is None else bias.clone().requires_grad_()
        out = op.conv1d_silu_bidir(xg, wg, bg)
        out.backward(dout)
        dx64, dw64, db64 = grads_f64(x, w, bias, dout)
        assert xg.grad.shape == x.shape and xg.grad.dtype == x.dtype
        torch.testing.assert_close(xg.grad.double(), dx64, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(wg.grad.double(), dw64, rtol=1e-5, atol=1e-5)
        if bias is not None:
            torch.testing.assert_close(bg.grad.double(), db64, rtol=1e-5, atol=1e-5)


def test_conv1d_backward_kernel_direct(op, device):
    """bwd.conv1d_silu_bidir_bwd itself: dx keeps x's channel-last layout; no dbias without a bias; any dout
    strides (here the (B, L, 2, E) layout the forward writes)."""
    from kernels.conv1d.bwd import conv1d_silu_bidir_bwd

    x, w, b, dout_cl = make_inputs(3, 9, 11, True, device=device, dout_channel_last=True)
    assert kernel_for(x, dout_cl) == "_conv1d_silu_bidir_bwd_rows_kernel"
    dx, dw, db = conv1d_silu_bidir_bwd(dout_cl, x, w, None)
    assert db is None and dx.stride(1) == 1
    dx64, dw64, _ = grads_f64(x, w, None, dout_cl)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw.double(), dw64, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="dout must be"):
        conv1d_silu_bidir_bwd(dout_cl[:, :, :8], x, w, b)


def test_conv1d_backward_other_widths_take_the_tile_kernel(op, device):
    from kernels.conv1d.bwd import conv1d_silu_bidir_bwd

    x, w, b, dout = make_inputs(2, 7, 13, True, device=device, width=3, dout_channel_last=True)
    dx, dw, db = conv1d_silu_bidir_bwd(dout, x, w, b)
    dx64, dw64, db64 = grads_f64(x, w, b, dout)
    for got, want in ((dx, dx64), (dw, dw64), (db, db64)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["model", "token_contiguous"])
def test_conv1d_backward_is_deterministic(op, device, layout):
    channel_last, dout_channel_last = LAYOUTS[layout]
    # 21 tokens: three rows-kernel chunks, two tile-kernel chunks; 20 channels: two channel blocks
    x, w, b, dout = make_inputs(2, 20, 21, channel_last, device=device, dout_channel_last=dout_channel_last)
    from kernels.conv1d.bwd import conv1d_silu_bidir_bwd

    first = conv1d_silu_bidir_bwd(dout, x, w, b)
    second = conv1d_silu_bidir_bwd(dout, x, w, b)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@pytest.mark.parametrize("with_bias", [True, False])
def test_conv1d_custom_op_opcheck(op, device, with_bias):
    x, w, b = make_inputs(2, 6, 5, True, device=device)[:3]
    args = (x.requires_grad_(), w.requires_grad_(), b.requires_grad_() if with_bias else None)
    torch.library.opcheck(torch.ops.vimbench.conv1d_silu_bidir.default, args)
    for dout_channel_last in (True, False):  # the rows kernel, the tile kernel
        dout = make_inputs(2, 6, 5, True, device=device, dout_channel_last=dout_channel_last)[3]
        torch.library.opcheck(torch.ops.vimbench.conv1d_silu_bidir_bwd.default,
                              (dout, x.detach(), w.detach(), b if with_bias else None),
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,channels,length", [(4, 384, 197), (8, 384, 6085), (4, 768, 577), (4, 100, 300),
                                                    (2, 384, 1025)])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_conv1d_backward_gpu(op, dtype, batch, channels, length, layout):
    channel_last, dout_channel_last = LAYOUTS[layout]
    x, w, b, dout = make_inputs(batch, channels, length, channel_last, dtype=dtype, device="cuda",
                                dout_channel_last=dout_channel_last)
    dout = dout.to(dtype)
    xg, wg, bg = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    op.conv1d_silu_bidir(xg, wg, bg).backward(dout)
    dx64, dw64, db64 = grads_f64(x, w, b, dout)
    # plain PyTorch at the same precision: autograd through the reference on the low-precision inputs
    xp, wp, bp = x.clone().requires_grad_(), w.clone().requires_grad_(), b.clone().requires_grad_()
    conv1d_silu_bidir_ref(xp, wp, bp).backward(dout)
    assert_close_to_f64(xg.grad, dx64, dtype, xp.grad)
    # dweight / dbias sum over batch x L terms: compare relative to their scale
    scale_w, scale_b = dw64.abs().max().item(), db64.abs().max().item()
    torch.testing.assert_close(wg.grad.double() / scale_w, dw64 / scale_w, rtol=0, atol=1e-4)
    torch.testing.assert_close(bg.grad.double() / scale_b, db64 / scale_b, rtol=0, atol=1e-4)


@pytest.mark.gpu
def test_conv1d_backward_gpu_is_deterministic(op):
    from kernels.conv1d.bwd import conv1d_silu_bidir_bwd

    x, w, b, dout = make_inputs(8, 384, 6085, True, dtype=torch.bfloat16, device="cuda", dout_channel_last=True)
    dout = dout.to(torch.bfloat16)
    first = conv1d_silu_bidir_bwd(dout, x, w, b)
    second = conv1d_silu_bidir_bwd(dout, x, w, b)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


def test_backward_reference_twin_has_the_launchers_contract(op, device):
    from kernels.conv1d.bwd import conv1d_silu_bidir_bwd
    from kernels.conv1d.reference import conv1d_silu_bidir_bwd_ref

    x, w, b, dout = make_inputs(2, 5, 9, True, device=device, dout_channel_last=True)
    for bias in (b, None):
        got = conv1d_silu_bidir_bwd(dout, x, w, bias)
        want = conv1d_silu_bidir_bwd_ref(dout, x, w, bias)
        assert (got[2] is None) == (want[2] is None) == (bias is None)
        for g, r in zip(got, want):
            if r is not None:
                assert g.shape == r.shape and g.dtype == r.dtype
                torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
