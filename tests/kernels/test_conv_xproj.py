"""The conv fused with x_proj (kernels/conv1d/xproj.py) vs its PyTorch reference and float64."""
from __future__ import annotations

import pytest
import torch

from kernels.conv1d.reference import conv_xproj_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.conv1d.op")


def make_inputs(batch, channels, length, width, dtype=torch.float32, device="cpu", bias=True, seed=0):
    """x as the mixer makes it: the first half of in_proj's (B, L, 2E) output, a (B, E, L) view with channel
    stride 1; conv taps and biases in fp32 (the parameters); x_proj_t (2, E, W) in x's dtype."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, length, 2 * channels, generator=g)
    w = torch.randn(2, channels, 4, generator=g) * 0.5
    b = torch.randn(2, channels, generator=g) * 0.1 if bias else None
    p = torch.randn(2, channels, width, generator=g) * max(channels, 1) ** -0.5
    x = xz.to(device=device, dtype=dtype)[..., :channels].transpose(1, 2)
    return x, w.to(device), None if b is None else b.to(device), p.to(device=device, dtype=dtype)


def _f64(x, w, b, p):
    return conv_xproj_ref(x.double(), w.double(), None if b is None else b.double(), p.double(), torch.float64)


# Interpreter tiles: 16 token rows x 16 channels per step. Rows spanning images (the conv's pads at each image's
# ends), channel counts not multiples of 16, one token, W not a power of two.
@pytest.mark.parametrize("batch, channels, length, width", [(2, 40, 37, 48), (1, 13, 5, 16), (3, 33, 1, 24),
                                                            (2, 16, 9, 80)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_xproj_matches_reference_fp32(op, device, batch, channels, length, width, bias):
    x, w, b, p = make_inputs(batch, channels, length, width, device=device, bias=bias)
    u, x_dbl = op.conv_xproj(x, w, b, p, torch.float32)
    u_ref, x_dbl_ref = _f64(x, w, b, p)
    assert u.shape == (2, batch, channels, length) and u.dtype == torch.float32
    assert u.permute(1, 3, 0, 2).is_contiguous(), "u is laid out (batch, L, 2, E), as the conv op lays it out"
    assert x_dbl.shape == (2, batch * length, width) and x_dbl.dtype == torch.float32 and x_dbl.is_contiguous()
    torch.testing.assert_close(u.double(), u_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_dbl.double(), x_dbl_ref, rtol=1e-5, atol=1e-5)
    # u is what the conv op returns (up to the order of the taps' sum)
    torch.testing.assert_close(u, op.conv1d_silu_bidir(x, w, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("out_fp32", [True, False])
def test_conv_xproj_low_precision(op, device, dtype, out_fp32):
    x, w, b, p = make_inputs(2, 40, 19, 48, dtype=dtype, device=device)
    out_dtype = torch.float32 if out_fp32 else dtype
    u, x_dbl = op.conv_xproj(x, w, b, p, out_dtype)
    assert u.dtype == dtype and x_dbl.dtype == out_dtype
    u_ref, x_dbl_ref = _f64(x, w, b, p)
    u_plain, x_dbl_plain = conv_xproj_ref(x, w, b, p, out_dtype)
    assert_close_to_f64(u, u_ref, dtype, u_plain)
    assert_close_to_f64(x_dbl, x_dbl_ref, dtype, x_dbl_plain)


def test_conv_xproj_edge_sizes(op, device):
    """No tokens: empty outputs; no channels: u empty and x_dbl zero (a sum over nothing)."""
    x, w, b, p = make_inputs(2, 8, 0, 16, device=device)
    u, x_dbl = op.conv_xproj(x, w, b, p, torch.float32)
    assert u.shape == (2, 2, 8, 0) and x_dbl.shape == (2, 0, 16)
    x, w, b, p = make_inputs(2, 0, 5, 16, device=device)
    u, x_dbl = op.conv_xproj(x, w, b, p, torch.float32)
    assert u.numel() == 0 and x_dbl.shape == (2, 10, 16) and not x_dbl.any()


def test_conv_xproj_rejects_bad_input(op, device):
    x, w, b, p = make_inputs(2, 8, 5, 16, device=device)
    with pytest.raises(ValueError, match="channel-last"):
        op.conv_xproj(x.contiguous(), w, b, p, torch.float32)
    with pytest.raises(ValueError, match="x_proj_t must be"):
        op.conv_xproj(x, w, b, p[:, :4], torch.float32)
    with pytest.raises(ValueError, match="share one dtype"):
        op.conv_xproj(x, w, b, p.double(), torch.float32)
    with pytest.raises(ValueError, match="out_dtype"):
        op.conv_xproj(x, w, b, p, torch.float16)


def test_conv_xproj_writes_given_buffers(op, device):
    """out=(u, x_dbl): the results land in the caller's buffers, laid out as the op's own (u (B, L, 2, E) in
    memory); another layout, dtype, or a buffer over the input is refused."""
    x, w, b, p = make_inputs(2, 8, 5, 16, device=device)
    want_u, want_x_dbl = op.conv_xproj(x, w, b, p, torch.float32)
    u, x_dbl = torch.full_like(want_u, float("nan")), torch.full_like(want_x_dbl, float("nan"))
    assert u.stride() == want_u.stride()
    got = op.conv_xproj(x, w, b, p, torch.float32, out=(u, x_dbl))
    assert got[0] is u and got[1] is x_dbl and torch.equal(u, want_u) and torch.equal(x_dbl, want_x_dbl)
    for bad, match in [((u.contiguous(), x_dbl), "must be"), ((u, x_dbl.half()), "must be"),
                       ((u, x_dbl[:, :3]), "must be"), ((u,), "must be None or 2"),
                       ((x.transpose(1, 2).unsqueeze(0).expand(2, -1, -1, -1).permute(0, 1, 3, 2), x_dbl), "must be")]:
        with pytest.raises(ValueError, match=match):
            op.conv_xproj(x, w, b, p, torch.float32, out=bad)
    xz = x.transpose(1, 2)._base  # the (B, L, 2E) tensor x is a view of: u laid over it overlaps the input
    over = xz.view(2, 5, 2, 8).permute(2, 0, 3, 1)
    with pytest.raises(ValueError, match="shares memory with an input"):
        op.conv_xproj(x, w, b, p, torch.float32, out=(over, x_dbl))


def test_conv_xproj_refuses_autograd(op, device):
    """No backward: a call autograd would record raises instead of returning a detached result."""
    x, w, b, p = make_inputs(1, 8, 5, 16, device=device)
    with pytest.raises(NotImplementedError, match="no backward"):
        op.conv_xproj(x, w, b, p.requires_grad_(), torch.float32)
    with torch.no_grad():
        u, _ = op.conv_xproj(x, w, b, p, torch.float32)
    assert not u.requires_grad


def test_conv_xproj_opcheck(op, device):
    """The custom op's schema, fake implementation and declared mutation (none)."""
    x, w, b, p = make_inputs(2, 8, 5, 16, device=device)
    torch.library.opcheck(torch.ops.vimbench.conv_xproj.default, (x, w, b, p, torch.float32))
    torch.library.opcheck(torch.ops.vimbench.conv_xproj.default, (x, w, None, p, torch.float32))


