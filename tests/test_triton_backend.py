"""The Vim model on the triton backend agrees with the torch (reference) backend, same weights."""
from __future__ import annotations

import pytest
import torch

import vimbench


def _pair(name: str, img_size: int, device: str):
    pytest.importorskip("triton")
    torch.manual_seed(0)
    ref = vimbench.create_model(name, img_size=img_size, backend="torch").to(device).eval()
    tri = vimbench.create_model(name, img_size=img_size, backend="triton").to(device).eval()
    tri.load_state_dict(ref.state_dict())
    return ref, tri


def test_triton_backend_matches_torch_fp32(device):
    ref, tri = _pair("vim_test", 64, device)
    images = torch.randn(2, 3, 64, 64, device=device)
    with torch.no_grad():
        out_ref, out_tri = ref(images), tri(images)
        feats_ref, feats_tri = ref.forward_features(images), tri.forward_features(images)
    assert tri.backend == "triton"
    torch.testing.assert_close(feats_tri, feats_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_tri, out_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_triton_backend_vim_t_bf16_autocast():
    ref, tri = _pair("vim_t", 224, "cuda")
    images = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        gold = ref.forward_features(images)  # fp32 torch backend: the accuracy reference
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_ref = ref.forward_features(images).float()
            out_tri = tri.forward_features(images).float()
    assert torch.isfinite(out_tri).all()
    err_tri = (out_tri - gold).abs().max().item()
    err_ref = (out_ref - gold).abs().max().item()
    # bf16 end to end: the triton backend must be about as accurate as the torch backend in bf16.
    assert err_tri <= 2 * err_ref + 1e-2, f"triton {err_tri:.3g} vs torch {err_ref:.3g} (max abs error)"
    torch.testing.assert_close(out_tri, out_ref, rtol=0.1, atol=0.25)
