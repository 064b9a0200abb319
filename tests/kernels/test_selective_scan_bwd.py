"""Backward of the Triton bidirectional scan (kernels/selective_scan/bwd.py) and the checkpointing forward, against
torch.autograd through the float64 sequential reference: fp32 under the interpreter on CPU, bf16/fp32 on a GPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels.selective_scan.reference import bimamba_scan_ref, selective_scan_sequential
from _tolerances import TOL
from test_selective_scan import model_layout, stack_directions

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@pytest.fixture(scope="module")
def scan():
    from kernels.selective_scan import bwd, fwd
    return fwd, bwd


def _pick(t, i):
    return None if t is None else t[i]


def reference_out(x, combine, softplus=True):
    """The scan's output from the float64 sequential reference, one direction at a time (differentiable)."""
    y = [selective_scan_sequential(x["u"][i], x["delta"][i], x["A"][i], x["B"][i], x["C"][i], _pick(x["D"], i),
                                   None, _pick(x["delta_bias"], i), softplus, reverse=bool(i)) for i in range(2)]
    gate = 0.5 if x["z"] is None else 0.5 * F.silu(x["z"])
    return (y[0] + y[1]) * gate if combine else torch.stack([y[0] * gate, y[1] * gate])


def reference_grads(x, grad_out, combine, softplus=True):
    """d<grad_out, out>/d input for every input present, by autograd in float64."""
    x64 = {k: None if v is None else v.detach().double().requires_grad_() for k, v in x.items()}
    reference_out(x64, combine, softplus).backward(grad_out.double())
    return {k: None if v is None else v.grad for k, v in x64.items()}


def run_triton(scan, x, combine, chunk, softplus=True, seed=0, **split):
    fwd, bwd = scan
    out, checkpoints = fwd.bimamba_scan_fwd_save(**x, delta_softplus=softplus, combine=combine, chunk=chunk)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    grads = bwd.bimamba_scan_bwd(g, **x, checkpoints=checkpoints, delta_softplus=softplus, combine=combine,
                                 chunk=chunk, **split)
    return out, g, dict(zip(GRAD_NAMES, grads))


def assert_grads_close(got, want, x, rtol=1e-4, atol=1e-5):
    for name in GRAD_NAMES:
        if x[name] is None:
            assert got[name] is None, f"d{name} must be None when {name} is absent"
            continue
        assert got[name] is not None, f"d{name} missing"
        assert got[name].shape == x[name].shape, f"d{name} shape {tuple(got[name].shape)}"
        # scale the absolute tolerance by the gradient's size: dA sums over batch and tokens
        scale = max(1.0, want[name].abs().max().item())
        torch.testing.assert_close(got[name].double(), want[name], rtol=rtol, atol=atol * scale,
                                   msg=lambda m, n=name: f"d{n}: {m}")


def without(x, *names):
    return {k: (None if k in names else v) for k, v in x.items()}


# 13 channels: two 8-wide interpreter channel blocks, the second masked. Chunks of 2 or 4 steps make L = 3 and 19
# cross several checkpoints (and end in a partial chunk).
@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize("length,chunk", [(1, 2), (2, 2), (3, 2), (19, 4)])
def test_bwd_matches_autograd_f64(scan, length, chunk, combine):
    x = model_layout(1 if length > 3 else 2, 13, length)
    out, g, got = run_triton(scan, x, combine, chunk)
    assert_grads_close(got, reference_grads(x, g, combine), x)


@pytest.mark.parametrize("absent", [("D", "z", "delta_bias"), ("z",), ("D", "delta_bias")])
@pytest.mark.parametrize("combine", [True, False])
def test_bwd_optional_inputs(scan, absent, combine):
    x = without(model_layout(1, 11, 9, seed=5), *absent)
    _, g, got = run_triton(scan, x, combine, chunk=4)
    assert_grads_close(got, reference_grads(x, g, combine), x)


def test_bwd_without_softplus(scan):
    x = model_layout(1, 6, 11, seed=6)
    x["delta"] = F.softplus(x["delta"])  # Delta is delta + bias as given: keep it positive
    x["delta_bias"] = 0.01 * x["delta_bias"].abs()
    _, g, got = run_triton(scan, x, combine=True, chunk=4, softplus=False)
    assert_grads_close(got, reference_grads(x, g, combine=True, softplus=False), x)


def test_bwd_contiguous_inputs_and_layouts(scan):
    """Token-contiguous u/delta/z and B, C as views of a (2, b, R + 2N, L) buffer; gradients keep u's layout."""
    x = stack_directions(2, 10, 13)
    _, g, got = run_triton(scan, x, combine=True, chunk=6)
    assert_grads_close(got, reference_grads(x, g, combine=True), x)
    assert got["u"].stride() == x["u"].stride() and got["delta"].stride() == x["delta"].stride()


def test_bwd_channel_last_outputs_keep_layout(scan):
    x = model_layout(1, 8, 5)
    _, _, got = run_triton(scan, x, combine=False, chunk=2)
    assert got["u"].stride() == x["u"].stride(), "du is laid out like u (channel-last views of (2, B, L, E))"
    assert got["z"].dtype == x["z"].dtype
    assert got["A"].dtype == got["B"].dtype == torch.float32


def test_fwd_save_output_and_checkpoints(scan):
    """The training forward returns what bimamba_scan returns, and checkpoint k of each direction is the state
    entering scan step k * chunk (the float64 recurrence run step by step)."""
    fwd, _ = scan
    x = model_layout(2, 5, 9, seed=7)
    chunk = 4
    for combine in (True, False):
        out, ck = fwd.bimamba_scan_fwd_save(**x, combine=combine, chunk=chunk)
        torch.testing.assert_close(out, fwd.bimamba_scan(**x, combine=combine), rtol=0, atol=0)
    assert ck.shape == (2, 2, 3, 16, 5) and ck.dtype == torch.float32 and ck.is_contiguous()
    for i in range(2):
        d = F.softplus(x["delta"][i].double() + x["delta_bias"][i].double()[:, None])  # (b, E, L)
        u, A, B = x["u"][i].double(), x["A"][i].double(), x["B"][i].double()
        h = torch.zeros(2, 5, 16, dtype=torch.float64)
        order = range(8, -1, -1) if i else range(9)
        for step, t in enumerate(order):
            if step % chunk == 0:
                torch.testing.assert_close(ck[i, :, step // chunk].double(), h.transpose(1, 2), rtol=1e-5,
                                           atol=1e-6)
            dt = d[:, :, t, None]
            h = torch.exp(dt * A) * h + dt * B[:, None, :, t] * u[:, :, t, None]


@pytest.mark.parametrize("dtype,split", [(torch.float32, None), (torch.bfloat16, None), (torch.float32, 4)])
def test_fwd_save_ordered_sum(scan, dtype, split):
    """ordered_sum=True: the two directions in two launches, the second adding the first's stored half. The
    combined output, laid out (batch, L, E), equals the sum of the halves (bitwise in fp32 up to the order of one
    addition; bf16: one rounding of the forward half, then of the sum), and the checkpoints are bitwise the
    one-launch forward's; the one-pass kernel and the chunk-parallel passes (split=4)."""
    fwd, _ = scan
    x = model_layout(2, 13, 19, dtype=dtype, seed=11)
    halves, ck = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=4, split=split)
    y, ck2 = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=4, split=split, ordered_sum=True)
    assert y.shape == (2, 13, 19) and y.dtype == dtype and y.transpose(1, 2).is_contiguous()
    assert torch.equal(ck, ck2)
    want = halves.float().sum(0)
    if dtype == torch.float32:
        torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-7)
    else:  # the interpreter's bf16 cast truncates: 2^-7 per rounding
        torch.testing.assert_close(y.float(), want, rtol=2 ** -6, atol=2 ** -6 * want.abs().max().item())
    with pytest.raises(ValueError, match="ordered_sum"):
        fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=4, ordered_sum=True)


