"""Eager training calls each op's autograd.Function twin (kernels.runtime.eager_autograd) instead of its custom op:
the same forward, the same saved tensors and the same backward. Checked here: the public op records the twin's node
under autograd (not the custom op's), and its outputs and gradients equal those of the registered custom op called
directly (same kernels, so exactly), for add + RMSNorm, conv1d + SiLU, the scan and the fused mixer op."""
from __future__ import annotations

import pytest
import torch

from test_bimamba_inner import inner_inputs, normed_input


def _leaves(tensors):
    return [t.clone().requires_grad_() if t is not None and t.is_floating_point() else t for t in tensors]


def _run(fn, tensors, extra, n_out):
    leaves = _leaves(tensors)
    outs = fn(*leaves, *extra)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    g = torch.Generator().manual_seed(1)
    loss = sum((o.float() * torch.randn(o.shape, generator=g)).sum() for o in outs[:n_out])
    loss.backward()
    return outs, [t.grad if isinstance(t, torch.Tensor) and t.requires_grad else None for t in leaves]


def _case(name):
    g = torch.Generator().manual_seed(0)
    if name == "add_rmsnorm":
        from kernels.rmsnorm.op import add_rmsnorm
        x, res, w = torch.randn(2, 5, 24, generator=g), torch.randn(2, 5, 24, generator=g), torch.rand(24, generator=g)
        return (lambda *a: add_rmsnorm(*a), torch.ops.vimbench.add_rmsnorm, [x, res, w], (1e-5, None), 2,
                "AddRMSNormFunction")
    if name == "conv1d":
        from kernels.conv1d.op import conv1d_silu_bidir
        x = torch.randn(2, 7, 24, generator=g)[..., :12].transpose(1, 2)  # (B, E, L) channel-last view
        w, b = 0.5 * torch.randn(2, 12, 4, generator=g), 0.5 * torch.randn(2, 12, generator=g)
        return (lambda *a: conv1d_silu_bidir(*a), torch.ops.vimbench.conv1d_silu_bidir, [x, w, b], (), 1,
                "Conv1dSiluBidirFunction")
    if name == "scan":
        from kernels.selective_scan.op import CHECKPOINT_CHUNK, bimamba_scan
        B_, E, L, N = 1, 12, 9, 4
        u, delta = torch.randn(2, B_, E, L, generator=g), 0.5 * torch.rand(2, B_, E, L, generator=g)
        A, Bm, Cm = -0.5 - torch.rand(2, E, N, generator=g), torch.randn(2, B_, N, L, generator=g), \
            torch.randn(2, B_, N, L, generator=g)
        D, z, bias = torch.randn(2, E, generator=g), torch.randn(B_, E, L, generator=g), torch.randn(2, E, generator=g)
        return (lambda *a: bimamba_scan(*a[:8]), lambda *a: torch.ops.vimbench.bimamba_scan_fwd_save(*a)[0],
                [u, delta, A, Bm, Cm, D, z, bias], (True, True, CHECKPOINT_CHUNK), 1, "BimambaScanFunction")
    from kernels.bimamba_inner.op import bimamba_inner
    from kernels.selective_scan.op import CHECKPOINT_CHUNK
    inputs, (r, w, eps) = normed_input(inner_inputs("cpu"))
    return (lambda *a: bimamba_inner(*a[:10], combine=False, norm=(r, w, eps)),
            lambda *a: torch.ops.vimbench.bimamba_inner(*a[:10], r, w, eps, False, CHECKPOINT_CHUNK)[0],
            inputs, (), 1, "BimambaInnerFunction")


@pytest.mark.parametrize("name", ["add_rmsnorm", "conv1d", "scan", "bimamba_inner"])
def test_eager_twin_matches_custom_op(name):
    pytest.importorskip("triton")
    public, custom_op, tensors, extra, n_out, node = _case(name)
    outs, grads = _run(public, tensors, extra, n_out)
    assert type(outs[0].grad_fn).__name__ == node + "Backward"  # the twin, not the custom op's node
    want_outs, want_grads = _run(custom_op, tensors, extra, n_out)
    for got, want in zip(outs[:n_out], want_outs[:n_out]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for i, (got, want) in enumerate(zip(grads, want_grads)):
        assert (got is None) == (want is None), i
        if got is not None:
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"gradient of input {i}")
