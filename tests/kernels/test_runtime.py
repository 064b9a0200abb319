"""kernels.runtime helpers that the backward launchers share."""
import pytest
import torch

from kernels.runtime import INT32_LIMIT, check_token_offsets, sum_partials


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
