"""The sweep grid: the --res grammar, the list parsers and case expansion (no model is run here)."""
from __future__ import annotations

import pytest
import torch

from vimbench.bench import compiler as grid_compile
from vimbench.bench import grid
from vimbench.bench.grid import LADDER, SweepConfig, expand_cases
from vimbench.errors import VimbenchError


@pytest.mark.parametrize("text, expected", [
    ("224..2048", LADDER),
    ("224..1248", (224, 384, 512, 640, 738, 896, 1024, 1248)),
    ("1024..4096", (1024, 1248, 1536, 2048)),
    ("512..1024", (512, 640, 738, 896, 1024)),
    ("200..600", (224, 384, 512)),
    ("256..512:128", (256, 384, 512)),
    ("256..500:128", (256, 384)),
    ("224,512..1248", (224, 512, 640, 738, 896, 1024, 1248)),
    ("512, 224 ,512", (224, 512)),
    ("738", (738,)),
    ("16", (16,)),
    ("64..64:16", (64,)),
])
def test_res_grammar(text, expected):
    assert grid.parse_res(text) == expected


def test_res_accepts_suite_values():
    assert grid.parse_res([738, "224"]) == (224, 738)
    assert grid.parse_res(1248) == (1248,)


@pytest.mark.parametrize("text, words", [
    ("1248..224", "ends below its start"),
    ("abc", "not a whole number"),
    ("224..x", "not a whole number"),
    ("224..1248:x", "not a whole number"),
    ("8", "smaller than the 16 px patch"),
    ("0", "smaller than the 16 px patch"),
    ("-32", "smaller than the 16 px patch"),
    ("0..224", "smaller than the 16 px patch"),
    ("224..1248:0", "step must be a positive"),
    ("224..1248:-32", "step must be a positive"),
    ("300..350", "no size of the standard ladder"),
    ("", "empty"),
    ("224,,512", "empty item"),
    ("100000", "limit"),
])
def test_res_bad_inputs(text, words):
    with pytest.raises(VimbenchError, match=words) as info:
        grid.parse_res(text)
    assert "\n" not in str(info.value)


def test_batch():
    assert grid.parse_batch("64,1,8,8") == (1, 8, 64)
    for bad, words in (("0", "not a positive"), ("-4", "not a positive"), ("x", "not a whole number"),
                       ("1,,2", "empty item")):
        with pytest.raises(VimbenchError, match=words):
            grid.parse_batch(bad)


def test_models_aliases_and_full_names():
    assert grid.parse_models("vim_tiny_patch16_224, deit_t,vim_t") == ("vim_t", "deit_t")
    with pytest.raises(VimbenchError, match="unknown model 'resnet50'.*known models: .*vim_t"):
        grid.parse_models("vim_t,resnet50")


def test_choices():
    assert grid.parse_dtypes("bf16,float32,FP16") == ("bf16", "fp32", "fp16")
    assert grid.parse_attn("eager,sdpa") == ("eager", "sdpa")
    assert grid.parse_backends("triton") == ("triton",)
    with pytest.raises(VimbenchError, match="unknown dtype 'int8'; choose from fp32, tf32, bf16, fp16"):
        grid.parse_dtypes("int8")
    with pytest.raises(VimbenchError, match="unknown attention 'flash'"):
        grid.parse_attn("flash")
    with pytest.raises(VimbenchError, match="unknown backend 'cuda'"):
        grid.parse_backends("cuda")


def test_mode_and_device():
    assert grid.parse_modes("infer") == ("infer",)
    assert grid.parse_modes("train, INFER,train") == ("train", "infer")
    assert grid.parse_modes(["infer", "train"]) == ("infer", "train")
    with pytest.raises(VimbenchError, match="unknown mode 'fit'; choose from infer, train"):
        grid.parse_modes("fit")
    assert grid.parse_device("auto", cuda_available=False) == "cpu"
    assert grid.parse_device("auto", cuda_available=True) == "cuda"
    with pytest.raises(VimbenchError, match="no CUDA GPU"):
        grid.parse_device("cuda", cuda_available=False)
    assert grid.parse_device("cuda", cuda_available=False, plan_only=True) == "cuda"


