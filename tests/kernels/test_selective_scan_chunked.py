"""The chunk-parallel scan forward (kernels/selective_scan/chunked.py), forced through the launchers' `split=`,
against the float64 sequential reference and the one-pass kernel: fp32 under the interpreter on CPU (chunks of
4 and 16 tokens, lengths that are shorter than, equal to and not multiples of a chunk), bf16/fp32 on a GPU at
Vim-Ti shapes."""
from __future__ import annotations

import pytest
import torch

from kernels.selective_scan.reference import bimamba_scan_ref, selective_scan_sequential
from _tolerances import TOL, assert_close_to_f64
from test_selective_scan import make_inputs, model_layout, stack_directions


@pytest.fixture(scope="module")
def fwd():
    from kernels.selective_scan import fwd
    return fwd


def _ref64_halves(x, softplus=True):
    """The two gated halves 0.5 * y_dir * SiLU(z) in float64 (0.5 * y_dir without z)."""
    pick = lambda t, i: None if t is None else t[i].double()  # noqa: E731
    y = [selective_scan_sequential(x["u"][i].double(), x["delta"][i].double(), x["A"][i].double(),
                                   x["B"][i].double(), x["C"][i].double(), pick(x["D"], i), None,
                                   pick(x["delta_bias"], i), softplus, reverse=bool(i)) for i in range(2)]
    gate = 0.5 if x["z"] is None else 0.5 * torch.nn.functional.silu(x["z"].double())
    return torch.stack([y[0] * gate, y[1] * gate])


def _close_to_one_pass(got, one_pass):
    """Chunked vs one-pass: the same arithmetic per token, entry states summed in another order."""
    torch.testing.assert_close(got, one_pass, rtol=1e-4, atol=1e-5)


# L = 1, 2, 3: one chunk, shorter than it; 37: chunks of 4 (last one 1 token) or 16 (last 5); 197 (Vim at 224 px,
# slow under the interpreter: the combined form only). 11 channels: two 8-wide interpreter channel blocks, the
# second masked.
@pytest.mark.parametrize("length,split,channels,combine", [
    *[(*case, combine) for case in ((1, 4, 11), (2, 4, 11), (3, 4, 11), (37, 4, 11), (37, 16, 11))
      for combine in (True, False)],
    pytest.param(197, 16, 5, True, marks=pytest.mark.slow)])
def test_chunked_bimamba_scan_matches_f64(fwd, length, split, channels, combine):
    x = stack_directions(1, channels, length)
    out = fwd.bimamba_scan(**x, combine=combine, split=split)
    ref64 = _ref64_halves(x)
    assert out.dtype == torch.float32
    assert_close_to_f64(out, ref64.sum(0) if combine else ref64, torch.float32)
    _close_to_one_pass(out, fwd.bimamba_scan(**x, combine=combine, split=0))


@pytest.mark.parametrize("absent", [("D",), ("z",), ("delta_bias",), ("D", "z", "delta_bias")])
@pytest.mark.parametrize("combine", [True, False])
def test_chunked_optional_inputs(fwd, absent, combine):
    x = {k: (None if k in absent else v) for k, v in stack_directions(2, 5, 23).items()}
    out = fwd.bimamba_scan(**x, combine=combine, split=4)
    ref64 = _ref64_halves(x)
    assert_close_to_f64(out, ref64.sum(0) if combine else ref64, torch.float32)


def test_chunked_without_softplus(fwd):
    x = stack_directions(1, 5, 19)
    x["delta"] = torch.nn.functional.softplus(x["delta"])  # Delta is delta + bias as given: keep it positive
    x["delta_bias"] = 0.01 * x["delta_bias"].abs()
    out = fwd.bimamba_scan(**x, combine=False, delta_softplus=False, split=4)
    assert_close_to_f64(out, _ref64_halves(x, softplus=False), torch.float32)


@pytest.mark.parametrize("length", [37])
def test_chunked_halves_in_place_over_u(fwd, length):
    """out=u: each chunk reads only its own tokens (prefetches past the chunk are masked), so writing the
    halves over u gives what a separate buffer gets."""
    x = model_layout(1, 11, length)
    expected = fwd.bimamba_scan(**x, combine=False, split=0)
    u = x["u"].clone()
    got = fwd.bimamba_scan(**{**x, "u": u}, combine=False, out=u, split=4)
    assert got.data_ptr() == u.data_ptr()
    _close_to_one_pass(got, expected)


