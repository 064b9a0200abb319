"""Model geometry and precision names: one source each, and the model, the FLOP counts and the kernel tools agree
with it."""
from __future__ import annotations

import pytest
import torch

from vimbench import geometry, precision
from vimbench.errors import VimbenchError


def test_vim_ti_numbers():
    assert geometry.num_tokens(1248) == 6085 and geometry.num_tokens(224) == 197
    assert geometry.num_tokens(738) == 46 * 46 + 1  # not a multiple of 16: floor, as the official code does
    assert geometry.d_inner(192) == 384 and geometry.dt_rank(192) == 12 and geometry.dt_rank(384) == 24


def test_model_flops_and_kernel_shapes_use_the_same_geometry():
    from vimbench.analysis.flops import model_counts
    from vimbench.kerneltools.registry import OpShape
    from vimbench.models import create_model, get_spec, num_tokens

    model = create_model("vim_test", img_size=64, backend="torch")
    mixer = model.layers[0].mixer
    spec = get_spec("vim_test")
    assert model.num_tokens == num_tokens(spec, 64) == geometry.num_tokens(64)
    assert (mixer.d_inner, mixer.dt_rank) == (geometry.d_inner(32), geometry.dt_rank(32))
    assert mixer.A_log.shape[-1] == geometry.D_STATE and mixer.conv1d.kernel_size[0] == geometry.D_CONV
    assert model_counts("vim_test", 64).tokens == geometry.num_tokens(64)
    shape = OpShape.for_model("vim_test", 64, 2)
    assert (shape.channels, shape.length, shape.dt_rank) == (mixer.d_inner, model.num_tokens, mixer.dt_rank)


def test_precision_names():
    assert precision.torch_dtype("bf16") is torch.bfloat16 and precision.torch_dtype("tf32") is torch.float32
    assert precision.autocast_dtype("fp16") is torch.float16 and precision.autocast_dtype("tf32") is None
    assert [precision.element_bytes(d) for d in precision.DTYPES] == [4, 4, 2, 2]
    with pytest.raises(VimbenchError, match="unknown dtype"):
        precision.element_bytes("fp8")


def test_report_family_comes_from_the_model_registry():
    from vimbench.report.data import family

    assert family("vim_t") == "vim" and family("deit_s") == "deit" and family("vim_tiny_patch16_224") == "vim"
    assert family("resnet50") == "other"
