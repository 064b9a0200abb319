"""The fused training op of the Vim mixer (kernels.bimamba_inner): gradients against autograd through the
reference composition in float64, the custom op's registration (torch.library.opcheck), and what its autograd node
saves (no tensor of the recomputed xz's, u's or delta's size)."""
from __future__ import annotations

import pytest
import torch

from kernels.bimamba_inner.reference import bimamba_inner_ref
from kernels.rmsnorm.reference import add_rmsnorm_ref

NAMES = "h in_proj conv_w conv_b x_proj_t dt_proj_t A D dt_bias out_proj".split()


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
               rand(2, inner), rand(2, inner, scale=0.1) - 1.0, rand(d_model, inner, scale=inner ** -0.5)]
    return [t.to(device) for t in tensors]


def normed_input(inputs, eps=1e-5):
    """Replace h by a normalized one, h = add_rmsnorm(r, None, weight)[0]: returns inputs and norm = (r, weight,
    eps), so that the op may recompute h from r."""
    g = torch.Generator().manual_seed(3)
    r = 2.0 * torch.randn(inputs[0].shape, generator=g).to(inputs[0].device)
    weight = (1.0 + 0.1 * torch.randn(r.shape[-1], generator=g)).to(r.device)
    return [add_rmsnorm_ref(r, None, weight, eps)[0], *inputs[1:]], (r, weight, eps)


def assert_matches_f64_reference(op, device, inputs, combine, norm=None):
    """The op's output and every input's gradient against autograd through the float64 reference composition;
    returns the op's leaves (their .grad set)."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = op.bimamba_inner(*leaves, combine=combine, norm=norm)
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
    return leaves


@pytest.mark.parametrize("combine, recompute_h", [(False, False), (True, False), (False, True)])
def test_gradients_match_f64_reference(op, device, combine, recompute_h):
    """With norm given, the backward recomputes h from the norm's r: the same gradients."""
    inputs, norm = normed_input(inner_inputs(device)) if recompute_h else (inner_inputs(device), None)
    leaves = assert_matches_f64_reference(op, device, inputs, combine, norm)
    assert leaves[4].grad[..., 2 * 4 + 2:].abs().max() == 0  # the pad columns of x_proj_t


@pytest.mark.parametrize("combine", [False, True])
def test_softplus_before_scan_gradients_match_f64_reference(op, device, monkeypatch, combine):
    """SOFTPLUS_BEFORE_SCAN_DTYPES (here fp32, so that float64 can judge it): delta is made already softplus'd by
    dt_softplus, the scan runs without softplus and bias, and its backward returns the gradients of the
    pre-activation (softplus_done): the same output and gradients as the reference composition, dt_bias's and
    dt_proj's included."""
    monkeypatch.setattr(op, "SOFTPLUS_BEFORE_SCAN_DTYPES", (torch.float32,))
    calls = []
    real = op.dt_softplus_fwd.dt_softplus
    monkeypatch.setattr(op.dt_softplus_fwd, "dt_softplus", lambda *a: calls.append(a[-1]) or real(*a))
    assert_matches_f64_reference(op, device, inner_inputs(device), combine)
    assert calls == [torch.float32, torch.float32]  # the forward's delta and the backward's recompute


def test_softplus_before_scan_bf16_agrees_with_the_gemm(op, device, monkeypatch):
    """In bf16 (the dtypes it is meant for) the op's delta is fp16 and already softplus'd: output and gradients
    agree with the delta GEMM's to bf16 rounding."""
    results = []
    for dtypes in ((), (torch.bfloat16,)):
        monkeypatch.setattr(op, "SOFTPLUS_BEFORE_SCAN_DTYPES", dtypes)
        inputs = [t.to(torch.bfloat16) if i in (0, 1, 4, 5, 9) else t for i, t in enumerate(inner_inputs(device))]
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = op.bimamba_inner(*leaves, combine=False)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out))
        results.append([out.detach(), *(t.grad for t in leaves)])
    x_dbl = torch.zeros(2, 2 * 7, 16, dtype=torch.bfloat16, device=device)
    delta = op._scan_operands(x_dbl, inputs[5], 2, 7, 4, inputs[8])[2]
    assert delta.dtype == torch.float16 and delta.shape == (2, 2, 12, 7)
    for name, a, b in zip(["out", *NAMES], *results):
        scale = b.float().abs().max().item()
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2 * scale, msg=name)