@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_selective_scan(fwd, reverse):
    x = make_inputs(2, 5, 37)
    out = fwd.selective_scan(**x, reverse=reverse, split=16)
    ref64 = selective_scan_sequential(**{k: v.double() for k, v in x.items()}, reverse=reverse)
    assert_close_to_f64(out, ref64, torch.float32)


# Chunk T and checkpoint interval K: T a multiple of K, T not a multiple of K (6 vs 4), T = K (the chunks' entry
# states are the checkpoints: `ChunkedScanConfig.entries_are_checkpoints`; with 6, an odd number of main trips
# per chunk), one chunk.
@pytest.mark.parametrize("length,split,every", [(37, 8, 4), (37, 6, 4), (37, 4, 4), (37, 6, 6), (3, 4, 2)])
@pytest.mark.parametrize("combine", [True, False])
def test_chunked_fwd_save_checkpoints_equal_one_pass(fwd, length, split, every, combine):
    x = stack_directions(1, 11, length)
    out, ckpt = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=every, split=split)
    out1, ckpt1 = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=every, split=0)
    assert ckpt.shape == ckpt1.shape == (2, 1, -(-length // every), 16, x["u"].shape[2])
    _close_to_one_pass(out, out1)
    _close_to_one_pass(ckpt, ckpt1)
    assert torch.equal(ckpt[:, :, 0], torch.zeros_like(ckpt[:, :, 0]))


@pytest.mark.parametrize("combine", [True, False])
def test_entry_checkpoints_equal_the_in_loop_ones(fwd, monkeypatch, combine):
    """With T == K the combine writes the chunks' entry states into the checkpoint buffer and zeroes slot 0; the
    result is bitwise what pass 3 stores from inside its loop (ENTRY_CHECKPOINTS off), outputs included."""
    from kernels.selective_scan import chunked

    assert chunked.chunked_scan_launch_config(1, 11, 37, 2, 16, interpreted=True, sm_count=1, split=8,
                                              save_every=8).entries_are_checkpoints
    x = stack_directions(1, 11, 37)
    out, ckpt = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=8, split=8)
    monkeypatch.setattr(chunked, "ENTRY_CHECKPOINTS", False)
    assert not chunked.chunked_scan_launch_config(1, 11, 37, 2, 16, interpreted=True, sm_count=1, split=8,
                                                  save_every=8).entries_are_checkpoints
    out0, ckpt0 = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=8, split=8)
    assert torch.equal(ckpt, ckpt0) and torch.equal(out, out0)


def test_chunked_is_deterministic(fwd):
    x = stack_directions(1, 5, 13)
    assert torch.equal(fwd.bimamba_scan(**x, split=4), fwd.bimamba_scan(**x, split=4))


def test_odd_split_raises(fwd):
    x = stack_directions(1, 5, 9)
    with pytest.raises(ValueError, match="split must be"):
        fwd.bimamba_scan(**x, split=3)


# ------------------------------------------------------------------------------------------- the dispatch rule

