"""Model registry and builders (Vim on our op table, DeiT through timm)."""
from vimbench.models.registry import ModelSpec, count_params, create_model, get_spec, list_models, num_tokens

__all__ = ["ModelSpec", "count_params", "create_model", "get_spec", "list_models", "num_tokens"]
