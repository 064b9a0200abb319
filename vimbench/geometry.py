"""Model geometry, in one place: the numbers every Vim (and DeiT) configuration shares, and the sizes derived
from a model width and an image size. The model code, the analytic FLOP counts, the sweep grid and the kernel
tools all read them from here.

Per-model numbers (width D, depth, heads, family) live in the model registry (vimbench.models.registry).
"""
from __future__ import annotations

import math

PATCH = 16          # px per patch side (both families)
D_STATE = 16        # N: SSM state size per channel
D_CONV = 4          # K: depthwise conv1d width
EXPAND = 2          # E = EXPAND * D: the Vim mixer's inner width
DT_RANK_DIV = 16    # dt_rank = ceil(D / 16), the official "auto" rank
MLP_RATIO = 4       # DeiT's MLP hidden width = MLP_RATIO * D


def d_inner(d_model: int) -> int:
    """E, the Vim mixer's inner width."""
    return EXPAND * d_model


def dt_rank(d_model: int) -> int:
    """R, the rank of the Vim mixer's Delta projection."""
    return math.ceil(d_model / DT_RANK_DIV)


def patches_per_side(img_size: int) -> int:
    """img // 16: any size of at least one patch is allowed, as the official code and timm do (738 px -> 46)."""
    return img_size // PATCH


def num_patches(img_size: int) -> int:
    return patches_per_side(img_size) ** 2


def num_tokens(img_size: int) -> int:
    """L, the sequence length: patches plus the one class token (both families)."""
    return num_patches(img_size) + 1