def test_dispatch_chunks_underfilled_grids_of_long_sequences_only():
    from kernels.selective_scan.chunked import (CHUNK_TOKENS, MIN_CHUNKED_LENGTH, chunked_scan_launch_config)

    def plan(batch, length, **kw):
        return chunked_scan_launch_config(batch, 384, length, 2, 16, interpreted=False, sm_count=132, **kw)

    assert plan(64, 6085) is None  # 1,536 one-pass programs: full
    assert plan(32, 6085) is None  # 768: >= 4 per SM
    train = plan(8, 6085, save_every=64)  # 192 programs: chunked, T a multiple of the checkpoint interval
    assert train is not None and train.chunk % 64 == 0 and train.chunk >= CHUNK_TOKENS
    assert train.n_chunks == -(-6085 // train.chunk) and train.chunk * (train.n_chunks - 1) < 6085
    assert train.outputs.grid == (384 // 32, train.n_chunks, 2 * 8)
    assert train.states.grid[1] == train.n_chunks - 1
    assert plan(8, 6085, save_every=96).chunk % 96 == 0
    assert plan(8, 6085, save_every=128).entries_are_checkpoints  # the training interval: T == K
    assert not train.entries_are_checkpoints and not plan(8, 6085).entries_are_checkpoints
    assert plan(1, 6085).chunk == CHUNK_TOKENS
    assert plan(1, 197) is None and plan(1, MIN_CHUNKED_LENGTH - 1) is None  # short: three launches lose
    assert plan(1, MIN_CHUNKED_LENGTH) is not None
    assert chunked_scan_launch_config(8, 384, 6085, 2, 16, interpreted=True, sm_count=1) is None
    assert plan(64, 6085, split=128).chunk == 128  # forced either way
    assert plan(1, 197, split=16).chunk == 16
    assert plan(1, 6085, split=0) is None


def test_captured_launches_chunk_short_sequences_on_small_grids():
    from kernels.selective_scan.chunked import (CAPTURED_CHUNK_TOKENS, CHUNK_TOKENS, MIN_CHUNKED_LENGTH,
                                                chunked_scan_launch_config)

    def plan(batch, length, channels=384, **kw):
        return chunked_scan_launch_config(batch, channels, length, 2, 16, interpreted=False, sm_count=132,
                                          captured=True, **kw)

    assert plan(1, 197).chunk == 16 and plan(1, 197).n_chunks == 13  # Vim-Ti batch 1 at 224 px
    assert plan(1, 577).chunk == 32  # 384 px
    assert plan(1, 197, channels=1536).chunk == 16  # Vim-B: 96 programs
    assert plan(8, 197).chunk == 16  # 192 programs, below 2 per SM
    assert plan(16, 197) is None  # 384 programs: the one-pass grid is busy enough
    assert plan(1, 6085).chunk == CHUNK_TOKENS  # long sequences keep the uncaptured rule
    assert plan(16, 6085).chunk == CHUNK_TOKENS
    assert plan(1, 197, save_every=64).chunk == 64  # training: chunk entries stay checkpoints
    assert plan(1, 40, save_every=64) is None  # one chunk: the one-pass kernel
    assert plan(1, 197, split=0) is None
    assert chunked_scan_launch_config(1, 384, 197, 2, 16, interpreted=True, sm_count=1, captured=True) is None
    assert [longest for longest, _ in CAPTURED_CHUNK_TOKENS][-1] == MIN_CHUNKED_LENGTH  # every short length has a row


def test_captured_chunks_or_token_blocks(monkeypatch):
    """Where the one-pass launch is the token-block kernel (token_blocks), captured sequences of at most
    TOKEN_BLOCKS_MAX_CAPTURED_LENGTH tokens run it instead of chunks (as measured: 197 tokens); longer ones (577)
    and the token walk keep the captured chunks; 0 turns the exception off."""
    from kernels.selective_scan import chunked

    def plan(batch, length, **kw):
        return chunked.chunked_scan_launch_config(batch, 384, length, 2, 16, interpreted=False, sm_count=132,
                                                  captured=True, **kw)

    monkeypatch.setattr(chunked, "TOKEN_BLOCKS_MAX_CAPTURED_LENGTH", 256)
    assert plan(1, 197, token_blocks=True) is None
    assert plan(8, 197, token_blocks=True) is None
    assert plan(1, 577, token_blocks=True).chunk == 32
    assert plan(1, 197).chunk == 16  # the token walk: chunks still pay
    assert plan(1, 6085, token_blocks=True).chunk == chunked.CHUNK_TOKENS
    monkeypatch.setattr(chunked, "TOKEN_BLOCKS_MAX_CAPTURED_LENGTH", 0)
    assert plan(1, 197, token_blocks=True).chunk == 16


def test_chunk_passes_prefetch_into_l1_where_measured():
    """Passes 1 and 3 prefetch DEFAULT_L1_AHEAD steps ahead into L1 in chunks of at least L1_MIN_CHUNK_TOKENS
    (measured: the 1248 px batch-8 training and inference forwards), not in the captured path's short chunks nor
    under the interpreter; the combine pass never."""
    from kernels.selective_scan import chunked

    assert chunked.DEFAULT_L1_AHEAD > 0 and chunked.CHUNK_TOKENS >= chunked.L1_MIN_CHUNK_TOKENS
    ahead = lambda cfg: (cfg.states.constexprs["L1_AHEAD"], cfg.outputs.constexprs["L1_AHEAD"])
    plan = lambda b, L, **kw: chunked.chunked_scan_launch_config(b, 384, L, 2, 16, sm_count=132, **kw)
    on = chunked.DEFAULT_L1_AHEAD
    assert ahead(plan(8, 6085, interpreted=False, save_every=64)) == (on, on)
    assert ahead(plan(8, 6085, interpreted=False)) == (on, on)
    assert ahead(plan(1, 197, interpreted=False, captured=True)) == (0, 0)  # 16-token chunks
    assert ahead(plan(8, 6085, interpreted=True, split=128)) == (0, 0)
    assert "L1_AHEAD" not in plan(8, 6085, interpreted=False).combine.constexprs


# ------------------------------------------------------------------------------------------- GPU, Vim-Ti shapes

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,length", [(1, 6085), (8, 6085), (1, 197)])
@pytest.mark.parametrize("combine", [True, False])
def test_chunked_bimamba_scan_gpu(fwd, dtype, batch, length, combine):
    x = model_layout(batch, 384, length, dtype=dtype, device="cuda")
    plain = bimamba_scan_ref(**x)
    ref64 = _ref64_halves(x).sum(0)
    for split in (None, 64, 256):  # None: the dispatch's choice (chunked at these shapes on an H200)
        out = fwd.bimamba_scan(**x, combine=combine, split=split)
        assert out.dtype == dtype
        assert_close_to_f64(out.double() if combine else out.double().sum(0), ref64, dtype, plain)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("every", [64, 128])  # 128 (the training interval): the entry states are the checkpoints
def test_chunked_fwd_save_gpu(fwd, dtype, every):
    x = model_layout(8, 384, 6085, dtype=dtype, device="cuda")
    out1, ckpt1 = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=every, split=0)
    for split in (None, 128, 384):
        out, ckpt = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=every, split=split)
        rtol, atol = TOL[dtype]
        torch.testing.assert_close(out.float(), out1.float(), rtol=rtol, atol=atol)
        torch.testing.assert_close(ckpt, ckpt1, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_chunked_l1_prefetch_changes_nothing(fwd, monkeypatch):
    """Passes 1 and 3's L1 prefetch is a cache hint: the training forward's checkpoints at Vim-Ti 1248 px batch 8 are
    bitwise those without it, and so is the output away from the ends of L. Near the ends (the last steps of either
    direction) the prefetch moves a few steps from the main trips to the masked tail trips (main_trips leaves room
    for the prefetched tokens), compiled separately and free to round differently: there within one bf16 rounding
    step of the largest output (measured: 1 element of 18.7 million, 4.4e-7 of the largest magnitude,
    results/history/scripts/l1diff.py)."""
    from kernels.selective_scan import chunked

    x = model_layout(8, 384, 6085, dtype=torch.bfloat16, device="cuda")
    assert chunked.DEFAULT_L1_AHEAD > 0
    out, ckpt = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=64)
    monkeypatch.setattr(chunked, "DEFAULT_L1_AHEAD", 0)
    out0, ckpt0 = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=64)
    assert torch.equal(ckpt, ckpt0)
    edge = 4 + 2 * chunked.DEFAULT_L1_AHEAD  # tokens at either end of L (out is (batch, E, L))
    assert torch.equal(out[..., edge:-edge], out0[..., edge:-edge])
    torch.testing.assert_close(out.float(), out0.float(), rtol=0, atol=2.0 ** -8 * out.float().abs().max().item())