def test_bwd_is_deterministic(scan):
    fwd, bwd = scan
    x = model_layout(1, 13, 6, seed=8)
    out, ck = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=4)
    g = torch.randn_like(out)
    first = bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, chunk=4)
    second = bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, chunk=4)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


# ---- the chunk-parallel split of L: forced to one group (the sequential walk), two groups, and one chunk per
# group (many groups), against the float64 reference -------------------------------------------------------------

def _groups(bwd, length, chunk, chunks_per_program):
    return bwd.scan_bwd_launch_config(1, 13, length, chunk, True, chunks_per_program).groups


# (the interpreter's default split, 2 chunks per group, is what the tests above run)
@pytest.mark.parametrize("length,chunk,split,combine", [(1, 2, "many", True), (2, 2, "two", False),
                                                        (3, 2, "many", False), (3, 2, "one", True),
                                                        (19, 4, "many", False), (19, 4, "one", True)])
def test_bwd_chunk_groups_match_autograd(scan, length, chunk, combine, split):
    n_chunks = -(-length // chunk)
    cpp = {"one": n_chunks, "two": -(-n_chunks // 2), "many": 1}[split]
    groups = _groups(scan[1], length, chunk, cpp)
    assert groups == {"one": 1, "two": min(2, n_chunks), "many": n_chunks}[split]
    x = model_layout(1, 13, length, seed=length)
    _, g, got = run_triton(scan, x, combine, chunk, chunks_per_program=cpp)
    assert_grads_close(got, reference_grads(x, g, combine), x)


@pytest.mark.parametrize("carry_prefetch", [True, False])
def test_bwd_group_carry_both_loops(scan, monkeypatch, carry_prefetch):
    """Pass A two steps per trip with the next two prefetched (CARRY_PREFETCH, the default) and one step per trip:
    groups of 4 steps and a last group of 3 (an odd step after the pairs), against the float64 reference."""
    monkeypatch.setattr(scan[1], "CARRY_PREFETCH", carry_prefetch)
    assert _groups(scan[1], 19, 4, 1) == 5
    x = model_layout(1, 13, 19, seed=5)
    _, g, got = run_triton(scan, x, True, 4, chunks_per_program=1)
    assert_grads_close(got, reference_grads(x, g, True), x)


@pytest.mark.slow
def test_bwd_chunk_groups_long_sequence(scan):
    """L = 197 (Vim at 224 px) in 13 chunks of 16: 5 groups of three (the last one chunk, partial), gated halves as
    the bf16 model uses them; 5 channels: one masked block per direction (the interpreter is slow)."""
    x = model_layout(1, 5, 197, seed=3)
    _, g, got = run_triton(scan, x, combine=False, chunk=16, chunks_per_program=3)
    assert_grads_close(got, reference_grads(x, g, combine=False), x)


@pytest.mark.parametrize("absent,combine", [(("D", "z", "delta_bias"), True), (("z",), False),
                                            (("D", "delta_bias"), True)])
def test_bwd_chunk_groups_optional_inputs(scan, absent, combine):
    """Pass A's dy without z is g alone; D and delta_bias change the walk's outputs, not the group carries."""
    x = without(model_layout(1, 11, 13, seed=9), *absent)
    _, g, got = run_triton(scan, x, combine, chunk=4, chunks_per_program=1)
    assert_grads_close(got, reference_grads(x, g, combine), x)


def test_bwd_chunk_groups_without_softplus(scan):
    x = model_layout(1, 6, 11, seed=10)
    x["delta"] = F.softplus(x["delta"])
    x["delta_bias"] = 0.01 * x["delta_bias"].abs()
    _, g, got = run_triton(scan, x, combine=True, chunk=4, softplus=False, chunks_per_program=2)
    assert_grads_close(got, reference_grads(x, g, combine=True, softplus=False), x)


@pytest.mark.parametrize("combine,chunks_per_program", [(True, None), (False, 1)])
def test_bwd_softplus_done(scan, combine, chunks_per_program):
    """delta given as Delta = softplus(pre + bias) (made before the scan: kernels.dt_softplus); the forward runs
    without softplus or bias and the backward (softplus_done) still returns the gradients of pre and of the bias:
    those of the scan on pre, from the slope 1 - e^-Delta (its series below Delta = 1/16, e^-Delta above: pre is
    spread so that both occur); without groups and with pass A's group carries (chunks_per_program=1)."""
    fwd, bwd = scan
    x = model_layout(1, 13, 11, seed=12)
    spread = torch.linspace(-3.0, 4.0, 13).view(1, 1, 13, 1)  # per channel: Delta from ~0.01 to ~3
    x["delta"] = (x["delta"] + spread).transpose(2, 3).contiguous().transpose(2, 3)  # channel-last again
    post = F.softplus(x["delta"].double() + x["delta_bias"].double()[:, None, :, None]).float()
    assert (post < 1 / 16).any() and (post > 1 / 16).any()
    out, checkpoints = fwd.bimamba_scan_fwd_save(**{**x, "delta": post, "delta_bias": None}, delta_softplus=False,
                                                 combine=combine, chunk=4)
    torch.testing.assert_close(out.double(), reference_out(x, combine).double(), rtol=1e-4, atol=1e-5)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
    grads = bwd.bimamba_scan_bwd(g, **{**x, "delta": post}, checkpoints=checkpoints, delta_softplus=True,
                                 combine=combine, chunk=4, chunks_per_program=chunks_per_program, softplus_done=True)
    assert_grads_close(dict(zip(GRAD_NAMES, grads)), reference_grads(x, g, combine), x)
    with pytest.raises(ValueError, match="delta_softplus must be True"):
        bwd.bimamba_scan_bwd(g, **{**x, "delta": post}, checkpoints=checkpoints, delta_softplus=False,
                             combine=combine, chunk=4, softplus_done=True)


def test_bwd_channel_block_override(scan):
    """block_c (channels per program) forced to 16 under the interpreter: 13 channels in a masked block, the
    float64 reference's gradients; a width other than 8, 16 or 32 is refused."""
    _, bwd = scan
    assert bwd.scan_bwd_launch_config(1, 13, 11, 4, True, block_c=16).walk.constexprs["BLOCK_C"] == 16
    x = model_layout(1, 13, 11, seed=12)
    _, g, got = run_triton(scan, x, combine=False, chunk=4, chunks_per_program=1, block_c=16)
    assert_grads_close(got, reference_grads(x, g, combine=False), x)
    with pytest.raises(ValueError, match="block_c"):
        bwd.scan_bwd_launch_config(1, 13, 11, 4, True, block_c=12)


def test_bwd_without_prefetch(scan):
    """prefetch=False (each step's loads issued in that step; the register-cap experiment's variant) gives the
    float64 reference's gradients under the interpreter; maxnreg is a launch option the interpreter ignores, and
    the config refuses caps outside 32..255."""
    _, bwd = scan
    cfg = bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, prefetch=False, maxnreg=168)
    assert cfg.walk.constexprs["PREFETCH"] is False and cfg.walk.maxnreg == 168
    assert cfg.walk.launch_options()["maxnreg"] == 168
    assert cfg.carry.constexprs["PREFETCH"] is bwd.CARRY_PREFETCH  # pass A has its own choice
    assert bwd.scan_bwd_launch_config(8, 384, 6085, 64, True, maxnreg=168).walk.maxnreg is None
    x = model_layout(1, 13, 11, seed=13)
    _, g, got = run_triton(scan, x, combine=False, chunk=4, prefetch=False, maxnreg=168)
    assert_grads_close(got, reference_grads(x, g, combine=False), x)
    with pytest.raises(ValueError, match="maxnreg"):
        bwd.scan_bwd_launch_config(1, 13, 11, 4, True, maxnreg=300)


def test_bwd_prefetch_choice(scan):
    """Automatic launch (prefetch None): with 16-bit operands the walk drops the prefetch and is capped at 168
    registers where its grid holds more programs than one wave of the prefetching walk (8 per SM), keeps it at one
    wave or less, on more SMs, in fp32 and under the interpreter; an explicit choice wins."""
    _, bwd = scan

    def launch(batch, length, interpreted=False, **kw):
        cfg = bwd.scan_bwd_launch_config(batch, 384, length, 64, interpreted, **kw)
        programs = cfg.walk.grid[0] * cfg.walk.grid[1] * cfg.walk.grid[2]
        return cfg.walk.constexprs["PREFETCH"], cfg.walk.maxnreg, cfg.carry and cfg.carry.constexprs["PREFETCH"], \
            programs

    assert launch(128, 197)[:2] == (False, 168) and launch(128, 197)[3] > 8 * 132  # Vim-Ti 224 px, batch 128
    assert launch(8, 6085)[:3] == (False, 168, bwd.CARRY_PREFETCH)                # 1248 px, batch 8: split in groups
    prefetching, cap, _, programs = launch(32, 1025)                               # 512 px, batch 32: one wave
    assert (prefetching, cap) == (True, None) and programs <= 8 * 132
    assert launch(128, 197, sm_count=400)[:2] == (True, None)
    assert launch(128, 197, fp32=True)[:2] == (True, None)
    assert launch(128, 197, interpreted=True)[:2] == (True, None)
    assert launch(128, 197, prefetch=True)[:2] == (True, None)
    assert launch(32, 1025, prefetch=False)[:2] == (False, None)
    assert launch(128, 197, maxnreg=200)[:2] == (False, 200)


def test_bwd_l1_prefetch_where_measured(scan):
    """The walk's L1 prefetches: automatic where they were measured to pay (16-bit operands; the input lines in the
    prefetching one-wave walk of programs of at least L1_MIN_STEPS steps, Vim-Ti 512 px batch 32, and in the capped
    pairs walk, 1248 px batch 8 and 224 px batch 128, where the scratch tile SCRATCH_AHEAD_STEPS on is prefetched
    too), off for short one-wave walks, fp32 and under the interpreter; an explicit distance wins on the GPU, a
    negative one is refused; the carry kernel (pass A) has its own distance, CARRY_L1_AHEAD."""
    _, bwd = scan
    cfg = lambda b, L, **kw: bwd.scan_bwd_launch_config(b, 384, L, 64, kw.pop("interpreted", False), **kw)
    on, scratch_on = bwd.L1_AHEAD_STEPS, bwd.SCRATCH_AHEAD_STEPS
    assert bwd.DEFAULT_L1_AHEAD is None and bwd.DEFAULT_SCRATCH_AHEAD is None and on > 0 and scratch_on > 0
    ahead = lambda c: (c.walk.constexprs["L1_AHEAD"], c.walk.constexprs["SCRATCH_AHEAD"])
    one_wave = cfg(32, 1025)
    assert one_wave.walk.constexprs["PREFETCH"] and ahead(one_wave) == (on, 0)
    for capped in (cfg(8, 6085), cfg(128, 197)):
        assert not capped.walk.constexprs["PREFETCH"] and capped.walk.constexprs["PAIRS"]
        assert ahead(capped) == (on, scratch_on)
    assert ahead(cfg(8, 6085, pairs=False)) == (0, 0)
    assert ahead(cfg(2, 197, prefetch=True)) == (0, 0)  # 197 steps: too short
    assert ahead(cfg(32, 1025, fp32=True)) == (0, 0)
    assert ahead(cfg(8, 6085, fp32=True, prefetch=False, maxnreg=168)) == (0, 0)  # fp32 unmeasured
    assert ahead(cfg(8, 6085, interpreted=True)) == (0, 0)
    assert ahead(cfg(128, 197, l1_ahead=4, scratch_ahead=0)) == (4, 0)
    assert ahead(cfg(32, 1025, l1_ahead=0, scratch_ahead=2)) == (0, 2)
    assert cfg(8, 6085, l1_ahead=4).carry.constexprs["L1_AHEAD"] == bwd.CARRY_L1_AHEAD  # pass A: its own
    assert cfg(8, 6085, interpreted=True).carry.constexprs["L1_AHEAD"] == 0
    assert ahead(cfg(8, 6085, l1_ahead=4, scratch_ahead=4, interpreted=True)) == (0, 0)
    with pytest.raises(ValueError, match="l1_ahead"):
        cfg(8, 6085, l1_ahead=-1)
    with pytest.raises(ValueError, match="scratch_ahead"):
        cfg(8, 6085, scratch_ahead=-1)


@pytest.mark.parametrize("length,chunk,split,combine", [(1, 2, None, True), (2, 2, None, False), (3, 2, 1, True),
                                                         (3, 2, 1, False), (19, 4, 2, True), (23, 8, 1, False)])
def test_bwd_pairs_walk(scan, length, chunk, split, combine):
    """pairs=True (without prefetch and sub-chunks): every other state stored, the walk two steps at a time; the
    float64 reference's gradients for odd and even chunk lengths, a partial last chunk, one and several groups,
    both output forms. With prefetch or sub-chunks the flag is ignored."""
    _, bwd = scan
    x = model_layout(1, 13, length, seed=17)
    _, g, got = run_triton(scan, x, combine=combine, chunk=chunk, prefetch=False, sub_chunk=0, pairs=True,
                           chunks_per_program=split)
    assert_grads_close(got, reference_grads(x, g, combine=combine), x)
    assert bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, prefetch=False, pairs=True).walk.constexprs["PAIRS"]
    assert not bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, prefetch=True, pairs=True).walk.constexprs["PAIRS"]
    assert not bwd.scan_bwd_launch_config(8, 384, 6085, 64, True, prefetch=False, sub_chunk=3,
                                          pairs=True).walk.constexprs["PAIRS"]


