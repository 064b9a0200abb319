"""Triton selective scan vs the PyTorch references: fp32 under the interpreter on CPU, low precision on a GPU."""
from __future__ import annotations

import os

import pytest
import torch
import triton
import triton.language as tl

from kernels import fastmath
from kernels.launch import call_replay
from kernels.selective_scan import fwd as scan_fwd
from kernels.selective_scan.reference import bimamba_scan_ref, selective_scan_ref, selective_scan_sequential
from _tolerances import TOL, assert_close_to_f64

N_STATE = 16


def make_inputs(batch, channels, length, dtype=torch.float32, device="cpu", seed=0, rank=3):
    """Physically plausible inputs: A < 0 (A = -[1..N] jittered), small positive Delta after softplus.

    B and C are strided views of one x_dbl buffer (dt | B | C along dim 1), as the Vim mixer passes them;
    u and z are views of one xz buffer with tokens contiguous."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, 2 * channels, length, generator=g)
    u, z = xz[:, :channels], xz[:, channels:]
    delta = torch.randn(batch, channels, length, generator=g) * 0.5 - 3.0
    A = -(torch.arange(1, N_STATE + 1).float().repeat(channels, 1) * (1 + 0.1 * torch.rand(channels, N_STATE,
                                                                                            generator=g)))
    x_dbl = torch.randn(batch, rank + 2 * N_STATE, length, generator=g)
    B, C = x_dbl[:, rank:rank + N_STATE], x_dbl[:, rank + N_STATE:]
    D = torch.randn(channels, generator=g)
    bias = torch.rand(channels, generator=g) * 2.0 - 3.0
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    return dict(u=cast(u), delta=cast(delta), A=A.to(device), B=cast(B), C=cast(C), D=D.to(device),
                z=cast(z), delta_bias=bias.to(device))


def pick(inputs, with_d, with_z, with_bias):
    out = dict(inputs)
    out["D"] = inputs["D"] if with_d else None
    out["z"] = inputs["z"] if with_z else None
    out["delta_bias"] = inputs["delta_bias"] if with_bias else None
    return out


def stack_directions(batch, channels, length, dtype=torch.float32, device="cpu"):
    """Direction-stacked inputs shaped as bimamba_scan takes them: B, C strided views of a (2, b, R+2N, L) buffer."""
    f = make_inputs(batch, channels, length, dtype, device, seed=1)
    b = make_inputs(batch, channels, length, dtype, device, seed=2)
    x_dbl = torch.stack([torch.cat([torch.zeros_like(f["B"][:, :3]), f["B"], f["C"]], 1),
                         torch.cat([torch.zeros_like(b["B"][:, :3]), b["B"], b["C"]], 1)])
    return dict(u=torch.stack([f["u"], b["u"]]), delta=torch.stack([f["delta"], b["delta"]]),
                A=torch.stack([f["A"], b["A"]]), B=x_dbl[:, :, 3:3 + N_STATE], C=x_dbl[:, :, 3 + N_STATE:],
                D=torch.stack([f["D"], b["D"]]), z=f["z"], delta_bias=torch.stack([f["delta_bias"],
                                                                                   b["delta_bias"]]))


@pytest.fixture(scope="module")
def triton_scan():
    mod = pytest.importorskip("kernels.selective_scan.op")
    return mod


# L = 1, 2, 3 (shorter than one 4-token chunk), 5 (one chunk + 1), 197 (Vim at 224 px, many chunks).
@pytest.mark.parametrize("length", [1, 2, 3, 5, 197])
@pytest.mark.parametrize("reverse", [False, True])
def test_selective_scan_matches_sequential_fp32(triton_scan, device, length, reverse):
    x = make_inputs(2, 11, length, device=device)  # 11 channels: not a multiple of BLOCK_C
    out = triton_scan.selective_scan(**x, reverse=reverse)
    ref64 = selective_scan_sequential(**{k: v.double() if v.is_floating_point() else v for k, v in x.items()},
                                      reverse=reverse)
    assert out.dtype == torch.float32 and out.shape == x["u"].shape
    assert_close_to_f64(out, ref64, torch.float32)


@pytest.mark.parametrize("with_d,with_z,with_bias,softplus", [
    (False, False, False, True), (True, False, True, True), (False, True, False, False), (True, True, True, False),
])
@pytest.mark.parametrize("reverse", [False, True])
def test_selective_scan_optional_inputs(triton_scan, device, with_d, with_z, with_bias, softplus, reverse):
    x = pick(make_inputs(1, 5, 23, device=device), with_d, with_z, with_bias)
    if not softplus:  # Delta is then delta + bias as given: keep it positive
        x["delta"] = torch.nn.functional.softplus(x["delta"])
        if with_bias:
            x["delta_bias"] = 0.01 * x["delta_bias"].abs()
    out = triton_scan.selective_scan(**x, delta_softplus=softplus, reverse=reverse)
    ref = selective_scan_ref(**x, delta_softplus=softplus, reverse=reverse)
    torch.testing.assert_close(out, ref, rtol=TOL[torch.float32][0], atol=TOL[torch.float32][1])


def test_selective_scan_arbitrary_strides(triton_scan, device):
    x = make_inputs(2, 6, 37, device=device)
    x["u"] = x["u"].transpose(1, 2).contiguous().transpose(1, 2)  # channels contiguous, tokens strided
    x["A"] = x["A"].t().contiguous().t()
    out = triton_scan.selective_scan(**x)
    torch.testing.assert_close(out, selective_scan_ref(**x), rtol=6e-4, atol=2e-3)


@pytest.mark.parametrize("length", [1, 3, 197])
def test_bimamba_scan_matches_reference_fp32(triton_scan, device, length):
    x = stack_directions(2 if length < 197 else 1, 13, length, device=device)  # batch 1 at 197: CPU time
    out = triton_scan.bimamba_scan(**x)
    ref = bimamba_scan_ref(**x)
    # float64 spec: the sequential scan of each direction
    y = [selective_scan_sequential(x["u"][i].double(), x["delta"][i].double(), x["A"][i], x["B"][i].double(),
                                   x["C"][i].double(), x["D"][i], None, x["delta_bias"][i], True, reverse=bool(i))
         for i in range(2)]
    ref64 = 0.5 * (y[0] + y[1]) * torch.nn.functional.silu(x["z"].double())
    assert out.shape == x["z"].shape and out.dtype == torch.float32
    assert_close_to_f64(out, ref64, torch.float32)
    torch.testing.assert_close(out, ref, rtol=6e-4, atol=2e-3)


def test_bimamba_scan_without_optional_inputs(triton_scan, device):
    x = stack_directions(1, 5, 9, device=device)
    x.update(D=None, z=None, delta_bias=None)
    torch.testing.assert_close(triton_scan.bimamba_scan(**x), bimamba_scan_ref(**x), rtol=6e-4, atol=2e-3)


def test_bimamba_scan_is_deterministic(triton_scan, device):
    x = stack_directions(1, 9, 31, device=device)
    assert torch.equal(triton_scan.bimamba_scan(**x), triton_scan.bimamba_scan(**x))


def test_bad_shapes_raise(triton_scan, device):
    x = make_inputs(1, 4, 8, device=device)
    with pytest.raises(ValueError, match="B must be"):
        triton_scan.selective_scan(**{**x, "B": x["B"][:, :, :4]})


def model_layout(batch, channels, length, dtype=torch.float32, device="cpu", seed=3):
    """Direction-stacked inputs exactly as the Vim mixer lays them out: u and delta channel-last, z a view of a
    channel-last xz, B and C views of an x_dbl buffer in XDblLayout order (rows 16-element aligned)."""
    from vimbench.layout import XDblLayout

    lay = XDblLayout(dt_rank=3, d_state=N_STATE)
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, length, 2 * channels, generator=g)
    x_dbl = torch.randn(2, batch, length, lay.width, generator=g)
    A = -(torch.arange(1, N_STATE + 1).float().repeat(2, channels, 1) * (1 + 0.1 * torch.rand(2, channels, N_STATE,
                                                                                              generator=g)))
    cast = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
    x_dbl = cast(x_dbl)
    return dict(u=cast(torch.randn(2, batch, length, channels, generator=g)).transpose(2, 3),
                delta=cast(torch.randn(2, batch, length, channels, generator=g) * 0.5 - 3.0).transpose(2, 3),
                A=A.to(device), B=x_dbl[..., lay.B].transpose(2, 3), C=x_dbl[..., lay.C].transpose(2, 3),
                D=torch.randn(2, channels, generator=g).to(device),
                z=cast(xz)[..., channels:].transpose(1, 2),
                delta_bias=(torch.rand(2, channels, generator=g) * 2.0 - 3.0).to(device))


# L = 1..6 cross the boundary between the unmasked main loop and the masked last trips, 37 runs many main-loop
# trips (197, Vim-Ti's tokens, is in the fp32 reference tests: interpreted here it took ~100 s per case); 16
# channels fill the interpreter's 8-wide channel blocks exactly (no channel mask), 13 do not.
@pytest.mark.parametrize("channels", [16, 13])
@pytest.mark.parametrize("length", [1, 2, 4, 5, 6, 37])
def test_bimamba_scan_halves_match_reference(triton_scan, device, channels, length):
    x = model_layout(2 if length < 37 else 1, channels, length, device=device)  # batch 1 at 37: CPU time
    halves = triton_scan.bimamba_scan(**x, combine=False)
    ref = bimamba_scan_ref(**x, combine=False)
    assert halves.shape == (2, x["u"].shape[1], channels, length) and halves.dtype == torch.float32
    assert halves.stride() == x["u"].stride(), "halves are laid out like u (channel-last here)"
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(halves, ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(halves.sum(0), triton_scan.bimamba_scan(**x), rtol=rtol, atol=atol)
    # Written over u or over delta (the model reuses u's memory): the same values.
    for name in ("u", "delta"):
        y = dict(x, **{name: x[name].clone()})
        over = triton_scan.bimamba_scan(**y, combine=False, out=y[name])
        assert over.data_ptr() == y[name].data_ptr()
        torch.testing.assert_close(over, halves, rtol=0, atol=0)


@pytest.mark.parametrize("scan", ["triton", "reference"])
def test_halves_out_is_checked(triton_scan, device, scan):
    x = model_layout(1, 8, 5, device=device)
    fn = triton_scan.bimamba_scan if scan == "triton" else bimamba_scan_ref
    if scan == "triton":
        with pytest.raises(ValueError, match="out must be"):
            fn(**x, combine=False, out=torch.empty(2, 1, 8, 4, device=device))
        buf = torch.randn(x["u"].numel() + 1, device=device)
        u, overlapping = buf[:-1].view(x["u"].shape), buf[1:].view(x["u"].shape)
        with pytest.raises(ValueError, match="shares memory with u"):
            fn(**dict(x, u=u), combine=False, out=overlapping)
        with pytest.raises(ValueError, match="only taken with combine=False"):
            fn(**x, out=torch.empty_like(x["u"]))
    out = torch.full_like(x["u"], float("nan"))
    assert fn(**x, combine=False, out=out) is out and torch.isfinite(out).all()


def test_reference_halves_sum_to_the_combined_output():
    x = model_layout(1, 5, 9)
    halves = bimamba_scan_ref(**x, combine=False)
    assert halves.stride() == x["u"].stride()
    over = bimamba_scan_ref(**dict(x, u=x["u"].clone()), combine=False, out=None)
    torch.testing.assert_close(over, halves, rtol=0, atol=0)
    u = x["u"].clone()
    torch.testing.assert_close(bimamba_scan_ref(**dict(x, u=u), combine=False, out=u), halves, rtol=0, atol=0)
    torch.testing.assert_close(halves.sum(0), bimamba_scan_ref(**x), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(halves[0], halves[1]), "the two directions must differ on random inputs"


# ---- GPU: realistic shapes, low precision ---------------------------------------------------------------------

def _ref64_bimamba(x):
    y = [selective_scan_ref(x["u"][i].double(), x["delta"][i].double(), x["A"][i].double(), x["B"][i].double(),
                            x["C"][i].double(), x["D"][i].double(), None, x["delta_bias"][i].double(), True,
                            reverse=bool(i)) for i in range(2)]
    return 0.5 * (y[0] + y[1]) * torch.nn.functional.silu(x["z"].double())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,channels,length", [(2, 384, 197), (4, 384, 6085), (8, 768, 577), (2, 1536, 1025)])
def test_bimamba_scan_gpu(triton_scan, dtype, batch, channels, length):
    x = stack_directions(batch, channels, length, dtype=dtype, device="cuda")
    out = triton_scan.bimamba_scan(**x)
    ref64 = _ref64_bimamba(x)
    plain = bimamba_scan_ref(**x)  # plain PyTorch on the same low-precision inputs
    assert out.dtype == dtype
    assert_close_to_f64(out, ref64, dtype, plain)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [1, 3, 4, 5, 197, 6085])
def test_selective_scan_gpu(triton_scan, dtype, reverse, length):
    x = make_inputs(2, 384, length, dtype=dtype, device="cuda")
    out = triton_scan.selective_scan(**x, reverse=reverse)
    ref64 = selective_scan_ref(**{k: v.double() for k, v in x.items()}, reverse=reverse)
    plain = selective_scan_ref(**x, reverse=reverse)
    assert_close_to_f64(out, ref64, dtype, plain)


def _channel_last(t):
    """The same values laid out channel-last (channel stride 1), as the Vim model passes them."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@pytest.mark.parametrize("length", [1, 6, 37])
