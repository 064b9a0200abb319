"""Model names, aliases and sizes; `create_model` builds any of them.

The table is static (no torch import): `vimbench models` prints parameter and token counts from it in a blink.
Besides the registered Vim and DeiT models, `timm:<name>` names any timm model (a peer), resolved on use."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vimbench.errors import VimbenchError
from vimbench import geometry
from vimbench.models.timm_adapter import ATTENTION_BACKENDS, TIMM_PREFIX

PATCH = geometry.PATCH   # both families embed 16 x 16 patches; the model sees img // 16 patches per side


@dataclass(frozen=True)
class ModelSpec:
    name: str            # canonical name
    alias: str           # short name used in tables (vim_t, deit_s, timm:convnext_tiny, ...)
    family: str          # "vim", "deit" or "timm" (any other timm model)
    size: str            # tiny / small / base / test ("" for timm peers)
    embed_dim: int
    depth: int
    official_name: str = ""   # the official registration / timm name
    heads: int = 0            # DeiT only
    test_only: bool = False   # tiny configurations for fast CPU tests; hidden from the default listing
    params_224: int = 0       # parameters at 224 px with a 1000-class head (tests check it against a build)
    overrides: dict = field(default_factory=dict, compare=False, hash=False)

    def params(self, img_size: int) -> int | None:
        """Parameters at img_size: only the position embedding grows, by embed_dim per extra patch token."""
        if not self.params_224:
            return None
        return self.params_224 + self.embed_dim * ((img_size // PATCH) ** 2 - (224 // PATCH) ** 2)


_SPECS = [
    ModelSpec("vim_tiny_patch16_224", "vim_t", "vim", "tiny", 192, 24,
              "vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
              params_224=7_148_008),
    ModelSpec("vim_small_patch16_224", "vim_s", "vim", "small", 384, 24,
              "vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
              params_224=25_796_584),
    ModelSpec("vim_base_patch16_224", "vim_b", "vim", "base", 768, 24,
              "vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2",
              params_224=97_598_440),
    ModelSpec("deit_tiny_patch16_224", "deit_t", "deit", "tiny", 192, 12, "deit_tiny_patch16_224", heads=3,
              params_224=5_717_416),
    ModelSpec("deit_small_patch16_224", "deit_s", "deit", "small", 384, 12, "deit_small_patch16_224", heads=6,
              params_224=22_050_664),
    ModelSpec("deit_base_patch16_224", "deit_b", "deit", "base", 768, 12, "deit_base_patch16_224", heads=12,
              params_224=86_567_656),
    ModelSpec("vim_test", "vim_test", "vim", "test", 32, 2, test_only=True, params_224=91_432),
    ModelSpec("deit_test", "deit_test", "deit", "test", 32, 2, "deit_tiny_patch16_224", heads=2, test_only=True,
              params_224=89_416, overrides={"embed_dim": 32, "depth": 2, "num_heads": 2}),
]
_BY_NAME = {key: spec for spec in _SPECS for key in (spec.name, spec.alias)}


def list_models(include_test: bool = False) -> list[ModelSpec]:
    """All registered models (the tiny test configurations only when asked); timm peers are not listed here
    (`vimbench models --timm PATTERN` lists candidates)."""
    return [spec for spec in _SPECS if include_test or not spec.test_only]


def timm_spec(name: str) -> ModelSpec:
    """The spec of a timm peer, `timm:<timm model name>`; raises when timm does not know the name."""
    from vimbench.models.timm_adapter import check_timm_name

    timm_name = name.strip()[len(TIMM_PREFIX):].strip()
    if not timm_name:
        raise VimbenchError("`timm:` needs a model name, e.g. timm:convnext_tiny")
    check_timm_name(timm_name)
    return ModelSpec(f"{TIMM_PREFIX}{timm_name}", f"{TIMM_PREFIX}{timm_name}", "timm", "", 0, 0, timm_name)


def get_spec(name: str) -> ModelSpec:
    """Look a model up by canonical name or alias, or `timm:<name>` for any timm model."""
    if name.strip().lower().startswith(TIMM_PREFIX):
        return timm_spec(name)
    spec = _BY_NAME.get(name.strip().lower())
    if spec is None:
        known = ", ".join(s.alias for s in _SPECS)
        raise VimbenchError(f"unknown model {name!r}; known models: {known}, or timm:<name> for any timm model")
    return spec


def create_model(name: str, img_size: int = 224, num_classes: int = 1000, backend: str | None = None,
                 attn: str = "sdpa", batch_slice: int = 0, train_boundary: str = "fused",
                 vim_memory: str = "default") -> Any:
    """Build a model at img_size with random weights (an nn.Module).

    backend: Vim op backend ('torch' or 'triton'; default from VIMBENCH_BACKEND). attn: DeiT attention
    ('sdpa' fused or 'eager'). batch_slice: Vim's mixers process the batch in slices of this many images at
    inference (0: whole batch). train_boundary: what Vim's mixers keep for the backward pass in training
    (vimbench.models.vim.TRAIN_BOUNDARIES: 'fused', 'fused-combined', 'per-op'). vim_memory: the mixers'
    inference memory mode (vimbench.models.vim.MEMORY_MODES: 'default', 'split', 'lean', 'lean-gated'). backend,
    batch_slice, train_boundary and vim_memory apply to Vim, attn to DeiT; each is ignored by the others; a timm peer
    (`timm:<name>`) keeps timm's own attention.
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
        from vimbench.models.vim import MEMORY_MODES, TRAIN_BOUNDARIES, VisionMamba, set_memory_mode
        from vimbench.settings import default_backend

        if train_boundary not in TRAIN_BOUNDARIES:
            raise VimbenchError(f"unknown train_boundary {train_boundary!r}; choose one of "
                                f"{', '.join(TRAIN_BOUNDARIES)}")
        if vim_memory not in MEMORY_MODES:
            raise VimbenchError(f"unknown Vim memory mode {vim_memory!r}; choose one of {', '.join(MEMORY_MODES)}")
        model = VisionMamba(img_size, spec.embed_dim, spec.depth, num_classes,
                            normalize_backend(backend) if backend is not None else default_backend(),
                            batch_slice=batch_slice, train_boundary=train_boundary)
        set_memory_mode(model, vim_memory)
        return model
    from vimbench.models.timm_adapter import create_deit, create_timm

    if spec.family == "timm":
        return create_timm(spec.official_name, img_size, num_classes)
    if not isinstance(attn, str) or attn.strip().lower() not in ATTENTION_BACKENDS:
        raise VimbenchError(f"unknown attention {attn!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
    return create_deit(spec.official_name, img_size, num_classes, attn.strip().lower(), **spec.overrides)


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def num_tokens(spec: ModelSpec, img_size: int) -> int | None:
    """Sequence length the model sees: patches plus the one class token (Vim and DeiT); None for timm peers,
    whose token count depends on their architecture."""
    if spec.family == "timm":
        return None
    return geometry.num_tokens(img_size)


def describe(img_size: int, include_test: bool = False) -> list[dict[str, Any]]:
    """The registered models with their parameter and token counts at img_size, from the static table."""
    return [{"alias": s.alias, "name": s.name, "family": s.family, "size": s.size, "embed_dim": s.embed_dim,
             "depth": s.depth, "params": s.params(img_size), "tokens": num_tokens(s, img_size)}
            for s in list_models(include_test)]