def test_weight_grads_split_over_tokens_match_one_gemm(op, device, monkeypatch):
    """The weight gradients' K-sliced GEMMs (_weight_grad) equal a^T b, on a strided operand laid out like u
    ((batch, L, 2, E): the directions interleaved), for a row count with slices and a prime one (no split), with
    the wider operand on either side (P > Q as d_x_proj; P < Q as d_dt_proj, computed as (b^T a)^T)."""
    monkeypatch.setattr(op, "WEIGHT_GRAD_SLICE_ROWS", 16)
    monkeypatch.setattr(op, "WEIGHT_GRAD_MIN_SLICE_ROWS", 4)
    g = torch.Generator().manual_seed(0)
    for rows, want_slices in ((96, 6), (37, 1)):
        for p_cols, q_cols in ((12, 5), (3, 12)):
            a = torch.randn(rows, 2, p_cols, generator=g, dtype=torch.float64).transpose(0, 1)  # (2, M, P), strided
            b = torch.randn(2, rows, q_cols, generator=g, dtype=torch.float64)
            assert op._k_slices(rows) == want_slices
            got = op._weight_grad(a, b)
            assert got.shape == (2, p_cols, q_cols)
            torch.testing.assert_close(got, a.transpose(1, 2) @ b)
    # the whole op with slices in its weight gradients (14 token rows in 2 slices): the f64 reference's gradients
    monkeypatch.setattr(op, "WEIGHT_GRAD_SLICE_ROWS", 4)
    assert op._k_slices(2 * 7) == 2
    test_gradients_match_f64_reference(op, device, False, False)  # the op's kernels run where the tests do


@pytest.mark.parametrize("softplus_first", [False, True])
def test_opcheck(op, device, softplus_first):
    """Schema, fake tensors (the outputs' layouts too), autograd registration and AOT tracing of the backward, with
    delta from the GEMM and made already softplus'd (~30 s each interpreted; combine=True goes through the compiled
    model test in tests/test_training.py)."""
    inputs, (r, weight, eps) = normed_input(inner_inputs(device, batch=1, length=5))
    leaves = [t.requires_grad_() for t in inputs]
    torch.library.opcheck(torch.ops.vimbench.bimamba_inner.default,
                          (*leaves, r, weight, eps, False, 4, softplus_first))