def test_bimamba_scan_channel_last_layout(triton_scan, length):
    inputs = stack_directions(2, 19, length)
    laid_out = {k: (_channel_last(v) if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
    assert laid_out["u"].stride(-2) == 1
    out = triton_scan.bimamba_scan(**laid_out)
    assert out.stride(-2) == 1, "the output keeps the input's channel-last layout"
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(out, bimamba_scan_ref(**inputs), rtol=rtol, atol=atol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels,length", [(384, 197), (384, 6085), (768, 577)])
def test_bimamba_scan_halves_gpu(triton_scan, dtype, channels, length):
    x = model_layout(2, channels, length, dtype=dtype, device="cuda")
    halves = triton_scan.bimamba_scan(**x, combine=False)
    ref64 = _ref64_bimamba(x)
    plain = bimamba_scan_ref(**x)
    assert halves.dtype == dtype
    assert_close_to_f64(halves.double().sum(0), ref64, dtype, plain)


def test_one_pass_block_shrinks_on_small_grids():
    """The one-pass scan's channels per one-warp program follow the grid it would have at 32 (as measured on the
    H200): Vim-Ti batch 1 (24 programs at 32) splits each channel's states over 16 lanes, batch 64 keeps one
    channel per lane; the grid covers every channel either way."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    picks = {batch: fwd.scan_launch_config(batch, 384, 2, interpreted=False).constexprs["BLOCK_C"]
             for batch in (1, 2, 4, 8, 16, 64)}
    assert picks == {1: 2, 2: 4, 4: 4, 8: 8, 16: 32, 64: 32}
    cfg = fwd.scan_launch_config(1, 384, 2, interpreted=False)
    assert cfg.grid == (192, 2, 1) and cfg.num_warps == 1
    from kernels.runtime import interpreted_block_c
    assert fwd.scan_launch_config(1, 384, 2, interpreted=True).constexprs["BLOCK_C"] == interpreted_block_c(384)
    assert fwd.scan_launch_config(1, 13, 2, interpreted=True).grid[0] == 2  # kernel tests cross channel blocks


def test_l1_prefetch_only_where_measured():
    """The one-pass scan's L1 prefetch (L1_AHEAD) is on for one-channel-per-lane programs on the GPU (measured at
    batch 64, E a multiple of 32), off on the small-grid blocks, with lane masks and under the interpreter."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    assert fwd.DEFAULT_L1_AHEAD > 0
    ahead = {batch: fwd.scan_launch_config(batch, 384, 2, interpreted=False).constexprs["L1_AHEAD"]
             for batch in (1, 8, 16, 64)}
    assert ahead == {1: 0, 8: 0, 16: fwd.DEFAULT_L1_AHEAD, 64: fwd.DEFAULT_L1_AHEAD}
    assert fwd.scan_launch_config(64, 384, 2, interpreted=True).constexprs["L1_AHEAD"] == 0
    assert fwd.scan_launch_config(64, 380, 2, interpreted=False).constexprs["L1_AHEAD"] == 0  # lane masks


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,channels", [(1, 384), (2, 384), (8, 384), (1, 1536), (1, 13)])
@pytest.mark.parametrize("combine", [True, False])
def test_bimamba_scan_small_grid_blocks_gpu(triton_scan, dtype, batch, channels, combine):
    """Every one-pass block size that small grids pick (2, 4, 8 channels per warp) against float64."""
    x = model_layout(batch, channels, 197, dtype=dtype, device="cuda")
    out = triton_scan.bimamba_scan(**x, combine=combine)
    full = out if combine else out.double().sum(0)
    assert_close_to_f64(full, _ref64_bimamba(x), dtype, bimamba_scan_ref(**x))


@pytest.mark.parametrize("length", [1, 4, 5, 9])
@pytest.mark.parametrize("combine", [True, False])
def test_bimamba_scan_unmasked_and_masked_trips(triton_scan, length, combine):
    """The one-pass scan steps two tokens per loop trip with the next trip's loads in flight; trips whose
    (prefetched) tokens all lie inside L run unmasked: lengths around that boundary give the reference's output."""
    x = stack_directions(2, 19, length)
    out = triton_scan.bimamba_scan(**x, combine=combine)
    full = out if combine else out.sum(0)
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(full, bimamba_scan_ref(**x), rtol=rtol, atol=atol)


@pytest.mark.parametrize("length", [6, 8, 10])
@pytest.mark.parametrize("unroll", [True, False])
@pytest.mark.parametrize("combine", [True, False])
def test_bimamba_scan_main_trips_one_or_two_per_iteration(triton_scan, monkeypatch, length, unroll, combine):
    """The main loop runs two trips per iteration (fwd.UNROLL_TRIPS) or one; lengths with an even and an odd
    number of main trips (2, 3, 4 under the interpreter), both directions, both output forms, give the reference's
    output either way."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "UNROLL_TRIPS", unroll)
    x = stack_directions(2, 19, length)
    out = triton_scan.bimamba_scan(**x, combine=combine)
    full = out if combine else out.sum(0)
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(full, bimamba_scan_ref(**x), rtol=rtol, atol=atol)


# L = 1..9 put the last block's end before, at and after a block boundary (4 tokens per block here), 37 runs ten
# blocks; 13 channels leave a masked channel block, 16 fill two.
@pytest.mark.parametrize("length", [1, 3, 4, 5, 9, 37])
@pytest.mark.parametrize("channels", [16, 13])
def test_bimamba_scan_token_blocks_match_reference(triton_scan, monkeypatch, length, channels):
    """The small-grid scan in blocks of tokens (`fwd._scan_blocks_kernel`: the recurrence as an in-thread scan over
    each block, the outputs' state sums per block) gives the reference's output: both directions, both output
    forms, the halves written over u, and one direction run backwards."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "INTERPRETED_TOKEN_BLOCK", 4)
    assert fwd.scan_launch_config(1, channels, 2, interpreted=True).kernel == "_scan_blocks_kernel"
    x = model_layout(1, channels, length)
    rtol, atol = TOL[torch.float32]
    ref = bimamba_scan_ref(**x)
    torch.testing.assert_close(triton_scan.bimamba_scan(**x), ref, rtol=rtol, atol=atol)
    halves = triton_scan.bimamba_scan(**x, combine=False)
    torch.testing.assert_close(halves, bimamba_scan_ref(**x, combine=False), rtol=rtol, atol=atol)
    y = dict(x, u=x["u"].clone())
    over = triton_scan.bimamba_scan(**y, combine=False, out=y["u"])
    assert over.data_ptr() == y["u"].data_ptr()
    torch.testing.assert_close(over, halves, rtol=0, atol=0)
    single = {k: v[1] if k in ("u", "delta", "A", "B", "C", "D", "delta_bias") else v for k, v in x.items()}
    torch.testing.assert_close(triton_scan.selective_scan(**single, reverse=True),
                               selective_scan_ref(**single, reverse=True), rtol=rtol, atol=atol)


@pytest.mark.parametrize("with_d,with_z,with_bias,softplus", [(False, False, False, False), (True, False, True, True),
                                                               (False, True, False, True)])
def test_token_blocks_optional_inputs(triton_scan, monkeypatch, with_d, with_z, with_bias, softplus):
    """The token-block scan without D, z, delta_bias or the softplus, as the reference."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "INTERPRETED_TOKEN_BLOCK", 8)
    x = pick(stack_directions(1, 13, 11), with_d, with_z, with_bias)
    if not softplus:  # a positive Delta without it (the inputs' Delta is negative before the softplus)
        x["delta"] = torch.nn.functional.softplus(x["delta"])
    rtol, atol = TOL[torch.float32]
    torch.testing.assert_close(triton_scan.bimamba_scan(**x, delta_softplus=softplus),
                               bimamba_scan_ref(**x, delta_softplus=softplus), rtol=rtol, atol=atol)


def test_token_blocks_only_for_small_grid_inference(monkeypatch):
    """The token-block kernel runs where the one-pass grid picks a small-grid block (batch 1-8 at Vim-Ti), for
    inference (a fused dt_proj of rank up to TOKEN_BLOCK_MAX_DT_RANK included); batch 16 and up, the checkpointing
    forward, a wider fused dt_proj and TOKEN_BLOCK = 0 keep the token walk; under the interpreter only INTERPRETED_TOKEN_BLOCK turns it on."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "TOKEN_BLOCK", 16)
    kernels = {batch: fwd.scan_launch_config(batch, 384, 2, interpreted=False).kernel for batch in (1, 2, 4, 8, 16, 64)}
    assert kernels == {1: "_scan_blocks_kernel", 2: "_scan_blocks_kernel", 4: "_scan_blocks_kernel",
                       8: "_scan_blocks_kernel", 16: "_scan_kernel", 64: "_scan_kernel"}
    cfg = fwd.scan_launch_config(1, 384, 2, interpreted=False)
    assert cfg.constexprs["TOKEN_BLOCK"] == 16 and cfg.constexprs["BLOCK_C"] == 2 and cfg.grid == (192, 2, 1)
    # at most TOKEN_BLOCK_X_CHANNELS tokens x channels per program: 8 tokens at 8 channels per warp (batch 8)
    blocks = {batch: fwd.scan_launch_config(batch, 384, 2, interpreted=False).constexprs["TOKEN_BLOCK"]
              for batch in (1, 2, 4, 8)}
    assert blocks == {1: 16, 2: 16, 4: 16, 8: 8}
    assert fwd.scan_launch_config(1, 384, 2, interpreted=False, save_every=128).kernel == "_scan_kernel"
    assert fwd.scan_launch_config(1, 384, 2, interpreted=False, dt_rank=12).kernel == "_scan_blocks_kernel"
    assert fwd.scan_launch_config(16, 384, 2, interpreted=False, dt_rank=12).kernel == "_scan_kernel"
    assert fwd.scan_launch_config(1, 768, 2, interpreted=False, dt_rank=24).kernel == "_scan_blocks_kernel"
    # Vim-B's rank (48) is wider than TOKEN_BLOCK_MAX_DT_RANK: its fused dt_proj keeps the token walk
    assert fwd.scan_launch_config(1, 1536, 2, interpreted=False, dt_rank=48).kernel == "_scan_kernel"
    assert fwd.scan_launch_config(1, 1536, 2, interpreted=False).kernel == "_scan_blocks_kernel"
    assert fwd.scan_launch_config(1, 384, 2, interpreted=True).kernel == "_scan_kernel"
    monkeypatch.setattr(fwd, "TOKEN_BLOCK", 0)
    assert fwd.scan_launch_config(1, 384, 2, interpreted=False).kernel == "_scan_kernel"


@pytest.mark.parametrize("length", [1, 5, 10])
@pytest.mark.parametrize("carry,trip", [(0, 2), (2, 2), (0, 4)])
@pytest.mark.parametrize("joined", [True, False])
def test_bimamba_scan_staged_matches_reference(triton_scan, monkeypatch, length, carry, trip, joined):
    """The one-pass scan with B and C staged by the pipeliner (`staged._scan_staged_kernel`, fwd.STAGED_SCAN; an
    experiment, off by default): the reference's output in both forms and over u, one direction run backwards; u,
    delta and z in the trip that uses them or one trip ahead; trips of 2 or 4 tokens; B and C as one joined row (the
    model's x_dbl) or two. 13 channels: a full block and a masked one; lengths that leave 1 or 2 last steps after
    the trips."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    staged = pytest.importorskip("kernels.selective_scan.staged")
    monkeypatch.setattr(fwd, "STAGED_SCAN", 3)
    monkeypatch.setattr(fwd, "STAGED_CARRY", carry)
    monkeypatch.setattr(fwd, "STAGED_TRIP", trip)
    assert fwd.scan_launch_config(1, 13, 2, interpreted=True).kernel == "_scan_staged_kernel"
    x = model_layout(1, 13, length) if joined else stack_directions(1, 13, length)
    assert staged.bc_joined(x["B"], x["C"]) is (joined or length == 1)  # one token: B then C in both layouts
    rtol, atol = TOL[torch.float32]
    with call_replay(False):
        torch.testing.assert_close(triton_scan.bimamba_scan(**x), bimamba_scan_ref(**x), rtol=rtol, atol=atol)
        halves = triton_scan.bimamba_scan(**x, combine=False)
        torch.testing.assert_close(halves, bimamba_scan_ref(**x, combine=False), rtol=rtol, atol=atol)
        y = dict(x, u=x["u"].clone())
        torch.testing.assert_close(triton_scan.bimamba_scan(**y, combine=False, out=y["u"]), halves, rtol=0, atol=0)
        single = {k: v[1] if k in ("u", "delta", "A", "B", "C", "D", "delta_bias") else v for k, v in x.items()}
        torch.testing.assert_close(triton_scan.selective_scan(**single, reverse=True),
                                   selective_scan_ref(**single, reverse=True), rtol=rtol, atol=atol)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("carry,trip,l1_ahead", [(0, 2, 0), (2, 2, 6), (0, 4, 8)])
@pytest.mark.parametrize("batch,channels,length", [(16, 384, 197), (16, 384, 6085), (16, 768, 577), (96, 40, 37)])
def test_bimamba_scan_staged_gpu(triton_scan, monkeypatch, dtype, carry, trip, l1_ahead, batch, channels, length):
    """The staged scan on the GPU (one channel per lane: batch 16 and up), at the model's layout (B and C joined),
    both forms, against float64; 40 channels: a masked channel block."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "STAGED_SCAN", 3)
    monkeypatch.setattr(fwd, "STAGED_CARRY", carry)
    monkeypatch.setattr(fwd, "STAGED_TRIP", trip)
    monkeypatch.setattr(fwd, "STAGED_L1_AHEAD", l1_ahead)
    assert fwd.scan_launch_config(batch, channels, 2, interpreted=False).kernel == "_scan_staged_kernel"
    x = model_layout(batch, channels, length, dtype=dtype, device="cuda")
    ref64 = _ref64_bimamba(x)
    plain = bimamba_scan_ref(**x)
    with call_replay(False):
        assert_close_to_f64(triton_scan.bimamba_scan(**x, combine=False).double().sum(0), ref64, dtype, plain)
        assert_close_to_f64(triton_scan.bimamba_scan(**x), ref64, dtype, plain)


def test_staged_scan_only_where_asked(monkeypatch):
    """STAGED_SCAN = 0 (the default) keeps the token walk; set, it takes one-channel-per-lane inference without a
    fused dt_proj or checkpoints (and every interpreted one-pass scan), with STAGES pipeline stages; the kernel
    refuses what it cannot do."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    assert fwd.STAGED_SCAN == 0 and fwd.scan_launch_config(64, 384, 2, interpreted=False).kernel == "_scan_kernel"
    monkeypatch.setattr(fwd, "STAGED_SCAN", 4)
    cfg = fwd.scan_launch_config(64, 384, 2, interpreted=False)
    assert cfg.kernel == "_scan_staged_kernel" and cfg.constexprs["STAGES"] == 4 and cfg.num_stages == 4
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False, save_every=128).kernel == "_scan_kernel"
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False, dt_rank=12).kernel == "_scan_kernel"
    assert fwd.scan_launch_config(1, 384, 2, interpreted=False).kernel == "_scan_blocks_kernel"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("token_block", [8, 16, 32])
@pytest.mark.parametrize("batch,channels,length", [(1, 384, 197), (4, 384, 197), (8, 384, 197), (1, 1536, 197),
                                                   (1, 13, 37), (2, 384, 1025)])
@pytest.mark.parametrize("combine", [True, False])
def test_token_blocks_gpu(triton_scan, monkeypatch, dtype, token_block, batch, channels, length, combine):
    """The token-block scan on the GPU (its layouts: the (T, C) tiles' elementwise work spread over the lanes, the
    sums over the states by shuffles, the output's stores and atomics from one lane per element) against
    float64, at each block size it may run with."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "TOKEN_BLOCK", token_block)
    x = model_layout(batch, channels, length, dtype=dtype, device="cuda")
    with call_replay(False):
        out = fwd.bimamba_scan(**x, combine=combine, split=0)
    full = out if combine else out.double().sum(0)
    assert_close_to_f64(full, _ref64_bimamba(x), dtype, bimamba_scan_ref(**x))


def test_one_pass_register_cap(monkeypatch):
    """The register caps (fwd.ONE_PASS_MAXNREG for inference, fwd.SAVE_MAXNREG for the checkpointing forward)
    apply to one-channel-per-lane programs on the GPU only, and not with a fused dt_proj of a large rank (Vim-B's
    48 spilled when capped); small-grid blocks and the interpreter are never capped."""
    fwd = pytest.importorskip("kernels.selective_scan.fwd")
    monkeypatch.setattr(fwd, "ONE_PASS_MAXNREG", 168)
    monkeypatch.setattr(fwd, "SAVE_MAXNREG", 200)
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False).maxnreg == 168
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False, save_every=128).maxnreg == 200
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False, dt_rank=12).maxnreg == 168
    assert fwd.scan_launch_config(64, 1536, 2, interpreted=False, dt_rank=48).maxnreg is None
    assert fwd.scan_launch_config(1, 384, 2, interpreted=False).maxnreg is None  # 2 channels per warp
    assert fwd.scan_launch_config(64, 384, 2, interpreted=True).maxnreg is None
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False).launch_options() == {"num_warps": 1, "maxnreg": 168}
    monkeypatch.setattr(fwd, "ONE_PASS_MAXNREG", None)
    assert fwd.scan_launch_config(64, 384, 2, interpreted=False).launch_options() == {"num_warps": 1}