def test_conv_xproj_tiles_follow_the_grid():
    """Large grids take 64-row blocks, small ones (batch 1-8 at 224 px) 16; W pads to a power of two >= 16."""
    from kernels.conv1d.xproj import conv_xproj_launch_config

    def tiles(rows, width=48):
        cfg = conv_xproj_launch_config(rows, 384, width, torch.bfloat16, interpreted=False)
        return cfg.constexprs["BLOCK_M"], cfg.constexprs["BLOCK_W"], cfg.grid

    assert tiles(197) == (16, 64, (13,))
    assert tiles(64 * 6085) == (64, 64, (6085,))
    assert tiles(64 * 6085, 80)[1] == 128
    assert tiles(5, 8)[1] == 16


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch, channels, length, width", [(1, 384, 197, 48), (8, 384, 197, 48),
                                                            (4, 768, 577, 64), (2, 1536, 197, 80),
                                                            (4, 384, 6085, 48)])  # 24,340 rows: the large tiles
def test_conv_xproj_gpu(op, dtype, batch, channels, length, width):
    x, w, b, p = make_inputs(batch, channels, length, width, dtype=dtype, device="cuda")
    out_dtype = torch.float32
    with torch.no_grad():
        u, x_dbl = op.conv_xproj(x, w, b, p, out_dtype)
    u_ref, x_dbl_ref = _f64(x, w, b, p)
    u_plain, x_dbl_plain = conv_xproj_ref(x, w, b, p, out_dtype)
    assert_close_to_f64(u, u_ref, dtype, u_plain)
    assert_close_to_f64(x_dbl, x_dbl_ref, dtype, x_dbl_plain)


# x_proj_rows: x_proj alone on the conv op's output (the front path's form)