@pytest.mark.parametrize("walk", [dict(prefetch=False, sub_chunk=0, pairs=True), dict(prefetch=True, sub_chunk=0),
                                  dict(prefetch=False, sub_chunk=0, pairs=False), dict(prefetch=False, sub_chunk=3)])
def test_bwd_carried_leaving_state(scan, walk):
    """The leaving state carried from the step walked before (or the recomputation's end state) instead of
    recomputed: carry_h=True in every walk (pairs, prefetching, plain, sub-chunks), and the pairs walk two steps per
    trip (pair_trips=True; ignored without pairs) give the recomputing walk's gradients bitwise; odd and even
    segment lengths (a trip's lone even step), a partial last chunk, several groups, both output forms, with and
    without dz halves; and the float64 reference's."""
    pairs = walk.get("pairs", False)
    cases = ((True, 11, 4, {}), (False, 15, 6, {}), (True, 13, 6, dict(dz_halves=True)))
    for combine, length, chunk, forms in cases if pairs else cases[:2]:
        x = model_layout(1, 13, length, seed=29)
        run = lambda **kw: run_triton(scan, x, combine=combine, chunk=chunk, chunks_per_program=2,  # noqa: E731
                                      **walk, **forms, **kw)
        _, g, off = run(carry_h=False, pair_trips=False)
        for kw in (dict(carry_h=True, pair_trips=False),) + ((dict(carry_h=False, pair_trips=True),) if pairs else ()):
            _, _, on = run(**kw)
            for name in GRAD_NAMES:
                if off[name] is None:
                    assert on[name] is None
                    continue
                torch.testing.assert_close(on[name], off[name], rtol=0, atol=0,
                                           msg=lambda m, n=name, k=kw: f"d{n} {k}: {m}")
        if not forms:
            assert_grads_close(on, reference_grads(x, g, combine=combine), x)


