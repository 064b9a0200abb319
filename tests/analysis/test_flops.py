"""Analytic FLOP counts against hand counts from parameter shapes and against torch's FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from vimbench.analysis.flops import CATEGORIES, model_counts, train_step_flops
from vimbench.errors import VimbenchError
from vimbench.models import create_model


def _counter_flops(model, images) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(images)
    return counter.get_total_flops()


def test_vim_t_gemm_flops_match_parameter_shapes():
    batch, res = 2, 224
    model = create_model("vim_t", res, backend="torch")
    tokens, patches = (res // 16) ** 2 + 1, (res // 16) ** 2
    hand = 0
    for name, p in model.named_parameters():
        if name.endswith(("in_proj.weight", "out_proj.weight", "x_proj.weight", "x_proj_b.weight",
                          "dt_proj.weight", "dt_proj_b.weight")):
            hand += 2 * batch * tokens * p.numel()
        elif name == "patch_embed.proj.weight":
            hand += 2 * batch * patches * p.numel()
        elif name == "head.weight":
            hand += 2 * batch * p.numel()
    counts = model_counts("vim_t", res, batch)
    assert counts.category_flops("gemm") == pytest.approx(hand, rel=1e-12)
    # The paper's "1.5 G FLOPs" for Vim-Ti are fvcore MACs of the GEMMs and convs (fvcore skips the scan).
    assert 1.2e9 < hand / 2 / batch < 1.5e9


def test_vim_t_scan_follows_the_mamba_convention():
    counts = model_counts("vim_t", 224, 1)
    L, E, N, depth = 197, 384, 16, 24
    scan = counts.category_flops("scan")
    assert scan >= 2 * 9 * L * E * N * depth
    assert scan == pytest.approx(depth * (2 * (9 * L * E * N + L * E) + 3 * L * E))


def test_vim_test_matches_flop_counter():
    from vimbench.layout import XDblLayout

    model = create_model("vim_test", 64, num_classes=10, backend="torch").eval()
    images = torch.randn(2, 3, 64, 64)
    counts = model_counts("vim_test", 64, 2, num_classes=10)
    by = counts.by_category()
    # The counter also sees the zero rows the mixer pads x_proj's output with, and the same pad again as the delta
    # GEMM's extra K (its dt columns carry x_dbl's pad against zero rows of dt_proj; fp32: no other extras).
    mixer = model.layers[0].mixer
    lay, tokens, depth = mixer.x_dbl_layout, model.num_tokens, len(model.layers)
    pad_flops = 2 * (2 * 2 * tokens) * mixer.d_inner * (lay.width - lay.dt_rank - 2 * lay.d_state) * depth
    padding = 2 * pad_flops
    assert lay == XDblLayout(mixer.dt_rank, 16) and padding > 0
    assert _counter_flops(model, images) == pytest.approx(by["gemm"]["flops"] + by["conv"]["flops"] + padding,
                                                          rel=1e-12)


@pytest.mark.parametrize("res", [32, 64])
def test_deit_test_matches_flop_counter(res):
    model = create_model("deit_test", res, num_classes=10, attn="eager").eval()
    images = torch.randn(2, 3, res, res)
    counts = model_counts("deit_test", res, 2, num_classes=10, attn="eager")
    by = counts.by_category()
    assert _counter_flops(model, images) == pytest.approx(by["gemm"]["flops"] + by["attention"]["flops"],
                                                          rel=1e-12)


def test_training_step_gemm_and_attention_match_flop_counter_over_a_backward():
    # forward + backward of DeiT (eager attention: its matmuls are plain bmm the counter sees); the patch
    # embedding's convolution gets a weight gradient only (the image needs none)
    model = create_model("deit_test", 32, num_classes=10, attn="eager").train()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    counts = model_counts("deit_test", 32, 2, num_classes=10, attn="eager")
    total, exact = train_step_flops(counts)
    assert counter.get_total_flops() == pytest.approx(exact["gemm"] + exact["attention"], rel=1e-12)
    assert total == 3 * counts.flops and set(exact) == {"gemm", "attention"}


def test_categories_and_bytes():
    for name in ("vim_t", "deit_t"):
        counts = model_counts(name, 224, 4, "bf16")
        by = counts.by_category()
        assert set(by) == set(CATEGORIES)
        assert counts.bytes > 0 and all(v["bytes"] >= 0 for v in by.values())
        fp32 = model_counts(name, 224, 4, "fp32")
        assert fp32.flops == counts.flops and fp32.bytes > counts.bytes
    sdpa = model_counts("deit_t", 1024, 1, attn="sdpa").by_category()["attention"]["bytes"]
    eager = model_counts("deit_t", 1024, 1, attn="eager").by_category()["attention"]["bytes"]
    assert eager > 10 * sdpa


def test_res_not_multiple_of_16_uses_floor_patches():
    assert model_counts("vim_t", 738, 1).tokens == 46 * 46 + 1


def test_bad_inputs():
    with pytest.raises(VimbenchError):
        model_counts("vim_t", 8, 1)
    with pytest.raises(VimbenchError):
        model_counts("vim_t", 224, 1, "fp8")
