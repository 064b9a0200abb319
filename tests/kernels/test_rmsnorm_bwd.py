"""Backward of the Triton residual add + RMSNorm vs torch.autograd through the float64 reference."""
from __future__ import annotations

import pytest
import torch

from kernels.rmsnorm.reference import add_rmsnorm_ref
from _tolerances import assert_close_to_f64


@pytest.fixture(scope="module")
def op():
    return pytest.importorskip("kernels.rmsnorm.op")


def make_inputs(shape, with_residual, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    res = torch.randn(*shape, generator=g).to(device) if with_residual else None
    w = (1 + 0.1 * torch.randn(shape[-1], generator=g)).to(device)
    dy = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    dr = torch.randn(*shape, generator=g).to(device)
    return x, res, w, dy, dr


def grads_f64(x, res, w, dy, dr, eps=1e-5):
    leaves = [t.detach().double().requires_grad_() if t is not None else None for t in (x, res, w)]
    y, r = add_rmsnorm_ref(*leaves, eps, torch.float64)
    outputs, grads = ([y, r], [dy.double(), dr.double()]) if dr is not None else ([y], [dy.double()])
    torch.autograd.backward(outputs, grads)
    return [t.grad if t is not None else None for t in leaves]


# 7 rows (x 1 or 2): not a multiple of the interpreter's 2-row blocks, more row blocks than its 3 programs;
# D = 48 and 24 are not powers of two.
@pytest.mark.parametrize("shape", [(1, 1, 32), (2, 7, 48), (7, 24)])
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("r_used", [True, False])
def test_add_rmsnorm_backward_matches_f64_autograd(op, device, shape, with_residual, r_used):
    x, res, w, dy, dr = make_inputs(shape, with_residual, device=device)
    dr = dr if r_used else None
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, res, w)]
    y, r = op.add_rmsnorm(*leaves, 1e-5, None)
    torch.autograd.backward([y, r] if r_used else [y], [dy, dr] if r_used else [dy])
    expected = grads_f64(x, res, w, dy, dr)
    for got, want in zip(leaves, expected):
        if got is None:
            continue
        assert got.grad.dtype == got.dtype
        torch.testing.assert_close(got.grad.double(), want, rtol=1e-5, atol=1e-5)


def test_add_rmsnorm_backward_only_r_used(op, device):
    """The norm's y unused (dy None): the gradient of r passes straight through to x and residual."""
    x, res, w, _, dr = make_inputs((3, 16), True, device=device)
    xg, rg, wg = x.clone().requires_grad_(), res.clone().requires_grad_(), w.clone().requires_grad_()
    _, r = op.add_rmsnorm(xg, rg, wg)
    r.backward(dr)
    torch.testing.assert_close(xg.grad, dr)
    torch.testing.assert_close(rg.grad, dr)
    assert wg.grad is None or not wg.grad.any()


def test_add_rmsnorm_backward_is_deterministic(op, device):
    from kernels.rmsnorm.bwd import add_rmsnorm_bwd

    x, res, w, dy, dr = make_inputs((2, 9, 40), True, device=device)
    _, r = add_rmsnorm_ref(x, res, w)
    first = add_rmsnorm_bwd(dy, dr, r, w, 1e-5, x.dtype, True)
    second = add_rmsnorm_bwd(dy, dr, r, w, 1e-5, x.dtype, True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("with_residual", [True, False])
def test_add_rmsnorm_custom_op_opcheck(op, device, with_residual):
    x, res, w, dy, dr = make_inputs((2, 3, 8), with_residual, device=device)
    args = (x.requires_grad_(), res.requires_grad_() if with_residual else None, w.requires_grad_(), 1e-5, None)
    torch.library.opcheck(torch.ops.vimbench.add_rmsnorm.default, args)
    _, r = add_rmsnorm_ref(x.detach(), None if res is None else res.detach(), w.detach())
    torch.library.opcheck(torch.ops.vimbench.add_rmsnorm_bwd.default,
                          (dy, dr, r, w.detach(), 1e-5, torch.float32, with_residual),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [192, 384, 768])
def test_add_rmsnorm_backward_gpu(op, dtype, dim):
    x, res, w, dy, dr = make_inputs((8, 6085, dim), True, dtype=dtype, device="cuda")
    leaves = [t.clone().requires_grad_() for t in (x, res, w)]
    y, r = op.add_rmsnorm(*leaves, 1e-5, dtype)
    torch.autograd.backward([y, r], [dy, dr])
    dx64, dres64, dw64 = grads_f64(x, res, w, dy, dr)
    plain = [t.clone().requires_grad_() for t in (x, res, w)]
    yp, rp = add_rmsnorm_ref(*plain, 1e-5, dtype)
    torch.autograd.backward([yp, rp], [dy, dr])
    assert_close_to_f64(leaves[0].grad, dx64, dtype, plain[0].grad)
    torch.testing.assert_close(leaves[1].grad.double(), dres64, rtol=1e-4, atol=1e-4)
    scale = dw64.abs().max().item()
    torch.testing.assert_close(leaves[2].grad.double() / scale, dw64 / scale, rtol=0, atol=1e-4)


@pytest.mark.parametrize("with_residual", [True, False])
def test_backward_reference_twin_matches_autograd(with_residual):
    """add_rmsnorm_bwd_ref (the written-out formula, the launcher's twin) equals autograd through the forward
    reference in float64."""
    from kernels.rmsnorm.reference import add_rmsnorm_bwd_ref

    x, res, w, dy, dr = (t.double() if t is not None else None for t in make_inputs((3, 5, 24), with_residual))
    _, r = add_rmsnorm_ref(x, res, w)
    dx, dres, dw = add_rmsnorm_bwd_ref(dy, dr, r, w, 1e-5, x.dtype, with_residual)
    want = grads_f64(x, res, w, dy, dr)
    torch.testing.assert_close(dx, want[0])
    torch.testing.assert_close(dw, want[2])
    if with_residual:
        torch.testing.assert_close(dres, want[1])
    else:
        assert dres is None


def test_gpu_launch_config_gives_one_row_block_per_program_up_to_the_cap():
    """On a GPU each program takes one row block until PROGRAMS_PER_SM x SMs programs, then several (the dweight
    partial buffer is programs x D): Vim-Ti rows at batch 8 (3,043 16-row blocks) and batch 64."""
    import triton

    from kernels.rmsnorm.bwd import PROGRAMS_PER_SM, rmsnorm_bwd_launch_config

    for rows in (100, 8 * 6085, 64 * 6085):
        cfg = rmsnorm_bwd_launch_config(rows, 192, interpreted=False, sm_count=132)
        assert cfg.grid == (min(triton.cdiv(rows, cfg.constexprs["BLOCK_R"]), PROGRAMS_PER_SM * 132),)
