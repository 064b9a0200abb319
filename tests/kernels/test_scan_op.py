"""The selective-scan custom ops: schemas, fake implementations and declared mutation (torch.library.opcheck)."""
from __future__ import annotations

import pytest
import torch

from kernels.selective_scan.reference import bimamba_scan_ref


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.selective_scan.op")


def scan_inputs(device, batch=2, channels=6, length=5, n_state=4, seed=0):
    """Channel-last views, as the Vim mixer passes them."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2, batch, length, channels, generator=g).transpose(2, 3)
    delta = 0.5 * torch.randn(2, batch, length, channels, generator=g).transpose(2, 3)
    A = -0.5 - torch.rand(2, channels, n_state, generator=g)
    B = torch.randn(2, batch, length, n_state, generator=g).transpose(2, 3)
    C = torch.randn(2, batch, length, n_state, generator=g).transpose(2, 3)
    D = torch.randn(2, channels, generator=g)
    z = torch.randn(batch, length, channels, generator=g).transpose(1, 2)
    bias = 0.1 * torch.randn(2, channels, generator=g)
    return [t.to(device) for t in (u, delta, A, B, C, D, z, bias)]


@pytest.mark.parametrize("combine", [True, False])
def test_bimamba_scan_opcheck(op, device, combine):
    u, delta, A, B, C, D, z, bias = scan_inputs(device)
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan.default, (u, delta, A, B, C, D, z, bias, True, combine))
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan.default,
                          (u, delta, A, B, C, None, None, None, True, combine))


def test_halves_over_u_is_a_declared_mutation(op, device):
    u, delta, A, B, C, D, z, bias = scan_inputs(device)
    schema = torch.ops.vimbench.bimamba_scan_halves_.default._schema
    assert [a.name for a in schema.arguments if a.alias_info and a.alias_info.is_write] == ["out"]
    over_u = u.clone()
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan_halves_.default,
                          (over_u, delta, A, B, C, D, z, bias, True, over_u))
    expected = bimamba_scan_ref(u, delta, A, B, C, D, z, bias, combine=False)
    written = u.clone()
    assert op.bimamba_scan(written, delta, A, B, C, D, z, bias, combine=False, out=written) is written
    torch.testing.assert_close(written, expected, rtol=1e-5, atol=1e-5)


def test_selective_scan_opcheck(op, device):
    u, delta, A, B, C, D, z, bias = scan_inputs(device)
    torch.library.opcheck(torch.ops.vimbench.selective_scan.default,
                          (u[1], delta[1], A[1], B[1], C[1], D[1], z, bias[1], True, True))


def test_out_is_refused_under_autograd(op, device):
    u, delta, A, B, C, D, z, bias = scan_inputs(device)
    with pytest.raises(ValueError, match="autograd"):
        op.bimamba_scan(u, delta.requires_grad_(), A, B, C, D, z, bias, combine=False, out=u)


def test_training_scan_custom_ops_opcheck(op, device):
    """The training forward (with checkpoints; autograd registered) and the backward op."""
    u, delta, A, B, C, D, z, bias = scan_inputs(device)
    leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan_fwd_save.default, (*leaves, True, False, 4))
    out, checkpoints = torch.ops.vimbench.bimamba_scan_fwd_save(u, delta, A, B, C, D, z, bias, True, True, 4)
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan_bwd.default,
                          (torch.randn_like(out), u, delta, A, B, C, D, z, bias, checkpoints, True, True, 4),
                          test_utils=("test_schema", "test_faketensor"))
    # the training op's form: dz as the two directions' terms, dB/dC as bf16 x_dbl-gradient rows
    torch.library.opcheck(torch.ops.vimbench.bimamba_scan_bwd.default,
                          (torch.randn_like(out), u, delta, A, B, C, D, z, bias, checkpoints, True, True, 4, True,
                           torch.bfloat16), test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("combine", [True, False])
@pytest.mark.parametrize("optional", [True, False])
def test_bimamba_scan_autograd_matches_f64_reference(op, device, combine, optional):
    """Gradients through the public op (custom op + autograd formula) against autograd through the reference
    in float64, with and without D, z and delta_bias."""
    inputs = scan_inputs(device, length=7)
    if not optional:
        inputs[5] = inputs[6] = inputs[7] = None
    leaves = [None if t is None else t.clone().requires_grad_() for t in inputs]
    out = op.bimamba_scan(*leaves, combine=combine)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(device)
    out.backward(grad_out)
    leaves64 = [None if t is None else t.detach().double().requires_grad_() for t in inputs]
    bimamba_scan_ref(*leaves64, combine=combine).backward(grad_out.double())
    for name, got, want in zip("u delta A B C D z delta_bias".split(), leaves, leaves64):
        if got is None:
            continue
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-4, atol=1e-4, msg=name)