def test_gate_tanh_reaches_the_token_walks_only(monkeypatch):
    """fwd.GATE_TANH (the z gate's SiLU by one MUFU tanh) sets USE_ASM = 2 in the one-pass `_scan_kernel` and in the
    chunk-parallel passes on the GPU; the token-block kernel, the interpreter and the default keep their value."""
    from kernels.selective_scan import chunked

    def asm(batch, interpreted=False, length=None):
        if length is not None:
            cfg = chunked.chunked_scan_launch_config(batch, 384, length, 2, 16, interpreted=interpreted,
                                                     sm_count=132, split=None if not interpreted else 8)
            return cfg.states.constexprs["USE_ASM"], cfg.outputs.constexprs["USE_ASM"]
        return scan_fwd.scan_launch_config(batch, 384, 2, interpreted).constexprs["USE_ASM"]

    assert scan_fwd.GATE_TANH is False  # off until measured on the GPU
    assert (asm(64), asm(1), asm(8, length=6085), asm(64, True)) == (True, True, (True, True), False)
    monkeypatch.setattr(scan_fwd, "GATE_TANH", True)
    assert asm(64) == 2 and asm(8, length=6085) == (2, 2)
    assert scan_fwd.scan_launch_config(1, 384, 2, False).kernel == "_scan_blocks_kernel" and asm(1) is True
    assert asm(64, True) is False and asm(8, True, length=6085) == (False, False)


