"""DeiT through timm, built at the benchmark resolution, with its attention path chosen per model."""
from __future__ import annotations

import torch.nn as nn

ATTENTION_BACKENDS = ("sdpa", "eager")


def create_deit(timm_name: str, img_size: int, num_classes: int, attn: str, **overrides) -> nn.Module:
    """timm's DeiT at img_size. attn='sdpa' keeps timm's fused attention (F.scaled_dot_product_attention);
    'eager' computes softmax(QK^T)V explicitly, with the quadratic memory the Vim paper compared against.
    The choice is set on each attention module, never through a global flag."""
    import timm
    from timm.models.vision_transformer import Attention

    model = timm.create_model(timm_name, pretrained=False, img_size=img_size, num_classes=num_classes, **overrides)
    fused = attn == "sdpa"
    for module in model.modules():
        if isinstance(module, Attention):
            module.fused_attn = fused
    return model