def test_bwd_carried_state_choice(scan):
    """Where the carried leaving state applies by default: the capped 16-bit pairs walk (Vim-Ti's training shapes,
    measured faster) and under the interpreter; never with fp32 or the prefetching walk. Two steps per trip
    (measured slower) only when asked for, and never without pairs. Forcing either overrides."""
    _, bwd = scan
    ce = lambda **kw: bwd.scan_bwd_launch_config(8, 384, 6085, 128, False, **kw).walk.constexprs  # noqa: E731
    assert ce()["CARRY_H"] is (bwd.DEFAULT_CARRY_H is not False)
    assert ce()["PAIR_TRIPS"] is bool(bwd.DEFAULT_PAIR_TRIPS) and ce(pair_trips=True)["PAIR_TRIPS"]
    for kw in (dict(fp32=True), dict(prefetch=True)):
        assert not ce(**kw)["CARRY_H"] and not ce(pair_trips=True, **kw)["PAIR_TRIPS"]  # prefetch: no pairs
    assert not ce(pairs=False, pair_trips=True)["PAIR_TRIPS"] and ce(prefetch=True, carry_h=True)["CARRY_H"]
    assert not ce(carry_h=False)["CARRY_H"]
    interp = bwd.scan_bwd_launch_config(1, 13, 19, 4, True, pairs=True, prefetch=False, sub_chunk=0).walk.constexprs
    assert interp["CARRY_H"] and interp["PAIR_TRIPS"] is bool(bwd.DEFAULT_PAIR_TRIPS)


@pytest.mark.parametrize("walk,combine,length", [(dict(pairs=True, prefetch=False, sub_chunk=0), True, 15),
                                                 (dict(pairs=True, prefetch=False, sub_chunk=0), False, 13),
                                                 (dict(chunks_per_program=1, sub_chunk=3), True, 11)])
def test_bwd_reduce_scatter_orders(scan, walk, combine, length):
    """The dB/dC reduce-scatter over 32 lanes (`_scattered_lane_sums`; under the interpreter its shuffles are gathers
    along the channel axis), from the natural state order and from the XOR order (scatter_xor: every tile's row r of
    lane l is state r ^ _state_xor(l), so A, the checkpoints, the group carries, B, C and dA all move in that order):
    the float64 reference's gradients and tl.sum's within fp32 rounding; the XOR order also with the scratch's state
    tiles as per-lane groups of 4 (vec_scratch). 40 channels: a full block of 32 and a masked one; the pairs walk
    over several groups (group carries), the walk over sub-chunks (sub-checkpoints in the scratch); both output
    forms."""
    x = model_layout(1, 40, length, seed=31)
    run = lambda **kw: run_triton(scan, x, combine=combine, chunk=4, block_c=32, **walk, **kw)  # noqa: E731
    _, g, summed = run(scatter_sums=False, vec_scratch=False)
    want = reference_grads(x, g, combine=combine)
    assert_grads_close(summed, want, x)
    for order in (dict(scatter_sums=True, scatter_xor=False, vec_scratch=False),
                  dict(scatter_sums=True, scatter_xor=True, vec_scratch=False),
                  dict(scatter_sums=True, scatter_xor=True, vec_scratch=True)):
        _, _, got = run(**order)
        assert_grads_close(got, want, x)
        for name in GRAD_NAMES:
            torch.testing.assert_close(got[name], summed[name], rtol=1e-5, atol=1e-6,
                                       msg=lambda m, n=name, k=order: f"d{n} {k}: {m}")


def test_bwd_reduce_scatter_choice(scan):
    """Where the reduce-scatter and its XOR order apply: the reduce-scatter on the GPU by default and under the
    interpreter only when asked for, always only at BLOCK_C = 32 and N = 16; the XOR order (SCATTER_SUMS = 2) only
    with the reduce-scatter, when asked for or by DEFAULT_SCATTER_XOR for the combined 16-bit walk (the gated
    halves and fp32 keep the natural order by default), and only for B and C with unit state stride."""
    _, bwd = scan
    ce = lambda interpreted=False, **kw: bwd.scan_bwd_launch_config(  # noqa: E731
        8, 384, 6085, 128, interpreted, **kw).walk.constexprs["SCATTER_SUMS"]
    xor_default = 2 if bwd.DEFAULT_SCATTER_XOR else True
    assert ce() == xor_default and ce(combine=True) == xor_default
    assert ce(combine=False) is True and ce(fp32=True) is True
    assert ce(scatter_xor=False) is True and ce(scatter_xor=True) == 2 and ce(combine=False, scatter_xor=True) == 2
    assert ce(scatter_xor=True, unit_state_stride=False) is True and ce(unit_state_stride=False) is True
    assert not ce(scatter_sums=False, scatter_xor=True) and not ce(block_c=16, scatter_xor=True)
    assert not ce(n_state=8, scatter_xor=True)
    assert not ce(True) and not ce(True, block_c=32)
    assert ce(True, block_c=32, scatter_sums=True) == xor_default
    assert ce(True, block_c=32, scatter_sums=True, scatter_xor=False) is True
    assert ce(True, block_c=32, scatter_sums=True, scatter_xor=True) == 2
    # B and C with a non-unit state stride (contiguous (2, batch, N, L)): the natural order, and the right gradients
    x = model_layout(1, 40, 5, seed=41)
    x["B"], x["C"] = x["B"].contiguous(), x["C"].contiguous()
    assert x["B"].stride(2) != 1
    _, g, got = run_triton(scan, x, combine=True, chunk=4, block_c=32, scatter_sums=True, scatter_xor=True)
    assert_grads_close(got, reference_grads(x, g, combine=True), x)


