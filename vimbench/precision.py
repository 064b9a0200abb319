"""Precision modes, in one place: their names, accepted spellings, element sizes and torch dtypes.

fp32 runs with TF32 off (the paper's torch 1.12), tf32 with TF32 matmuls and convolutions, bf16 and fp16 under
autocast. Element sizes are those of activations (tf32 tensors are stored in fp32).
"""
from __future__ import annotations

from typing import Any

from vimbench.errors import VimbenchError

DTYPES = ("fp32", "tf32", "bf16", "fp16")
DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
AUTOCAST_DTYPES = ("bf16", "fp16")


def element_bytes(name: str) -> int:
    if name not in DTYPE_BYTES:
        raise VimbenchError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


def torch_dtype(name: str) -> Any:
    """The torch dtype tensors of this mode hold (tf32: float32)."""
    import torch

    element_bytes(name)
    return {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast_dtype(name: str) -> Any | None:
    """The torch dtype autocast runs this mode in, None for the fp32/tf32 modes (no autocast)."""
    return torch_dtype(name) if name in AUTOCAST_DTYPES else None