@pytest.mark.gpu
@pytest.mark.parametrize("combine", [True, False])
def test_a_captured_scan_runs_chunked_and_replays_correctly(fwd, combine):
    """Under CUDA-graph capture, batch 1 at 577 tokens takes the captured rule (chunks of 32): the replayed output
    equals the eager launch forced to the same chunks, bitwise, and the float64 reference within tolerance. At
    197 tokens the capture runs the token-block kernel, as the eager launch does (TOKEN_BLOCKS_MAX_CAPTURED_LENGTH):
    bitwise the eager output."""
    for length, chunk in ((577, 32), (197, None)):
        x = model_layout(1, 384, length, dtype=torch.bfloat16, device="cuda")
        forced = fwd.bimamba_scan(**x, combine=combine, split=chunk) if chunk else None
        one_pass = fwd.bimamba_scan(**x, combine=combine)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (compiles) outside the capture
            fwd.bimamba_scan(**x, combine=combine)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = fwd.bimamba_scan(**x, combine=combine)
        graph.replay()
        torch.cuda.synchronize()
        if chunk:
            assert torch.equal(captured, forced)
            assert not torch.equal(one_pass, forced)  # the capture did take another path than the eager launch
        else:
            assert torch.equal(captured, one_pass)
        ref64 = _ref64_halves(x).sum(0)
        assert_close_to_f64(captured.double() if combine else captured.double().sum(0), ref64, torch.bfloat16,
                            bimamba_scan_ref(**x))