@pytest.mark.parametrize("walk", [dict(pairs=True, prefetch=False, sub_chunk=0),
                                  dict(chunks_per_program=1, sub_chunk=3)])
def test_bwd_vector_scratch(scan, walk):
    """The walk's scratch state tiles as per-lane groups of 4 states (vec_scratch; `_load_state_tile`) hold the same
    values as the row layout: the same gradients (to the interpreter's summation order: its tiles are transposed
    views) and the float64 reference's; the pairs walk over several groups, sub-checkpoints; N = 16 only; by default
    (DEFAULT_VEC_SCRATCH) for the combined 16-bit walk only."""
    _, bwd = scan
    x = model_layout(1, 13, 19, seed=37)
    _, g, rows = run_triton(scan, x, combine=True, chunk=4, vec_scratch=False, **walk)
    _, _, groups = run_triton(scan, x, combine=True, chunk=4, vec_scratch=True, **walk)
    assert_grads_close(groups, reference_grads(x, g, combine=True), x)
    for name in GRAD_NAMES:
        torch.testing.assert_close(groups[name], rows[name], rtol=1e-6, atol=1e-7, msg=lambda m, n=name: f"d{n}: {m}")
    ce = lambda **kw: bwd.scan_bwd_launch_config(8, 384, 6085, 128, False, **kw).walk.constexprs  # noqa: E731
    assert ce()["VEC_SCRATCH"] is bool(bwd.DEFAULT_VEC_SCRATCH) and ce(vec_scratch=True)["VEC_SCRATCH"]
    assert not ce(combine=False)["VEC_SCRATCH"] and not ce(fp32=True)["VEC_SCRATCH"]
    assert ce(combine=False, vec_scratch=True)["VEC_SCRATCH"] and not ce(vec_scratch=False)["VEC_SCRATCH"]
    assert not ce(vec_scratch=True, n_state=8)["VEC_SCRATCH"]


def test_bwd_bf16_scratch(scan):
    """scratch_bf16=True (`DEFAULT_SCRATCH_BF16`'s knob): the walk's scratch is allocated in bf16 and the recomputed
    states are rounded once where they are stored. The gradients that never read a stored state (du, dB, dD: the
    adjoint's) are bitwise the fp32 scratch's; dC, dA, ddelta, ddelta_bias and dz move by about one bf16 rounding
    of h and stay near the float64 reference (the interpreter's bf16 cast truncates: 2^-7 relative); the pairs walk
    over several groups. fp32 operands keep an fp32 scratch."""
    _, bwd = scan
    x = model_layout(1, 13, 19, dtype=torch.bfloat16, seed=37)
    walk = dict(pairs=True, prefetch=False, sub_chunk=0, chunks_per_program=2)
    _, g, wide = run_triton(scan, x, combine=True, chunk=4, scratch_bf16=False, **walk)
    _, _, narrow = run_triton(scan, x, combine=True, chunk=4, scratch_bf16=True, **walk)
    for name in ("u", "B", "D"):
        assert torch.equal(narrow[name], wide[name]), f"d{name} reads no stored state: it must not change"
    assert not torch.equal(narrow["C"], wide["C"]), "dC reads the stored states: a bf16 scratch must round them"
    want = reference_grads(x, g, combine=True)
    for name in GRAD_NAMES:
        ref = want[name].double()
        rel = ((narrow[name].double() - ref).norm() / ref.norm()).item()
        assert rel < 2 ** -7, f"d{name}: relative L2 distance {rel:.2e} from the float64 reference"
    plan = lambda **kw: bwd.scan_bwd_launch_config(8, 384, 6085, 128, False, **kw)  # noqa: E731
    assert plan(scratch_bf16=True).scratch_dtype == torch.bfloat16
    assert plan(scratch_bf16=True, fp32=True).scratch_dtype == torch.float32
    assert plan(scratch_bf16=False).scratch_dtype == torch.float32
    assert plan().scratch_dtype == (torch.bfloat16 if bwd.DEFAULT_SCRATCH_BF16 else torch.float32)
    assert plan(combine=False).scratch_dtype == torch.float32, "the gated halves' walk keeps fp32 (not measured)"
    assert plan(fp32=True).scratch_dtype == torch.float32


@pytest.mark.parametrize("pairs", [False, True])
def test_bwd_unmasked_channels(scan, pairs):
    """Channels a multiple of the block (16 in blocks of 8 under the interpreter; Vim's 384 in blocks of 32 on the
    GPU) launch pass A without channel masks (MASK_C False: a constant mask Triton folds away), and the walk too
    under the interpreter and with UNMASKED_WALK (on the GPU it keeps them until measured): the float64
    reference's gradients, both output forms, several groups, the pairs walk and the plain one."""
    _, bwd = scan
    for combine in (True, False):
        x = model_layout(1, 16, 19, seed=23)
        _, g, got = run_triton(scan, x, combine=combine, chunk=4, prefetch=False, sub_chunk=0, pairs=pairs,
                               chunks_per_program=2)
        assert_grads_close(got, reference_grads(x, g, combine=combine), x)
    cfg = lambda channels, **kw: bwd.scan_bwd_launch_config(8, channels, 6085, 128, False, **kw)  # noqa: E731
    assert cfg(384).walk.constexprs["MASK_C"] is not bwd.UNMASKED_WALK and not cfg(384).carry.constexprs["MASK_C"]
    assert cfg(392).walk.constexprs["MASK_C"] and cfg(392).carry.constexprs["MASK_C"]
    assert not bwd.scan_bwd_launch_config(1, 16, 19, 4, True).walk.constexprs["MASK_C"]
    assert bwd.scan_bwd_launch_config(1, 13, 19, 4, True).walk.constexprs["MASK_C"]


@pytest.mark.parametrize("combine,chunks_per_program", [(True, 2), (False, None)])
def test_bwd_dz_halves(scan, combine, chunks_per_program):
    """dz_halves=True returns each direction's term of dz, (2, batch, E, L) in z's dtype and u's layout: their sum
    is the float64 reference's dz, and every other gradient is bitwise the atomic form's (13 channels: a masked
    channel block too; three chunks in two groups, or one group)."""
    x = model_layout(2, 13, 11, seed=29)
    _, g, atomic = run_triton(scan, x, combine=combine, chunk=4, chunks_per_program=chunks_per_program)
    _, _, halves = run_triton(scan, x, combine=combine, chunk=4, chunks_per_program=chunks_per_program,
                              dz_halves=True)
    dz2 = halves["z"]
    assert dz2.shape == x["u"].shape and dz2.dtype == x["z"].dtype and dz2.stride() == x["u"].stride()
    want = reference_grads(x, g, combine=combine)
    torch.testing.assert_close(dz2.sum(0).double(), want["z"], rtol=1e-4, atol=1e-5 * max(1.0, want["z"].abs().max()))
    torch.testing.assert_close(dz2.sum(0), atomic["z"], rtol=1e-6, atol=1e-7)
    for name in GRAD_NAMES:
        if name != "z":
            assert torch.equal(halves[name], atomic[name]), f"d{name} changed with dz_halves"
    # without z there is no dz to split: None, as in the atomic form
    _, _, none = run_triton(scan, without(x, "z"), combine=combine, chunk=4, dz_halves=True)
    assert none["z"] is None


