"""Tolerances against a float64 reference (shared/spec/kernels.md, from the mamba test suite)."""
import torch

TOL = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}


def assert_close_to_f64(out, ref64, dtype, plain=None):
    """out within the dtype's tolerance of ref64; for low precision also error <= 2x (plain PyTorch at the same
    precision) + a floor of one output ulp, so that a tiny plain error cannot make the criterion impossible."""
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref64, rtol=rtol, atol=atol)
    if plain is not None and dtype != torch.float32:
        err = (out.double() - ref64).abs().max().item()
        plain_err = (plain.double() - ref64).abs().max().item()
        ulp = torch.finfo(dtype).eps * ref64.abs().max().item()
        assert err <= 2 * plain_err + ulp, f"error {err:.3g} vs plain PyTorch {plain_err:.3g}"
