"""Triton bidirectional conv1d + SiLU vs the PyTorch reference."""
from __future__ import annotations

import pytest
import torch

from kernels.conv1d.reference import conv1d_silu_bidir_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def conv():
    return pytest.importorskip("kernels.conv1d.op").conv1d_silu_bidir


def make_inputs(batch, channels, length, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, 2 * channels, length, generator=g)  # x is a view of xz, as in the mixer
    w = torch.randn(2, channels, 4, generator=g) * 0.5
    b = torch.randn(2, channels, generator=g) * 0.1
    return xz[:, :channels].to(device=device, dtype=dtype), w.to(device), b.to(device)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 9, 197])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv1d_matches_reference_fp32(conv, device, length, with_bias):
    x, w, b = make_inputs(2, 7, length, device=device)  # 7 channels: not a multiple of BLOCK_E
    b = b if with_bias else None
    out = conv(x, w, b)
    assert out.shape == (2, 2, 7, length) and out.dtype == torch.float32
    # Token-contiguous x gives a token-contiguous output (at L = 1 x also counts as channel-last).
    assert out.is_contiguous() or length == 1
    torch.testing.assert_close(out, conv1d_silu_bidir_ref(x, w, b), rtol=1e-5, atol=1e-6)


def test_conv1d_strided_input(conv, device):
    x, w, b = make_inputs(2, 6, 33, device=device)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # tokens not contiguous
    torch.testing.assert_close(conv(xt, w, b), conv1d_silu_bidir_ref(x, w, b), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,channels,length", [(2, 384, 197), (8, 384, 6085), (2, 1536, 577)])
def test_conv1d_gpu(conv, dtype, batch, channels, length):
    x, w, b = make_inputs(batch, channels, length, dtype=dtype, device="cuda")
    out = conv(x, w, b)
    ref64 = conv1d_silu_bidir_ref(x.double(), w.double(), b.double())
    assert_close_to_f64(out, ref64, dtype, conv1d_silu_bidir_ref(x, w, b))


def test_conv1d_channel_last_input_gives_channel_last_output(conv, device):
    torch.manual_seed(3)
    xz = torch.randn(2, 13, 2 * 10, device=device)  # (B, L, 2E) as in_proj writes it
    x = xz[..., :10].transpose(1, 2)  # (B, E, L) view, channel stride 1
    w, b = torch.randn(2, 10, 4, device=device), torch.randn(2, 10, device=device)
    out = conv(x, w, b)
    assert out.stride(2) == 1
    torch.testing.assert_close(out, conv1d_silu_bidir_ref(x, w, b), rtol=1e-5, atol=1e-5)


# The channel-last K = 4 path walks tokens in chunks (8 under the interpreter) with a 3-token halo: lengths around
# one and two chunks, channel counts that do and do not fill the 8-channel blocks.
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
@pytest.mark.parametrize("channels", [8, 13])
def test_conv1d_channel_last_token_walk(conv, device, length, channels):
    g = torch.Generator().manual_seed(length)
    xz = torch.randn(3, length, 2 * channels, generator=g).to(device)
    x = xz[..., channels:].transpose(1, 2)  # the z-free half would be [:channels]; any view with stride 1 works
    w = (torch.randn(2, channels, 4, generator=g) * 0.5).to(device)
    b = (torch.randn(2, channels, generator=g) * 0.1).to(device)
    for bias in (b, None):
        out = conv(x, w, bias)
        assert out.shape == (2, 3, channels, length)
        assert out.permute(1, 3, 0, 2).is_contiguous(), "channel-last output is laid out (batch, L, 2, E)"
        torch.testing.assert_close(out, conv1d_silu_bidir_ref(x, w, bias), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels,length", [(384, 197), (384, 6085), (768, 577), (100, 300)])
def test_conv1d_channel_last_gpu(conv, dtype, channels, length):
    xz = torch.randn(4, length, 2 * channels, device="cuda").to(dtype)
    x = xz[..., :channels].transpose(1, 2)
    w, b = torch.randn(2, channels, 4, device="cuda") * 0.5, torch.randn(2, channels, device="cuda") * 0.1
    out = conv(x, w, b)
    ref64 = conv1d_silu_bidir_ref(x.double(), w.double(), b.double())
    assert out.stride(2) == 1
    assert_close_to_f64(out, ref64, dtype, conv1d_silu_bidir_ref(x, w, b))


def test_conv1d_rows_tiles_follow_the_grid():
    """Small grids (batch 1-8 at 224 px) take 32 x 8 tiles, large ones 128 x 32; the grid covers every channel
    and token either way; the interpreter keeps its small tiles."""
    from kernels.conv1d.fwd import conv1d_launch_config

    def tiles(batch, length):
        cfg = conv1d_launch_config(batch, 384, length, 4, channel_last=True, interpreted=False)
        return cfg.constexprs["BLOCK_C"], cfg.constexprs["CHUNK"], cfg.grid

    assert tiles(1, 197) == (32, 8, (12, 25, 1))
    assert tiles(8, 197) == (32, 8, (12, 25, 8))
    assert tiles(64, 197) == (128, 32, (3, 7, 64))
    assert tiles(8, 6085) == (128, 32, (3, 191, 8))
    interp = conv1d_launch_config(1, 384, 197, 4, channel_last=True, interpreted=True)
    assert (interp.constexprs["BLOCK_C"], interp.constexprs["CHUNK"]) == (8, 8)