@pytest.mark.parametrize("channel_splits", [1, 2])
def test_bwd_bc_rows(scan, channel_splits):
    """bc_rows_dtype returns dB and dC as x_dbl-gradient rows, one (2, batch * L, 2N) tensor [dB | dC] in that
    dtype in dB's slot (None in dC's): the same sums as the fp32 dB/dC (one kernel over the partials, or after
    several walk launches the fp32 sums copied), rounded once to bf16; every other gradient bitwise unchanged."""
    x = model_layout(2, 12, 9, seed=31)  # two channel blocks under the interpreter (8 + a masked 4)
    n = x["A"].shape[-1]
    kw = dict(chunk=4, channel_splits=channel_splits, chunks_per_program=1)
    _, _, plain = run_triton(scan, x, combine=True, **kw)
    for dtype in (torch.float32, torch.bfloat16):
        fwd, bwd = scan
        out, ck = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=4)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
        grads = dict(zip(GRAD_NAMES, bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, bc_rows_dtype=dtype,
                                                          **kw)))
        rows = grads["B"]
        assert grads["C"] is None and rows.shape == (2, 2 * 9, 2 * n) and rows.dtype == dtype
        want = torch.cat([plain["B"].transpose(-1, -2), plain["C"].transpose(-1, -2)], -1).reshape(2, 18, 2 * n)
        if dtype == torch.float32:
            torch.testing.assert_close(rows, want, rtol=1e-6, atol=1e-6)
        else:
            # one rounding to bf16 (within 2^-8 relative; the interpreter's cast truncates: 2^-7)
            torch.testing.assert_close(rows.float(), want, rtol=2 ** -7, atol=1e-6)
        for name in GRAD_NAMES:
            if name not in ("B", "C"):
                assert torch.equal(grads[name], plain[name]), f"d{name} changed with bc_rows_dtype"


def test_bwd_channel_splits(scan):
    """The walk as several launches over ranges of the channel blocks (20 channels in blocks of 8 under the
    interpreter, 2 launches: 2 blocks, then the last, masked one), sharing one scratch and one partials buffer:
    the float64 reference's gradients, and the one-launch walk's up to the order of the dB/dC sums."""
    channels = 20
    plan = scan[1].scan_bwd_launch_config(1, channels, 9, 4, True, chunks_per_program=1, channel_splits=2)
    assert plan.channel_splits == 2 and plan.blocks_per_launch == 2 and plan.walk.grid[0] == 3
    x = model_layout(1, channels, 9, seed=23)
    _, g, got = run_triton(scan, x, combine=True, chunk=4, channel_splits=2, chunks_per_program=1)
    assert_grads_close(got, reference_grads(x, g, combine=True), x)
    _, _, one = run_triton(scan, x, combine=True, chunk=4, channel_splits=1, chunks_per_program=1)
    for name in GRAD_NAMES:
        exact = name not in ("B", "C")  # only dB/dC are summed over the launches
        torch.testing.assert_close(got[name], one[name], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-7)


def test_bwd_channel_splits_config(scan, monkeypatch):
    """The default is one launch (DEFAULT_CHANNEL_SPLITS = 1, measured faster in whole steps). Auto (None): one
    launch per wave of resident programs in the capped walk (Vim-Ti 1248 px, batch 8: 3,072 programs, 12 per SM at
    168 registers on 132 SMs); one launch for the prefetching walk and under the interpreter; forced values clamp
    to the channel blocks with no empty launch."""
    _, bwd = scan
    cfg = lambda b, L, **kw: bwd.scan_bwd_launch_config(b, 384, L, 64, kw.pop("interpreted", False), **kw)
    assert cfg(8, 6085).channel_splits == 1 and cfg(128, 197).channel_splits == 1
    assert cfg(8, 6085, channel_splits=None).channel_splits == 1  # None: the module default
    monkeypatch.setattr(bwd, "DEFAULT_CHANNEL_SPLITS", None)
    capped = cfg(8, 6085)
    assert capped.walk.maxnreg == 168 and capped.channel_splits == 2 and capped.blocks_per_launch == 6
    assert cfg(128, 197).channel_splits == 2
    assert cfg(8, 6085, sm_count=264).channel_splits == 1  # a GPU that holds the grid at once
    assert cfg(32, 1025).channel_splits == 1  # the prefetching walk, under one wave
    assert cfg(8, 6085, interpreted=True).channel_splits == 1
    assert cfg(8, 6085, channel_splits=100).channel_splits == 12
    five = cfg(8, 6085, channel_splits=5)  # 12 blocks in launches of 3: 4 launches
    assert five.channel_splits == 4 and five.blocks_per_launch == 3
    with pytest.raises(ValueError, match="channel_splits"):
        cfg(8, 6085, channel_splits=0)


@pytest.mark.parametrize("sub_chunk", [1, 5])
def test_bwd_two_level_recompute(scan, sub_chunk):
    """The walk's sub-checkpoints every step (1), and in sub-chunks of 5 of 8 (a partial last one; 3 of 4 is the
    interpreter's default); L = 23 ends in a partial chunk."""
    fwd, bwd = scan
    x = model_layout(1, 13, 23, seed=12)
    out, ck = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=8)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    got = bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=False, chunk=8, chunks_per_program=1,
                               sub_chunk=sub_chunk)
    assert_grads_close(dict(zip(GRAD_NAMES, got)), reference_grads(x, g, combine=False), x)


def test_bwd_chunk_groups_are_deterministic(scan):
    fwd, bwd = scan
    x = model_layout(1, 13, 13, seed=11)
    out, ck = fwd.bimamba_scan_fwd_save(**x, combine=True, chunk=4)
    g = torch.randn_like(out)
    first = bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, chunk=4, chunks_per_program=1)
    second = bwd.bimamba_scan_bwd(g, **x, checkpoints=ck, combine=True, chunk=4, chunks_per_program=1)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_bwd_launch_config_split(scan):
    """The GPU picks groups only where batch * channels leave the GPU short of programs; forced values clamp."""
    _, bwd = scan
    small = bwd.scan_bwd_launch_config(8, 384, 6085, 64, interpreted=False)
    assert small.groups > 1 and small.carry is not None
    assert small.walk.grid == (12, 2 * small.groups, 8) and small.carry.grid == (12, 2 * (small.groups - 1), 8)
    assert (small.groups - 1) * small.chunks_per_program < 96 <= small.groups * small.chunks_per_program
    big = bwd.scan_bwd_launch_config(128, 384, 197, 64, interpreted=False)
    assert big.groups == 1 and big.carry is None
    assert bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, chunks_per_program=10 ** 6).groups == 1
    assert bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, chunks_per_program=1).groups == 96
    with pytest.raises(ValueError, match="chunks_per_program"):
        bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, chunks_per_program=0)
    two_level = bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, sub_chunk=8)
    assert two_level.scratch_tiles == 8 + 8 and two_level.walk.constexprs["SUB"] == 8
    assert bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, sub_chunk=64, pairs=False).scratch_tiles == 64
    # the capped walk from every other state (the default at this shape) needs half the state tiles
    assert bwd.scan_bwd_launch_config(8, 384, 6085, 64, False, sub_chunk=64).scratch_tiles == 32


