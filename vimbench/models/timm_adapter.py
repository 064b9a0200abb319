"""Any timm model as a benchmark model: DeiT (the paper's baseline, with its attention path chosen per model)
and, as `timm:<name>`, any other timm architecture built at the benchmark resolution where timm allows it.

timm, torch and the model classes are imported inside the functions, so importing the registry stays cheap."""
from __future__ import annotations

import functools
from typing import Any

from vimbench.errors import VimbenchError

ATTENTION_BACKENDS = ("sdpa", "eager")
TIMM_PREFIX = "timm:"


def set_attention(model: Any, attn: str) -> None:
    """attn='sdpa' keeps timm's fused attention (F.scaled_dot_product_attention); 'eager' computes
    softmax(QK^T)V explicitly, with the quadratic memory the Vim paper compared against. Set on each attention
    module that has the switch (timm's `fused_attn`), never through a global flag."""
    fused = attn == "sdpa"
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def default_size(timm_name: str) -> int | None:
    """The input side timm's pretrained config names for the model (None when it names none)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(timm_name)
    except Exception:  # no config registered: a plugin model
        return None
    size = getattr(cfg, "input_size", None) if cfg is not None else None
    return int(size[-1]) if size else None


def create_timm(timm_name: str, img_size: int, num_classes: int = 1000, attn: str | None = None,
                **overrides) -> Any:
    """timm's model at img_size with random weights. A model whose constructor takes no img_size (a
    convolutional network) is built as it is and fed img_size inputs; build_problem says beforehand whether
    that works. attn: see set_attention (None: timm's default)."""
    import timm

    try:
        model = timm.create_model(timm_name, pretrained=False, img_size=img_size, num_classes=num_classes,
                                  **overrides)
    except TypeError as exc:
        if "img_size" not in str(exc):
            raise
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **overrides)
    if attn is not None:
        set_attention(model, attn)
    return model


def create_deit(timm_name: str, img_size: int, num_classes: int, attn: str, **overrides) -> Any:
    """timm's DeiT at img_size with the attention path `attn` (sdpa or eager)."""
    return create_timm(timm_name, img_size, num_classes, attn, **overrides)


def timm_names(pattern: str = "*") -> list[str]:
    """timm model names matching a wildcard pattern (plugins registered by an import are included)."""
    import timm

    return list(timm.list_models(pattern))


def check_timm_name(name: str) -> str:
    """The timm name itself; raises, saying how to find names, when timm does not know it."""
    import timm

    if name in timm.list_models() or timm.is_model(name):
        return name
    close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
    hint = f" (close: {', '.join(close)})" if close else ""
    raise VimbenchError(f"timm has no model {name!r}{hint}; list candidates with `vimbench models --timm "
                        f"'*{name.split('_')[0]}*'`, or pass --timm-import MODULE if a plugin registers it")


@functools.lru_cache(maxsize=None)
def build_problem(timm_name: str, res: int) -> str | None:
    """Why the model cannot run at res (None when it can): built at res (img_size) where its constructor takes
    it, then one forward of a res x res input, all on the meta device (no memory, no weights initialised)."""
    import torch

    try:
        with torch.device("meta"), torch.no_grad():
            model = create_timm(timm_name, res, 1000).eval()
            model(torch.empty(1, 3, res, res))
        return None
    except VimbenchError as exc:
        return str(exc)
    except Exception as exc:  # the model's own size checks (a window that does not tile the input, ...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"timm's {timm_name} cannot run at {res} px: {first[:200]}"