def _config(**kw):
    base = dict(models=("vim_t", "deit_t"), res=(224, 512), batch=(8,), dtypes=("fp32", "bf16"),
                attn=("sdpa", "eager"), backends=("torch", "triton"), device="cuda")
    return SweepConfig(**{**base, **kw})


def test_expansion_on_cuda():
    cases, dropped = expand_cases(_config())
    # Vim: 2 res x 2 dtypes x 2 backends; DeiT: 2 res x 2 dtypes x 2 attention paths
    assert len(cases) == 16 and len(set(cases)) == 16
    vim = [c for c in cases if c.model == "vim_t"]
    deit = [c for c in cases if c.model == "deit_t"]
    assert {c.implementation for c in vim} == {"torch", "triton"} and {c.attn for c in vim} == {None}
    assert {c.implementation for c in deit} == {"timm"} and {c.attn for c in deit} == {"sdpa", "eager"}
    whats = " | ".join(d.what for d in dropped)
    assert "attn sdpa,eager x vim_t" in whats and "backend torch,triton x deit_t" in whats
    assert all(d.reason for d in dropped)


def test_expansion_on_cpu_drops_gpu_only_modes():
    cases, dropped = expand_cases(_config(device="cpu", dtypes=("fp32", "tf32", "bf16", "fp16")))
    assert {c.dtype for c in cases} == {"fp32", "bf16"}
    assert {c.implementation for c in cases} == {"torch", "timm"}
    reasons = {d.what: d.reason for d in dropped}
    assert "TF32" in reasons["dtype tf32 on cpu"]
    assert "bf16" in reasons["dtype fp16 on cpu"]
    assert "CUDA" in reasons["backend triton on cpu"]


def test_cuda_graphs_drop_the_host_syncing_torch_backend():
    cases, dropped = expand_cases(_config(compile=("cuda-graphs",)))
    assert {c.implementation for c in cases if c.model == "vim_t"} == {"triton"}
    assert all(c.compile == "cuda-graphs" for c in cases)
    assert any(d.what == "backend torch with compile cuda-graphs" for d in dropped)


def test_compile_axis_is_the_innermost_loop_and_keeps_torch_where_it_compiles():
    cases, dropped = expand_cases(_config(compile=("none", "cuda-graphs", "reduce-overhead")))
    vim = [(c.implementation, c.compile) for c in cases if c.model == "vim_t" and c.res == 224 and c.dtype == "fp32"]
    # the torch reference loses only vimbench's own capture (host sync); torch.compile splits the graph there
    assert vim == [("torch", "none"), ("torch", "reduce-overhead"),
                   ("triton", "none"), ("triton", "cuda-graphs"), ("triton", "reduce-overhead")]
    deit = {(c.attn, c.compile) for c in cases if c.model == "deit_t"}
    assert deit == {(a, m) for a in ("sdpa", "eager") for m in ("none", "cuda-graphs", "reduce-overhead")}


def test_compile_modes_with_cuda_graphs_are_dropped_on_cpu_with_a_reason():
    cases, dropped = expand_cases(_config(device="cpu", compile=grid_compile.COMPILE_MODES))
    assert {c.compile for c in cases} == {"none", "default", "max-autotune-no-cudagraphs"}
    reasons = {d.what: d.reason for d in dropped}
    assert "CUDA device" in reasons["compile cuda-graphs,max-autotune,reduce-overhead on cpu"]


@pytest.mark.parametrize("text, modes", [
    ("none", ("none",)),
    ("eager,default", ("none", "default")),
    ("reduce-overhead, max-autotune-no-cudagraphs", ("reduce-overhead", "max-autotune-no-cudagraphs")),
    (["graphs", "cuda-graphs"], ("cuda-graphs",)),
    (False, ("none",)),
])
def test_parse_compile(text, modes):
    assert grid_compile.parse_compile(text) == modes


@pytest.mark.parametrize("text, words", [("fast", "unknown compile mode 'fast'"), ("", "empty"),
                                         ("none,,default", "empty item")])
def test_parse_compile_rejects(text, words):
    with pytest.raises(VimbenchError, match=words):
        grid_compile.parse_compile(text)