def test_bad_arguments_raise(scan):
    fwd, bwd = scan
    x = model_layout(1, 8, 6)
    with pytest.raises(ValueError, match="chunk must be"):
        fwd.bimamba_scan_fwd_save(**x, chunk=3)
    out, ck = fwd.bimamba_scan_fwd_save(**x, chunk=4)
    with pytest.raises(ValueError, match="checkpoints must be"):
        bwd.bimamba_scan_bwd(out, **x, checkpoints=ck, chunk=2)
    with pytest.raises(ValueError, match="grad_out must be"):
        bwd.bimamba_scan_bwd(out, **x, checkpoints=ck, combine=False, chunk=4)


def _meta_inputs(length, token_stride=1, n_state=4, channels=2):
    """Direction-stacked scan inputs on the meta device (shapes and strides only, no memory): u and delta with
    `token_stride` elements between consecutive tokens."""
    def rows(*lead):
        return torch.empty_strided(lead + (length,), (0,) * len(lead) + (token_stride,), device="meta")
    meta = dict(device="meta")
    return dict(u=rows(2, 1, channels), delta=rows(2, 1, channels), A=torch.empty(2, channels, n_state, **meta),
                B=torch.empty(2, 1, n_state, length, **meta), C=torch.empty(2, 1, n_state, length, **meta),
                D=torch.empty(2, channels, **meta), z=torch.empty(1, channels, length, **meta),
                delta_bias=torch.empty(2, channels, **meta))


