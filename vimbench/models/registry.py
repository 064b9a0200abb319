"""Model names, aliases and sizes; `create_model` builds any of them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from vimbench.errors import VimbenchError
from vimbench import geometry
from vimbench.models.deit import ATTENTION_BACKENDS, create_deit


@dataclass(frozen=True)
class ModelSpec:
    name: str            # canonical name
    alias: str           # short name used in tables (vim_t, deit_s, ...)
    family: str          # "vim" or "deit"
    size: str            # tiny / small / base / test
    embed_dim: int
    depth: int
    official_name: str = ""   # the official registration / timm name
    heads: int = 0            # DeiT only
    test_only: bool = False   # tiny configurations for fast CPU tests; hidden from the default listing
    overrides: dict = field(default_factory=dict, compare=False, hash=False)


_SPECS = [
    ModelSpec("vim_tiny_patch16_224", "vim_t", "vim", "tiny", 192, 24,
              "vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"),
    ModelSpec("vim_small_patch16_224", "vim_s", "vim", "small", 384, 24,
              "vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"),
    ModelSpec("vim_base_patch16_224", "vim_b", "vim", "base", 768, 24,
              "vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2"),
    ModelSpec("deit_tiny_patch16_224", "deit_t", "deit", "tiny", 192, 12, "deit_tiny_patch16_224", heads=3),
    ModelSpec("deit_small_patch16_224", "deit_s", "deit", "small", 384, 12, "deit_small_patch16_224", heads=6),
    ModelSpec("deit_base_patch16_224", "deit_b", "deit", "base", 768, 12, "deit_base_patch16_224", heads=12),
    ModelSpec("vim_test", "vim_test", "vim", "test", 32, 2, test_only=True),
    ModelSpec("deit_test", "deit_test", "deit", "test", 32, 2, "deit_tiny_patch16_224", heads=2, test_only=True,
              overrides={"embed_dim": 32, "depth": 2, "num_heads": 2}),
]
_BY_NAME = {key: spec for spec in _SPECS for key in (spec.name, spec.alias)}


def list_models(include_test: bool = False) -> list[ModelSpec]:
    """All registered models (the tiny test configurations only when asked)."""
    return [spec for spec in _SPECS if include_test or not spec.test_only]


def get_spec(name: str) -> ModelSpec:
    """Look a model up by canonical name or alias."""
    spec = _BY_NAME.get(name.strip().lower())
    if spec is None:
        known = ", ".join(s.alias for s in _SPECS)
        raise VimbenchError(f"unknown model {name!r}; known models: {known}")
    return spec


def create_model(name: str, img_size: int = 224, num_classes: int = 1000, backend: str | None = None,
                 attn: str = "sdpa", batch_slice: int = 0) -> nn.Module:
    """Build a model at img_size with random weights.

    backend: Vim op backend ('torch' or 'triton'; default from VIMBENCH_BACKEND). attn: DeiT attention
    ('sdpa' fused or 'eager'). batch_slice: Vim's mixers process the batch in slices of this many images at
    inference (0: whole batch). backend and batch_slice apply to Vim, attn to DeiT; each is ignored by the other.
    """
    spec = get_spec(name)
    if isinstance(img_size, bool) or not isinstance(img_size, int):
        raise VimbenchError(f"img_size must be a whole number of px, e.g. 224; got {img_size!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise VimbenchError(f"num_classes must be a whole number >= 0 (0: no classifier head); got {num_classes!r}")
    # Any size of at least one patch: the model sees img // 16 patches per side (738 px -> 46 x 46), as the
    # official code and timm do; the paper's 738 px point is not a multiple of 16.
    if img_size < geometry.PATCH:
        raise VimbenchError(f"image size {img_size} is smaller than the {geometry.PATCH} px patch; "
                            f"use at least {geometry.PATCH}")
    if spec.family == "vim":
        from vimbench.models.ops import normalize_backend
        from vimbench.models.vim import VisionMamba
        from vimbench.settings import default_backend

        return VisionMamba(img_size, spec.embed_dim, spec.depth, num_classes,
                           normalize_backend(backend) if backend is not None else default_backend(),
                           batch_slice=batch_slice)
    if not isinstance(attn, str) or attn.strip().lower() not in ATTENTION_BACKENDS:
        raise VimbenchError(f"unknown attention {attn!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    return create_deit(spec.official_name, img_size, num_classes, attn.strip().lower(), **spec.overrides)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def num_tokens(spec: ModelSpec, img_size: int) -> int:
    """Sequence length the model sees: patches plus the one class token (both families)."""
    return geometry.num_tokens(img_size)