@triton.jit
def _silu_probe(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, fastmath.silu_tanh(tl.load(x_ptr + offs, mask=mask, other=0.0)), mask=mask)


@triton.jit
def _widen_probe(x_ptr, out_ptr, BLOCK: tl.constexpr, USE_ASM: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, fastmath.widen_bf16(tl.load(x_ptr + offs), USE_ASM))


@pytest.mark.gpu
def test_widen_bf16_is_exact():
    """`fastmath.widen_bf16` with its inline asm (two values per register: the low one shifted, the high one masked)
    gives every one of the 65,536 bf16 bit patterns' fp32 bits exactly (bits << 16, NaN payloads too), in element
    order; the plain conversion it replaces agrees on every number (NaNs aside: a conversion may quiet them)."""
    bits = torch.arange(-32768, 32768, dtype=torch.int32, device="cuda").to(torch.int16)
    x = bits.view(torch.bfloat16)
    want = (bits.to(torch.int32) & 0xFFFF) << 16
    numbers = ~torch.isnan(x)
    for use_asm in (True, False):
        out = torch.empty(x.numel(), dtype=torch.float32, device="cuda")
        _widen_probe[(x.numel() // 1024,)](x, out, BLOCK=1024, USE_ASM=use_asm)
        got = out.view(torch.int32)
        assert torch.equal(got if use_asm else got[numbers], want if use_asm else want[numbers]), \
            f"USE_ASM={use_asm}"


@pytest.mark.gpu
def test_silu_tanh_matches_float64():
    """`fastmath.silu_tanh` (one MUFU tanh; GPU only: inline asm) against float64 SiLU on [-30, 30]: absolute
    error within |x| 2^-11 + 1e-7 (tanh.approx's relative error ~2^-11, halved by h = x / 2, plus fp32 rounding)."""
    x = torch.linspace(-30, 30, 60001, device="cuda")
    out = torch.empty_like(x)
    _silu_probe[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
    err = (out.double() - torch.nn.functional.silu(x.double())).abs()
    assert bool((err <= x.double().abs() * 2.0 ** -11 + 1e-7).all()), f"max error {err.max().item():.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("batch,length", [(16, 577), (2, 6085)])
def test_gate_tanh_scan_gpu(triton_scan, monkeypatch, dtype, batch, length):
    """The scan's halves with GATE_TANH (one pass at batch 16, the chunk-parallel passes at 2 x 6,085) against
    float64, within the criterion of every low-precision scan (no worse than twice plain PyTorch's error at the
    same precision, plus an output ulp); the fp32 combined form ignores the switch (exact sigmoid)."""
    monkeypatch.setattr(scan_fwd, "GATE_TANH", True)
    x = model_layout(batch, 384, length, dtype=dtype, device="cuda")
    with call_replay(False):
        halves = scan_fwd.bimamba_scan(**x, combine=False)
    assert_close_to_f64(halves.double().sum(0), _ref64_bimamba(x), dtype, bimamba_scan_ref(**x))
    x32 = model_layout(batch, 384, length, device="cuda")
    with call_replay(False):
        on = scan_fwd.bimamba_scan(**x32)
        monkeypatch.setattr(scan_fwd, "GATE_TANH", False)
        off = scan_fwd.bimamba_scan(**x32)
    torch.testing.assert_close(on, off, rtol=0, atol=0)


@triton.jit
def _softplus_probe(x_ptr, sp_ptr, slope_ptr, lg2_ptr, n, USE_ASM: tl.constexpr, BLOCK: tl.constexpr):
    """The scans' softplus forms and slope on a vector (test_softplus_and_its_slope_match_float64)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    sp, slope = scan_fwd._softplus_sigmoid(x, USE_ASM, True)
    tl.store(sp_ptr + offs, sp, mask=mask)
    tl.store(slope_ptr + offs, slope, mask=mask)
    tl.store(lg2_ptr + offs, scan_fwd._softplus_exp(x, USE_ASM)[0], mask=mask)


# The lg2 form's series is computed for every x and selected only below e^x = 1/16: far out it overflows to inf
# under the interpreter's numpy, harmlessly.
@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
def test_softplus_and_its_slope_match_float64(device):
    """The scans' softplus (`fwd._softplus`: max(x, 0) + log1p(e^-|x|) with log1p as a degree-7 polynomial, and the
    lg2 form `_softplus_exp` that VIMBENCH_SOFTPLUS_POLY=0 or the fp32 forward use) and the backward's slope
    sigmoid(x) (`_softplus_sigmoid`) against float64, x in [-30, 30] and around 0: within 1e-6 relative (the
    polynomial's own error is 3.7e-7; fp32 softplus rounds at 6e-8)."""
    x = torch.cat([torch.linspace(-30, 30, 6001), torch.linspace(-1e-3, 1e-3, 101)]).to(device)
    sp, slope, lg2 = (torch.empty_like(x) for _ in range(3))
    _softplus_probe[(triton.cdiv(x.numel(), 1024),)](x, sp, slope, lg2, x.numel(), USE_ASM=device == "cuda",
                                                     BLOCK=1024)
    x64 = x.double()
    want = torch.nn.functional.softplus(x64)
    for name, got in (("polynomial", sp), ("lg2", lg2)):
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=0, msg=lambda m, n=name: f"{n}: {m}")
    torch.testing.assert_close(slope.double(), torch.sigmoid(x64), rtol=1e-6, atol=0)
    assert bool(scan_fwd.SOFTPLUS_LOG1P_POLY) is (os.environ.get("VIMBENCH_SOFTPLUS_POLY", "1") != "0")