def _conv_u(op, batch, channels, length, width, dtype=torch.float32, device="cpu"):
    x, w, b, p = make_inputs(batch, channels, length, width, dtype=dtype, device=device)
    with torch.no_grad():
        return op.conv1d_silu_bidir(x, w, b), p


@pytest.mark.parametrize("batch, channels, length, width", [(2, 40, 37, 48), (1, 13, 5, 16), (3, 33, 1, 24),
                                                            (2, 16, 9, 80)])
def test_x_proj_rows_matches_reference_fp32(op, device, batch, channels, length, width):
    from kernels.conv1d.reference import x_proj_rows_ref

    u, p = _conv_u(op, batch, channels, length, width, device=device)
    x_dbl = op.x_proj_rows(u, p, torch.float32)
    assert x_dbl.shape == (2, batch * length, width) and x_dbl.dtype == torch.float32 and x_dbl.is_contiguous()
    torch.testing.assert_close(x_dbl.double(), x_proj_rows_ref(u.double(), p.double(), torch.float64),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("out_fp32", [True, False])
def test_x_proj_rows_low_precision(op, device, dtype, out_fp32):
    from kernels.conv1d.reference import x_proj_rows_ref

    u, p = _conv_u(op, 2, 40, 19, 48, dtype=dtype, device=device)
    out_dtype = torch.float32 if out_fp32 else dtype
    x_dbl = op.x_proj_rows(u, p, out_dtype)
    assert x_dbl.dtype == out_dtype
    assert_close_to_f64(x_dbl, x_proj_rows_ref(u.double(), p.double(), torch.float64), dtype,
                        x_proj_rows_ref(u, p, out_dtype))


def test_x_proj_rows_edges_bad_input_buffers_autograd_and_opcheck(op, device):
    u, p = _conv_u(op, 2, 8, 5, 16, device=device)
    want = op.x_proj_rows(u, p, torch.float32)
    buf = torch.full_like(want, float("nan"))
    assert op.x_proj_rows(u, p, torch.float32, out=buf) is buf and torch.equal(buf, want)
    for bad in (buf.half(), buf[:, :3], buf.transpose(1, 2).contiguous().transpose(1, 2)):
        with pytest.raises(ValueError, match="must be"):
            op.x_proj_rows(u, p, torch.float32, out=bad)
    with pytest.raises(ValueError, match="channel-last"):
        op.x_proj_rows(u.contiguous(), p, torch.float32)
    with pytest.raises(ValueError, match="x_proj_t must be"):
        op.x_proj_rows(u, p[:, :3], torch.float32)
    with pytest.raises(ValueError, match="share one dtype"):
        op.x_proj_rows(u, p.double(), torch.float32)
    with pytest.raises(ValueError, match="out_dtype"):
        op.x_proj_rows(u, p, torch.float16)
    with pytest.raises(NotImplementedError, match="no backward"):
        op.x_proj_rows(u, p.clone().requires_grad_(), torch.float32)
    empty_u, empty_p = _conv_u(op, 2, 0, 5, 16, device=device)
    assert not op.x_proj_rows(empty_u, empty_p, torch.float32).any(), "no channels: a sum over none"
    torch.library.opcheck(torch.ops.vimbench.x_proj_rows.default, (u, p, torch.float32))


def test_conv_op_writes_a_given_buffer(op, device):
    x, w, b, _ = make_inputs(2, 8, 5, 16, device=device)
    want = op.conv1d_silu_bidir(x, w, b)
    buf = torch.full_like(want, float("nan"))
    assert buf.stride() == want.stride()
    assert op.conv1d_silu_bidir(x, w, b, out=buf) is buf and torch.equal(buf, want)
    with pytest.raises(ValueError, match="must be"):
        op.conv1d_silu_bidir(x, w, b, out=buf.contiguous())
    with pytest.raises(ValueError, match="eager inference"):
        op.conv1d_silu_bidir(x, w.clone().requires_grad_(), b, out=buf)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch, channels, length, width", [(1, 384, 197, 48), (8, 384, 197, 48),
                                                            (2, 768, 197, 64), (20, 384, 197, 48)])
def test_x_proj_rows_gpu(op, dtype, batch, channels, length, width):
    from kernels.conv1d.reference import x_proj_rows_ref

    u, p = _conv_u(op, batch, channels, length, width, dtype=dtype, device="cuda")
    with torch.no_grad():
        x_dbl = op.x_proj_rows(u, p, torch.float32)
    assert_close_to_f64(x_dbl, x_proj_rows_ref(u.double(), p.double(), torch.float64), dtype,
                        x_proj_rows_ref(u, p, torch.float32))
