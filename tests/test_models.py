"""Vim and DeiT as built by vimbench: sizes, official key names, and the math against an independent reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest

import vimbench
from kernels.selective_scan.reference import selective_scan_sequential
from vimbench.errors import VimbenchError
from vimbench.models import count_params, create_model, get_spec


@pytest.mark.parametrize(
    "name,res,expected",
    [
        ("vim_t", 224, 7_148_008),
        ("vim_s", 224, 25_796_584),
        ("vim_b", 224, 97_598_440),
        ("vim_tiny_patch16_224", 1248, 8_278_504),
        ("deit_t", 224, 5_717_416),
        ("deit_s", 224, 22_050_664),
        ("deit_b", 224, 86_567_656),
    ],
)
def test_parameter_counts_match_official(name, res, expected):
    with torch.device("meta"):
        model = create_model(name, img_size=res)
    assert count_params(model) == expected


def _official_keys(depth: int) -> set[str]:
    mixer = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight", "dt_proj.weight", "dt_proj.bias",
             "A_log", "D", "conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight",
             "dt_proj_b.bias", "A_b_log", "D_b", "out_proj.weight"]
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm_f.weight",
            "head.weight", "head.bias"}
    for i in range(depth):
        keys |= {f"layers.{i}.mixer.{k}" for k in mixer} | {f"layers.{i}.norm.weight"}
    return keys


def test_state_dict_uses_official_key_names_and_shapes():
    with torch.device("meta"):
        model = create_model("vim_t")
    sd = model.state_dict()
    assert set(sd) == _official_keys(24)
    assert sd["layers.0.mixer.conv1d.weight"].shape == (384, 1, 4)
    assert sd["layers.0.mixer.x_proj.weight"].shape == (12 + 32, 384)
    assert sd["layers.0.mixer.A_b_log"].shape == (384, 16)
    assert sd["pos_embed"].shape == (1, 197, 192)


def test_checkpoint_file_in_official_format_loads_and_reproduces_logits(tmp_path):
    torch.manual_seed(0)
    source = create_model("vim_test", img_size=64, num_classes=10).eval()
    path = tmp_path / "vim_test_checkpoint.pth"
    torch.save({"model": source.state_dict(), "epoch": 300}, path)

    target = create_model("vim_test", img_size=64, num_classes=10).eval()
    missing = target.load_state_dict(torch.load(path, map_location="cpu")["model"], strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(images), target(images))


def _sequential_mixer_reference(mixer, h):
    """The mixer as the official code computes it, in float64: flipped copies for the backward direction,
    a causal conv on each, the literal token loop of the scan, outputs averaged."""
    p = {k: v.double() for k, v in mixer.state_dict().items()}
    inner = mixer.d_inner
    rank = mixer.dt_rank
    xz = (h.double() @ p["in_proj.weight"].t()).transpose(1, 2)  # (B, 2E, L)
    x, z = xz[:, :inner], xz[:, inner:]

    def one_direction(x_dir, z_dir, sfx, a_name, d_name):
        w = p[f"conv1d{sfx}.weight"]  # (E, 1, K)
        u = F.silu(F.conv1d(F.pad(x_dir, (3, 0)), w, p[f"conv1d{sfx}.bias"], groups=inner))
        x_dbl = torch.einsum("ce,bel->bcl", p[f"x_proj{sfx}.weight"], u)
        dt, B, C = x_dbl[:, :rank], x_dbl[:, rank:rank + 16], x_dbl[:, rank + 16:]
        delta = torch.einsum("er,brl->bel", p[f"dt_proj{sfx}.weight"], dt)
        A = -torch.exp(p[a_name])
        return selective_scan_sequential(u, delta, A, B, C, p[d_name], z_dir, p[f"dt_proj{sfx}.bias"])

    y_f = one_direction(x, z, "", "A_log", "D")
    y_b = one_direction(x.flip(-1), z.flip(-1), "_b", "A_b_log", "D_b").flip(-1)
    return ((y_f + y_b) / 2).transpose(1, 2) @ p["out_proj.weight"].t()


def test_torch_backend_matches_sequential_float64_reference():
    torch.manual_seed(1)
    model = create_model("vim_test", img_size=64, num_classes=7, backend="torch").eval()
    # Non-default values so every parameter matters (the backward dt bias is zero at init).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("dt_proj_b.bias", "D_b", ".D", "conv1d_b.bias", "norm.weight", "norm_f.weight")):
                param.add_(0.1 * torch.randn_like(param))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(images).double()
        # Model-level float64 reference, block by block.
        x = model.patch_embed(images.double().float()).double()
        mid = model.cls_position
        x = torch.cat([x[:, :mid], model.cls_token.double().expand(2, -1, -1), x[:, mid:]], 1)
        x = x + model.pos_embed.double()

        def rms(v, w):
            return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w.double()

        residual, hidden = None, x
        for block in model.layers:
            residual = hidden if residual is None else residual + hidden
            hidden = _sequential_mixer_reference(block.mixer, rms(residual, block.norm.weight))
        feats = rms(residual + hidden, model.norm_f.weight)[:, mid]
        expected = feats @ model.head.weight.double().t() + model.head.bias.double()
    err = (logits - expected).norm() / expected.norm()
    assert err < 1e-5, f"relative error {err:.2e}"


@pytest.mark.parametrize("size", [(64, 64), (70, 67)])  # 70 x 67: the convolution drops the partial patches
def test_patch_embedding_gemm_is_the_official_convolution(size):
    """PatchEmbed's GEMM over gathered patches (as_gemm; automatic on big inputs) equals the stride-16 nn.Conv2d:
    outputs, the weight's and the image's gradients in fp32; under autocast, the activation dtype it is given."""
    pe = create_model("vim_test", img_size=64, backend="torch").patch_embed
    torch.manual_seed(0)
    images = torch.randn(2, 3, *size, requires_grad=True)
    got = {}
    for as_gemm in (True, False):
        pe.as_gemm, pe.proj.weight.grad, images.grad = as_gemm, None, None
        out = pe(images)
        out.square().sum().backward()
        got[as_gemm] = out.detach(), pe.proj.weight.grad, images.grad
    assert got[True][0].shape == (2, (size[0] // 16) * (size[1] // 16), pe.proj.out_channels)
    for a, b in zip(got[True], got[False]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # fp32 sums in another order
    pe.as_gemm = True
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert pe(images, torch.bfloat16).dtype == torch.bfloat16


def test_patch_embedding_picks_the_gemm_for_big_inference_inputs():
    pe = create_model("vim_test", img_size=64, backend="torch").patch_embed
    big, small = torch.empty(256, 3, 64, 64, device="meta"), torch.empty(1, 3, 64, 64, device="meta")
    assert pe.as_gemm is None and big.shape[0] * 16 >= pe.GEMM_FROM_ROWS > small.shape[0] * 16
    assert pe.uses_gemm(big) and not pe.uses_gemm(small)
    pe.as_gemm = True
    assert pe.uses_gemm(small)
    pe.as_gemm = False
    assert not pe.uses_gemm(big)


def test_middle_class_token_position_and_length():
    model = create_model("vim_test", img_size=96)
    assert model.num_tokens == 37 and model.cls_position == 18


def test_unknown_model_is_a_clear_error():
    with pytest.raises(VimbenchError, match="unknown model 'vim_xl'.*vim_t"):
        get_spec("vim_xl")


def test_deit_attention_choice_is_per_module():
    from timm.models.vision_transformer import Attention

    eager = create_model("deit_test", img_size=64, attn="eager")
    fused = create_model("deit_test", img_size=64, attn="sdpa")
    assert all(not m.fused_attn for m in eager.modules() if isinstance(m, Attention))
    assert all(m.fused_attn for m in fused.modules() if isinstance(m, Attention))
    with torch.no_grad():
        fused.load_state_dict(eager.state_dict())
        images = torch.randn(2, 3, 64, 64)
        torch.testing.assert_close(eager.eval()(images), fused.eval()(images), rtol=1e-4, atol=1e-5)


def test_public_api_is_lazy_and_complete():
    assert vimbench.__version__
    assert {s.alias for s in vimbench.list_models()} >= {"vim_t", "vim_s", "vim_b", "deit_t", "deit_s", "deit_b"}
    assert callable(vimbench.create_model) and callable(vimbench.load_results)


@pytest.mark.parametrize("name,width", [("vim_t", 48), ("vim_s", 64), ("vim_b", 80)])
def test_x_dbl_layout_aligns_b_and_c_rows(name, width):
    from vimbench.layout import XDblLayout

    spec = get_spec(name)
    lay = XDblLayout(dt_rank=-(-spec.embed_dim // 16), d_state=16)
    assert lay.width == width and lay.width % 16 == 0
    assert (lay.B.start, lay.C.start) == (0, 16)
    weight = torch.arange(float(lay.dt_rank + 32)).unsqueeze(1).repeat(1, 3)  # row i holds the value i
    rows = lay.reorder(weight)[:, 0].tolist()
    r = lay.dt_rank
    expected = list(range(r, r + 32)) + list(range(r)) + [0.0] * (width - r - 32)
    assert rows == expected


def test_mixer_weights_are_reused_until_a_parameter_changes():
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=32, num_classes=0).eval()
    mixer = model.layers[0].mixer
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        first = mixer.weights(torch.float32)
        assert mixer.weights(torch.float32) is first, "inference reuses the stacked weights"
        before = model(images)
        mixer.x_proj_b.weight.mul_(1.5)  # in place: same storage, new version
        assert mixer.weights(torch.float32) is not first
        second = mixer.weights(torch.float32)
        mixer.D_b = torch.nn.Parameter(mixer.D_b + 0.25)  # a new Parameter object
        assert mixer.weights(torch.float32) is not second
        torch.testing.assert_close(mixer.weights(torch.float32).D[1], mixer.D_b.float())
        third = mixer.weights(torch.float32)
        replaced = torch.nn.Linear(mixer.in_proj.in_features, mixer.in_proj.out_features, bias=False)
        mixer.in_proj = replaced  # a new submodule
        assert mixer.weights(torch.float32) is not third
        torch.testing.assert_close(mixer.weights(torch.float32).in_proj, replaced.weight)
        after = model(images)
        fresh = create_model("vim_test", img_size=32, num_classes=0).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(after, fresh(images), rtol=0, atol=0)
    assert not torch.allclose(before, after)
    assert "_weights_cache" not in "".join(model.state_dict())


def test_gradients_reach_every_mixer_parameter():
    torch.manual_seed(0)
    model = create_model("vim_test", img_size=32, num_classes=0)
    model(torch.randn(1, 3, 32, 32)).square().sum().backward()
    mixer = model.layers[0].mixer
    for name, param in mixer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_mixer_sums_halves_in_the_gemm_like_the_combined_scan(backend, monkeypatch):
    """The bf16/fp16 path (gated halves summed by out_proj with its weight repeated along K) and the fp32 path
    (the scan combines) compute the same function; checked in fp32 by switching the choice."""
    if backend == "triton":
        pytest.importorskip("triton")
    import vimbench.models.vim as vim

    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    outputs = {}
    for halves in (False, True):
        monkeypatch.setattr(vim, "sums_halves_in_gemm", lambda dtype, h=halves: h)
        torch.manual_seed(1)
        model = create_model("vim_test", img_size=32, num_classes=0, backend=backend).eval()
        assert model.layers[0].mixer.weights(torch.float32).out_proj.shape == (32, (2 if halves else 1) * 64)
        with torch.no_grad():
            outputs[halves] = model(images)
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-5, atol=1e-5)


def test_vim_runs_under_cpu_autocast():
    """CPU autocast (bf16) must reach the mixer: its weights and the normalized activations then share a dtype
    (torch.is_autocast_enabled() without a device type only sees CUDA autocast)."""
    model = vimbench.create_model("vim_test", img_size=32, num_classes=10, backend="torch").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    with torch.no_grad():
        ref = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out.float()).all()
    assert torch.allclose(out.float(), ref, rtol=0.1, atol=0.1)