def test_token_offsets_beyond_32_bits_raise_before_any_launch(scan):
    """The scan kernels index tokens in 32 bits (t * the L stride): inputs whose offsets would not fit raise."""
    fwd, bwd = scan
    x = _meta_inputs(3, token_stride=2 ** 30)
    with pytest.raises(ValueError, match="u: token offsets .* exceed the scan kernels' 32-bit token indexing"):
        fwd.bimamba_scan_fwd_save(**x, chunk=2)
    x = _meta_inputs(3)
    ck = torch.empty(2, 1, 2, 4, 2, device="meta")
    z = torch.empty_strided((1, 2, 3), (0, 0, 2 ** 30), device="meta")
    with pytest.raises(ValueError, match="z: token offsets"):
        bwd.bimamba_scan_bwd(torch.empty(1, 2, 3, device="meta"), **dict(x, z=z), checkpoints=ck, chunk=2)
    # contiguous, but (L - 1) * N overflows the dB/dC partials' 32-bit token rows
    length = 2 ** 27 + 1
    x = _meta_inputs(length, n_state=16)
    ck = torch.empty(2, 1, (length + 63) // 64, 16, 2, device="meta")
    with pytest.raises(ValueError, match="too long for the scan backward"):
        bwd.bimamba_scan_bwd(torch.empty(1, 2, length, device="meta"), **x, checkpoints=ck, chunk=64)


# ---- GPU: Vim shapes, the model's layouts, against the torch reference in fp32 ----------------------------------

def _torch_grads(x, grad_out, combine):
    """Gradients of the torch backend's scan (autograd through bimamba_scan_ref) on fp32 copies of the inputs."""
    x32 = {k: None if v is None else v.detach().float().requires_grad_() for k, v in x.items()}
    bimamba_scan_ref(**x32, combine=combine).backward(grad_out.float())
    return {k: None if v is None else v.grad for k, v in x32.items()}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize("batch,channels,length", [(2, 384, 197), (1, 384, 6085), (2, 768, 197), (1, 1536, 577),
                                                    (1, 768, 6085)])
def test_bwd_gpu(scan, dtype, combine, batch, channels, length):
    x = model_layout(batch, channels, length, dtype=dtype, device="cuda")
    chunk = 64
    out, g, got = run_triton(scan, x, combine, chunk)
    want = _torch_grads(x, g, combine)
    rtol, atol = TOL[dtype]
    for name in GRAD_NAMES:
        scale = max(1.0, want[name].abs().max().item())
        torch.testing.assert_close(got[name].float(), want[name], rtol=rtol, atol=atol * scale,
                                   msg=lambda m, n=name: f"d{n} ({dtype}, combine={combine}): {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_bwd_gpu_l1_prefetches_change_nothing(scan, batch, length):
    """The capped pairs walk's L1 prefetches (input lines, the scratch tile) and the eviction hints are cache hints:
    every gradient bitwise equal to the walk without them (Vim-Ti's training shapes, combined bf16)."""
    _, bwd = scan
    plan = bwd.scan_bwd_launch_config(batch, 384, length, 64, False)
    assert plan.walk.constexprs["PAIRS"] and plan.walk.constexprs["SCRATCH_AHEAD"] > 0
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    _, _, shipped = run_triton(scan, x, True, 64)
    for kw in (dict(l1_ahead=0, scratch_ahead=0), dict(evict_hints=True), dict(l1_ahead=4, scratch_ahead=8)):
        _, _, got = run_triton(scan, x, True, 64, **kw)
        for name in GRAD_NAMES:
            if shipped[name] is not None:
                assert torch.equal(got[name], shipped[name]), f"d{name} changed with {kw}"


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_bwd_gpu_bf16_scratch(scan, batch, length):
    """The walk with a bf16 scratch at Vim-Ti's training shapes (combined bf16, the shipped capped pairs walk): du,
    dB, dD bitwise the fp32 scratch's (they read no stored state); every gradient within 1e-2 (relative L2) of the
    fp32 autograd reference, as the bf16 walk's tolerance elsewhere."""
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    _, g, wide = run_triton(scan, x, True, 128, scratch_bf16=False)
    _, _, narrow = run_triton(scan, x, True, 128, scratch_bf16=True)
    for name in ("u", "B", "D"):
        assert torch.equal(narrow[name], wide[name]), f"d{name} changed with the bf16 scratch"
    want = _torch_grads(x, g, True)
    for name in GRAD_NAMES:
        ref = want[name].float()
        rel = ((narrow[name].float() - ref).norm() / ref.norm()).item()
        assert rel < 1e-2, f"d{name}: relative L2 distance {rel:.2e} from the fp32 reference"


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_bwd_gpu_softplus_done(scan, batch, length):
    """The training op's softplus-first form at Vim-Ti's training shapes (bf16, combined): delta given as fp16
    Delta = softplus(pre + bias), the forward without softplus or bias, the backward with softplus_done: every
    gradient (of pre and the bias included) within 1e-2 (relative L2) of the fp32 autograd reference on pre."""
    fwd, bwd = scan
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    post = F.softplus(x["delta"].float() + x["delta_bias"][:, None, :, None]).half()
    out, ckpt = fwd.bimamba_scan_fwd_save(**{**x, "delta": post, "delta_bias": None}, delta_softplus=False,
                                          combine=True, chunk=128)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
    got = dict(zip(GRAD_NAMES, bwd.bimamba_scan_bwd(g, **{**x, "delta": post}, checkpoints=ckpt,
                                                    delta_softplus=True, combine=True, chunk=128,
                                                    softplus_done=True)))
    assert got["delta"].dtype == torch.bfloat16
    want = _torch_grads(x, g, True)
    for name in GRAD_NAMES:
        ref = want[name].float()
        rel = ((got[name].float() - ref).norm() / ref.norm()).item()
        assert rel < 1e-2, f"d{name}: relative L2 distance {rel:.2e} from the fp32 reference"


@pytest.mark.gpu
@pytest.mark.parametrize("chunk", [64, 128, 256])
def test_bwd_gpu_chunk_sizes_agree(scan, chunk):
    x = model_layout(2, 384, 1025, dtype=torch.bfloat16, device="cuda")
    _, g, got = run_triton(scan, x, combine=False, chunk=chunk)
    _, _, base = run_triton(scan, x, combine=False, chunk=2)
    for name in GRAD_NAMES:
        torch.testing.assert_close(got[name].float(), base[name].float(), rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch,length", [(8, 6085), (2, 1025)])
def test_bwd_gpu_chunk_splits_agree(scan, dtype, batch, length):
    """Vim-Ti shapes: the default chunk-parallel split, one checkpoint chunk per program with the two-level
    recompute, each with the dB/dC reduce-scatter, and the sequential walk (one group) give the same gradients up
    to rounding."""
    _, bwd = scan
    x = model_layout(batch, 384, length, dtype=dtype, device="cuda")
    combine = dtype == torch.float32
    _, g, base = run_triton(scan, x, combine, 64, chunks_per_program=10 ** 6)
    assert bwd.scan_bwd_launch_config(batch, 384, length, 64, False).groups > 1
    for kw in (dict(), dict(chunks_per_program=1, sub_chunk=8), dict(scatter_sums=True),
               dict(chunks_per_program=1, sub_chunk=8, scatter_sums=True), dict(block_c=16),
               dict(prefetch=False, maxnreg=168)):
        _, _, got = run_triton(scan, x, combine, 64, **kw)
        for name in GRAD_NAMES:
            want = base[name].float()
            rel = ((got[name].float() - want).norm() / want.norm()).item()
            assert rel < (1e-2 if dtype == torch.bfloat16 else 1e-4), f"d{name} {kw}: relative L2 error {rel:.2e}"


def _assert_walks_agree(got, want, kw):
    """Two walks' gradients (GPU, bf16 inputs) equal to fp32 rounding: the same sums in another order of additions."""
    for name in GRAD_NAMES:
        if want[name] is not None:
            ref = want[name].float()
            torch.testing.assert_close(got[name].float(), ref, rtol=2 ** -6, atol=1e-5 * ref.abs().max().item(),
                                       msg=lambda m, n=name: f"d{n} {kw}: {m}")


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_bwd_gpu_carried_state(scan, batch, length):
    """Vim-Ti's training shapes, combined bf16, in the training op's output forms: the carried leaving state, one
    step per trip (the default) and two, against the walk that recomputes it. The
    carried state is the one the recomputation stored, computed by the same expression, so with an fp32 scratch the
    gradients agree to fp32 rounding (bitwise unless ptxas contracts the sites' multiply-adds differently). With the
    bf16 scratch (the default since session x) the two walks round different states (the carried one is the
    unrounded odd step's), so dC, dz and ddelta differ by bf16 roundings of h: that form is checked against torch by
    test_bwd_gpu_bf16_scratch, and test_bwd_gpu checks the default walk against torch."""
    _, bwd = scan
    ce = bwd.scan_bwd_launch_config(batch, 384, length, 128, False).walk.constexprs
    assert ce["CARRY_H"] is (bwd.DEFAULT_CARRY_H is not False) and ce["PAIR_TRIPS"] is bool(bwd.DEFAULT_PAIR_TRIPS)
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    forms = dict(dz_halves=True, bc_rows_dtype=torch.bfloat16, scratch_bf16=False)
    _, _, off = run_triton(scan, x, True, 128, carry_h=False, pair_trips=False, **forms)
    for kw in (dict(carry_h=True, pair_trips=False), dict(carry_h=False, pair_trips=True)):
        _, _, on = run_triton(scan, x, True, 128, **kw, **forms)
        _assert_walks_agree(on, off, kw)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_bwd_gpu_state_xor_order(scan, batch, length):
    """Vim-Ti's training shapes, combined bf16, in the training op's output forms: the walk from the XOR state order
    (scatter_xor), alone and with the vector scratch (vec_scratch), against the natural order, all with the
    reduce-scatter: the same sums in another order of additions, so equal to fp32 rounding; test_bwd_gpu checks the
    default walk against torch."""
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    forms = dict(dz_halves=True, bc_rows_dtype=torch.bfloat16, scatter_sums=True)
    _, _, natural = run_triton(scan, x, True, 128, scatter_xor=False, vec_scratch=False, **forms)
    for kw in (dict(scatter_xor=True, vec_scratch=False), dict(scatter_xor=True, vec_scratch=True)):
        _, _, xor = run_triton(scan, x, True, 128, **kw, **forms)
        _assert_walks_agree(xor, natural, kw)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_bwd_gpu_training_output_forms(scan, batch, length):
    """Vim-Ti's training shapes, combined bf16, as the training op calls it: dz as the two directions' terms
    (dz_halves) sums to the atomic form's dz within bf16 rounding, dB/dC as bf16 rows (bc_rows_dtype) equal the
    fp32 sums rounded once, and every other gradient is bitwise unchanged."""
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    _, _, plain = run_triton(scan, x, True, 128)
    _, _, new = run_triton(scan, x, True, 128, dz_halves=True, bc_rows_dtype=torch.bfloat16)
    n = x["A"].shape[-1]
    dz = new["z"].float().sum(0)
    torch.testing.assert_close(dz, plain["z"].float(), rtol=2 ** -7, atol=2 ** -7 * plain["z"].float().abs().max())
    want = torch.cat([plain["B"].transpose(-1, -2), plain["C"].transpose(-1, -2)], -1).reshape(2, -1, 2 * n)
    assert new["C"] is None
    torch.testing.assert_close(new["B"].float(), want, rtol=2 ** -7, atol=1e-6 * want.abs().max())
    for name in GRAD_NAMES:
        if name not in ("B", "C", "z"):
            assert torch.equal(new[name], plain[name]), f"d{name} changed"


@pytest.mark.gpu
@pytest.mark.parametrize("batch,length", [(8, 6085), (128, 197)])
def test_fwd_save_gpu_ordered_sum(scan, batch, length):
    """Vim-Ti's training shapes in bf16 (the chunk-parallel passes at 8 x 6,085, the one-pass kernel at 128 x 197):
    the ordered sum (two launches, the second adding the first's stored half) equals the halves' sum within bf16
    rounding, and the checkpoints are the one-launch forward's (one direction per launch may split L into other
    chunks: equal to fp32 rounding)."""
    fwd, _ = scan
    x = model_layout(batch, 384, length, dtype=torch.bfloat16, device="cuda")
    halves, ck = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=128)
    y, ck2 = fwd.bimamba_scan_fwd_save(**x, combine=False, chunk=128, ordered_sum=True)
    torch.testing.assert_close(ck2, ck, rtol=1e-5, atol=1e-6 * ck.abs().max().item())
    want = halves.float().sum(0)
    torch.testing.assert_close(y.float(), want, rtol=2 ** -7, atol=2 ** -7 * want.abs().max().item())