def test_debug_compile_backends_take_only_the_default_mode():
    _config(compile=("none", "default"), compile_backend="aot_eager")
    with pytest.raises(VimbenchError, match="max-autotune needs the inductor backend"):
        _config(compile=("max-autotune",), compile_backend="eager")


@pytest.mark.parametrize("kw, words", [
    (dict(iters=4), "at least 5 timed calls"),
    (dict(warmup=0), "at least 1 warm-up"),
    (dict(device="cpu", h2d=True), "needs a CUDA device"),
    (dict(compile=("none", "cuda-graphs"), h2d=True), "cannot be combined"),
    (dict(compile=()), "no compile"),
    (dict(batch=()), "no batch"),
])
def test_config_rejects(kw, words):
    with pytest.raises(VimbenchError, match=words):
        _config(**kw)


@pytest.mark.parametrize("name", ["vim_test", "deit_test"])
def test_738_is_46_patches_per_side(name):
    """738 px, on the ladder, is not a multiple of 16: both families see 738 // 16 = 46 patches per side."""
    from vimbench.models import create_model, get_spec, num_tokens

    model = create_model(name, img_size=738).eval()
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 738, 738)).shape == (1, 1000)
    assert num_tokens(get_spec(name), 738) == 46 * 46 + 1
    assert model.pos_embed.shape[1] == 46 * 46 + 1


def test_points_grammar():
    assert grid.parse_points("224x128, 1248X8,224x128") == ((224, 128), (1248, 8))
    assert grid.parse_points(["512x32", "1024x8"]) == ((512, 32), (1024, 8))


@pytest.mark.parametrize("text, words", [
    ("224", "not RESxBATCH"),
    ("224x0", "batch 0 is not a positive"),
    ("12x8", "smaller than the 16 px patch"),
    ("axb", "not a whole number"),
    ("224x128,", "empty item"),
])
def test_points_bad_inputs(text, words):
    with pytest.raises(VimbenchError, match=words):
        grid.parse_points(text)


def test_points_replace_the_product_and_modes_multiply():
    config = _config(res=(), batch=(), points=((224, 128), (1248, 8)), modes=("infer", "train"),
                     backends=("triton",), attn=("sdpa",))
    cases, _ = expand_cases(config)
    assert {(c.res, c.batch) for c in cases} == {(224, 128), (1248, 8)}
    # 2 modes x 2 models x 2 points x 2 dtypes, one implementation each; infer cases first
    assert len(cases) == 16 and [c.mode for c in cases] == ["infer"] * 8 + ["train"] * 8
    with pytest.raises(VimbenchError, match="either points"):
        _config(points=((224, 8),))


def test_train_mode_takes_every_compile_mode_but_no_inference_option():
    cases, dropped = expand_cases(_config(modes=("infer", "train"), compile=("cuda-graphs", "default"),
                                          backends=("triton",)))
    assert {(c.mode, c.compile) for c in cases} == {("infer", "cuda-graphs"), ("infer", "default"),
                                                    ("train", "cuda-graphs"), ("train", "default")}
    assert not any("compile" in d.what for d in dropped), dropped
    cases, _ = expand_cases(_config(modes=("infer", "train"), compile=("none", "default"), vim_slice=(0, 4),
                                    backends=("triton",)))
    train = [c for c in cases if c.mode == "train"]
    assert train and {(c.compile, c.vim_slice) for c in train} == {("none", 0), ("default", 0)}
    assert {(c.compile, c.vim_slice) for c in cases if c.mode == "infer" and c.model == "vim_t"} == {
        ("none", 0), ("none", 4), ("default", 0), ("default", 4)}


def test_also_blocks_add_cases_once_and_share_the_counts():
    block = _config(models=("vim_s",), res=(1248,), batch=(8,), dtypes=("bf16",), backends=("triton",))
    config = _config(backends=("triton",), also=(block, _config(backends=("triton",))))
    cases, _ = expand_cases(config)
    assert len(cases) == len(set(cases)) == 12 + 1 and cases[-1].model == "vim_s"
    with pytest.raises(VimbenchError, match="one device with one warmup and iters"):
        _config(also=(_config(iters=7),))
