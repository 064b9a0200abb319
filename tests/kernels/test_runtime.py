"""kernels.runtime helpers that the backward launchers share."""
import pytest
import torch

from kernels import runtime
from kernels.runtime import INT32_LIMIT, check_token_offsets, op_call, sum_partials


def _partials(rows: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(rows)
    return torch.randn(rows, 2, 7, 3, generator=g, dtype=torch.float32).to(device)


def test_sum_partials_is_the_column_sum_on_cpu():
    p = _partials(37, "cpu")
    torch.testing.assert_close(sum_partials(p), p.double().sum(0).float())
    assert sum_partials(p).shape == (2, 7, 3)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [1, 16, 528])
def test_sum_partials_gemv_matches_fp64_and_is_deterministic(rows):
    p = _partials(rows, "cuda")
    got = sum_partials(p)
    assert got.shape == p.shape[1:] and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), p.double().sum(0), rtol=1e-5, atol=1e-5)
    assert torch.equal(got, sum_partials(p))
    # a strided buffer (not what the launchers pass) falls back to torch.sum
    strided = p.transpose(1, 2)
    torch.testing.assert_close(sum_partials(strided).double(), strided.double().sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_sum_partials_under_graph_capture_replays_the_sum():
    p = _partials(64, "cuda")
    sum_partials(p)  # the ones vector for 64 rows exists before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sum_partials(p)
    p.mul_(2)
    graph.replay()
    torch.testing.assert_close(out.double(), p.double().sum(0), rtol=1e-5, atol=1e-5)


def test_op_call_nests_and_unwinds():
    depth = lambda: getattr(runtime._op_calls, "depth", 0)  # noqa: E731
    assert depth() == 0
    with op_call():
        with op_call():
            assert depth() == 2
        assert depth() == 1
    with pytest.raises(RuntimeError):
        with op_call():
            raise RuntimeError("inside")
    assert depth() == 0


def test_backward_custom_ops_sum_their_partials_as_op_calls(monkeypatch):
    """The registered backward ops (what compiled graphs call) run `sum_partials` inside `op_call`, so that under
    torch.compile's CUDA graph trees no ones vector is made and kept in the graphs' pool; the eager launchers do
    not (there the ones vectors are made once and kept)."""
    import kernels.rmsnorm.bwd as norm_bwd
    import kernels.rmsnorm.op  # noqa: F401 (registers vimbench::add_rmsnorm_bwd)

    seen = []

    def spy(partials):
        seen.append(getattr(runtime._op_calls, "depth", 0))
        return sum_partials(partials)

    monkeypatch.setattr(norm_bwd, "sum_partials", spy)
    g = torch.Generator().manual_seed(0)
    r, dy, w = (torch.randn(*shape, generator=g) for shape in ((2, 5, 24), (2, 5, 24), (24,)))
    via_op = torch.ops.vimbench.add_rmsnorm_bwd(dy, None, r, w, 1e-5, torch.float32, False)
    direct = norm_bwd.add_rmsnorm_bwd(dy, None, r, w, 1e-5, torch.float32, False)
    assert seen == [1, 0]
    torch.testing.assert_close(via_op[2], direct[2], rtol=0, atol=0)
    assert getattr(runtime._op_calls, "depth", 0) == 0


@pytest.mark.gpu
def test_sum_partials_in_an_op_call_keeps_no_new_ones_vector():
    p = _partials(77, "cuda")
    runtime._ONES.pop((p.device, 77), None)
    with op_call():
        got = sum_partials(p)
    assert (p.device, 77) not in runtime._ONES
    torch.testing.assert_close(got.double(), p.double().sum(0), rtol=1e-5, atol=1e-5)
    sum_partials(p)  # outside: made and kept
    assert (p.device, 77) in runtime._ONES


def test_strides_names_each_stride_and_refuses_a_mismatch():
    from kernels.runtime import strides

    assert strides("stride_u", ("b", "e", "l"), (7, 1, 3)) == {"stride_u_b": 7, "stride_u_e": 1, "stride_u_l": 3}
    assert strides("stride_u", ("b", "e", "l"), (8, 2, 4)) == {"stride_u_b": 8, "stride_u_e": 2, "stride_u_l": 4}
    assert strides("stride_z", ("b", "e", "l"), (1, 2, 3)) == {"stride_z_b": 1, "stride_z_e": 2, "stride_z_l": 3}
    with pytest.raises(ValueError, match="stride_u: 3 stride names for 2 strides"):
        strides("stride_u", ("b", "e", "l"), (1, 2))


def test_check_token_offsets_refuses_what_32_bit_token_indices_cannot_reach():
    # meta tensors: the strides of a huge tensor without its memory
    def along_l(length, stride):
        return torch.empty_strided((2, 1, length), (1, 1, stride), device="meta")

    check_token_offsets(3, u=along_l(3, INT32_LIMIT // 2 - 1), z=None)  # last offset 2^31 - 2: fits
    with pytest.raises(ValueError, match=r"u: token offsets up to 2,147,483,648 elements exceed"):
        check_token_offsets(3, u=along_l(3, INT32_LIMIT // 2))
    with pytest.raises(ValueError, match="grad_out"):
        check_token_offsets(2, u=along_l(2, 7), grad_out=along_l(2, INT32_LIMIT))