def test_halves_and_combined_forms_agree(op, device):
    """combine=False (halves added in out_proj's GEMM) and combine=True (added in the scan) are one function."""
    inputs = inner_inputs(device)
    torch.testing.assert_close(op.bimamba_inner(*inputs, combine=False), op.bimamba_inner(*inputs, combine=True),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("recompute_h", [False, True])
def test_graph_saves_weights_x_dbl_and_checkpoints_only(op, device, recompute_h):
    """The op's autograd node keeps the weights, y (the scan's combined output), x_dbl, the checkpoints and h, or
    instead of h the norm's r and weight: nothing of the size of xz (batch, L, 2E), u, delta or the halves
    (2, batch, E, L), which the backward recomputes or never needs."""
    inputs = inner_inputs(device, batch=2, length=9, inner=12)
    inputs, norm = normed_input(inputs) if recompute_h else (inputs, None)
    leaves = [t.clone().requires_grad_() for t in inputs]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        op.bimamba_inner(*leaves, combine=False, norm=norm)
    batch, length, inner, n_state, width = 2, 9, 12, 4, 16
    saved_ptrs = {t.data_ptr() for t in saved}
    assert (leaves[0].data_ptr() in saved_ptrs) is not recompute_h  # h
    if recompute_h:
        assert {norm[0].data_ptr(), norm[1].data_ptr()} <= saved_ptrs
    known = {t.data_ptr() for t in leaves[1:]} | ({norm[0].data_ptr(), norm[1].data_ptr()} if norm else set())
    extra = sorted(tuple(t.shape) for t in saved if t.data_ptr() not in known | {leaves[0].data_ptr()})
    assert extra == sorted([(2, batch, -(-length // 64), n_state, inner), (2, batch * length, width),
                            (batch, length, inner)])  # checkpoints, x_dbl, y
    assert not any(t.numel() == 2 * batch * length * inner for t in saved)


def test_scan_operands_give_fp32_b_and_c(op, monkeypatch):
    """With 16-bit x_dbl the scans get B and C (2, batch, N, L) as views of an fp32 copy of those columns (exact
    values, N contiguous, rows of 2N); with SCAN_BC_FP32 off, and for fp32 x_dbl, views of x_dbl itself."""
    batch, length, n_state, dt_rank, inner = 2, 5, 4, 2, 12
    x_dbl = torch.randn(2, batch * length, 16).to(torch.bfloat16)
    dt_proj_t = torch.randn(2, dt_rank, inner).to(torch.bfloat16)
    rows = x_dbl.view(2, batch, length, 16)
    _, _, _, B, C = op._scan_operands(x_dbl, dt_proj_t, batch, length, n_state)
    assert B.dtype == C.dtype == torch.float32 and B.shape == C.shape == (2, batch, n_state, length)
    assert torch.equal(B, rows[..., :n_state].transpose(2, 3).float())
    assert torch.equal(C, rows[..., n_state:2 * n_state].transpose(2, 3).float())
    assert B.stride(2) == 1 and B.stride(3) == 2 * n_state and C.data_ptr() == B.data_ptr() + 4 * n_state
    monkeypatch.setattr(op, "SCAN_BC_FP32", False)
    _, _, _, B16, C16 = op._scan_operands(x_dbl, dt_proj_t, batch, length, n_state)
    assert B16.dtype == torch.bfloat16 and B16.data_ptr() == x_dbl.data_ptr()
    assert C16.data_ptr() == x_dbl.data_ptr() + 2 * n_state
    monkeypatch.setattr(op, "SCAN_BC_FP32", True)
    x32 = x_dbl.float()
    _, _, _, B32, _ = op._scan_operands(x32, dt_proj_t.float(), batch, length, n_state)
    assert B32.data_ptr() == x32.data_ptr()  # no copy of fp32 x_dbl


def test_bf16_op_with_fp32_b_and_c_changes_nothing(op, device, monkeypatch):
    """The fp32 copy of B and C holds the same values, so the bf16 op's output and every gradient are those of the
    scans reading x_dbl's 16-bit columns: bitwise under the interpreter (the same arithmetic); on a GPU the two
    compiled kernels may contract multiplies and adds differently, so there within bf16 rounding."""
    results = []
    for flag in (True, False):
        monkeypatch.setattr(op, "SCAN_BC_FP32", flag)
        inputs = [t.to(torch.bfloat16) if i in (0, 1, 4, 5, 9) else t
                  for i, t in enumerate(inner_inputs(device))]  # h and the GEMM weights in bf16
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = op.bimamba_inner(*leaves, combine=False)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out))
        results.append((out.detach(), [t.grad for t in leaves]))
    (out1, grads1), (out0, grads0) = results
    same = torch.equal if device == "cpu" else \
        (lambda a, b: torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-2 * b.float().abs().max().item()))
    assert same(out1, out0)
    for name, a, b in zip(NAMES, grads1, grads0):
        assert a is not None and same(a, b), name


@pytest.mark.parametrize("dz_halves, bc_rows, ordered", [(False, False, False), (True, False, True),
                                                         (False, True, True), (True, True, False)])
def test_scan_output_forms_agree(op, device, monkeypatch, dz_halves, bc_rows, ordered):
    """The backward takes dz as the two directions' terms summed by the in_proj GEMMs (DZ_HALVES) and dB/dC as
    x_dbl-gradient rows from one kernel (BC_ROWS), and the 16-bit forward sums its halves in the scan's second
    launch (ORDERED_SUM), all on by default: the old forms (fp32 atomics into one dz; fp32 sums, transposes,
    casts; halves over u and an add) give the same output and gradients, to fp32 summation order in fp32 and to
    bf16 rounding in bf16 (one rounding of each half or sum instead of one of their fp32 total)."""
    for dtype in (torch.float32, torch.bfloat16):
        results = []
        for flags in ((True, True, True), (dz_halves, bc_rows, ordered)):
            monkeypatch.setattr(op, "DZ_HALVES", flags[0])
            monkeypatch.setattr(op, "BC_ROWS", flags[1])
            monkeypatch.setattr(op, "ORDERED_SUM", flags[2])
            inputs = [t.to(dtype) if i in (0, 1, 4, 5, 9) else t for i, t in enumerate(inner_inputs(device))]
            leaves = [t.clone().requires_grad_() for t in inputs]
            out = op.bimamba_inner(*leaves, combine=dtype == torch.float32)
            out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out))
            results.append([out.detach(), *(t.grad for t in leaves)])
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        for name, a, b in zip(["out", *NAMES], *results):
            scale = b.float().abs().max().item()
            torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * scale, msg=name)
