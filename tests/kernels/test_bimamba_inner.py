"""The fused training op of the Vim mixer (kernels.bimamba_inner): gradients against autograd through the
reference composition in float64, the custom op's registration (torch.library.opcheck), and what its autograd node
saves (no tensor of the recomputed xz's, u's or delta's size)."""
from __future__ import annotations

import pytest
import torch

from kernels.bimamba_inner.reference import bimamba_inner_ref

NAMES = "h in_proj conv_w conv_b x_proj_t dt_proj_t A D dt_bias".split()


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.bimamba_inner.op")


def inner_inputs(device, batch=2, length=7, d_model=8, inner=12, n_state=4, dt_rank=2, width=16, seed=0):
    """Random, plausible mixer operands (A < 0, small dt); x_proj_t's pad columns are non-zero on purpose (they
    must get a zero gradient). inner = 12 with the interpreter's 8-channel scan blocks masks channels."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale=1.0: scale * torch.randn(*shape, generator=g)  # noqa: E731
    tensors = [rand(batch, length, d_model), rand(2 * inner, d_model, scale=d_model ** -0.5),
               rand(2, inner, 4, scale=0.5), rand(2, inner, scale=0.1), rand(2, inner, width, scale=inner ** -0.5),
               rand(2, dt_rank, inner, scale=dt_rank ** -0.5), -0.5 - torch.rand(2, inner, n_state, generator=g),
               rand(2, inner), rand(2, inner, scale=0.1) - 1.0]
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("combine", [False, True])
def test_gradients_match_f64_reference(op, device, combine):
    inputs = inner_inputs(device)
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = op.bimamba_inner(*leaves, combine=combine)
    leaves64 = [t.detach().double().requires_grad_() for t in inputs]
    want = bimamba_inner_ref(*leaves64, combine=combine)
    torch.testing.assert_close(out.double(), want, rtol=1e-4, atol=1e-5)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(device)
    out.backward(grad_out)
    want.backward(grad_out.double())
    for name, got, ref in zip(NAMES, leaves, leaves64):
        assert got.grad is not None, name
        scale = ref.grad.abs().max().item()
        torch.testing.assert_close(got.grad.double(), ref.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
    assert leaves[4].grad[..., 2 * 4 + 2:].abs().max() == 0  # the pad columns of x_proj_t


def test_halves_output_is_one_token_major_matrix(op, device):
    """out_proj reads the halves as a (batch, L, 2E) view, as the mixer's inference path does."""
    inputs = inner_inputs(device)
    halves = op.bimamba_inner(*[t.clone().requires_grad_() for t in inputs], combine=False)
    batch, length = inputs[0].shape[:2]
    assert halves.shape == (2, batch, 12, length)
    assert halves.permute(1, 3, 0, 2).is_contiguous()


def test_opcheck(op, device):
    """Schema, fake tensors (the outputs' layouts too), autograd registration and AOT tracing of the backward
    (one case: ~30 s interpreted; combine=True goes through the compiled model test in tests/test_training.py)."""
    leaves = [t.requires_grad_() for t in inner_inputs(device, batch=1, length=5)]
    torch.library.opcheck(torch.ops.vimbench.bimamba_inner.default, (*leaves, False, 4))


def test_graph_saves_inputs_x_dbl_and_checkpoints_only(op, device):
    """The op's autograd node keeps its inputs, x_dbl and the checkpoints: nothing of the size of xz (batch, L, 2E),
    u or delta (2, batch, E, L), which the backward recomputes."""
    inputs = inner_inputs(device, batch=2, length=9, inner=12)
    leaves = [t.clone().requires_grad_() for t in inputs]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        op.bimamba_inner(*leaves, combine=False)
    batch, length, inner, n_state, width = 2, 9, 12, 4, 16
    inputs_ptrs = {t.data_ptr() for t in leaves}
    extra = sorted(tuple(t.shape) for t in saved if t.data_ptr() not in inputs_ptrs)
    assert extra == [(2, batch, -(-length // 64), n_state, inner), (2, batch * length, width)]
    assert not any(t.numel() in (2 * batch * length * inner,) for t in saved)
