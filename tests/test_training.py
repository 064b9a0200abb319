"""Training through the Vim model: backend triton's gradients equal backend torch's, AdamW lowers the loss, and
torch.compile traces a training step of the triton backend as one graph."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vimbench
from vimbench.models.vim import VisionMamba


def _pair(img_size: int, device: str, train_boundary: str = "fused"):
    pytest.importorskip("triton")
    torch.manual_seed(0)
    ref = vimbench.create_model("vim_test", img_size=img_size, num_classes=5, backend="torch",
                                train_boundary="per-op").to(device)
    tri = vimbench.create_model("vim_test", img_size=img_size, num_classes=5, backend="triton",
                                train_boundary=train_boundary).to(device)
    tri.load_state_dict(ref.state_dict())
    return ref.train(), tri.train()


def _tiny(backend: str, device: str) -> VisionMamba:
    """Smaller than vim_test (E = 16, 2 tokens): cheap enough for several interpreted steps."""
    torch.manual_seed(0)
    return VisionMamba(img_size=16, embed_dim=8, depth=1, num_classes=3, backend=backend).to(device).train()


@pytest.mark.parametrize("train_boundary", ["fused", "per-op"])
def test_triton_backend_gradients_match_torch_backend(device, train_boundary):
    """Every parameter gets the torch backend's gradient (plain autograd, op by op): no silently detached op
    (issue 10's defect: all block parameters had grad None), through the fused training op and op by op."""
    ref, tri = _pair(32, device, train_boundary)
    batch = 2 if train_boundary == "fused" else 1  # the default boundary at batch 2; op by op at 1 (CPU time)
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.tensor([1, 3][:batch], device=device)
    F.cross_entropy(tri(images), labels).backward()
    F.cross_entropy(ref(images), labels).backward()
    grads = dict(ref.named_parameters())
    for name, p in tri.named_parameters():
        assert p.grad is not None, f"{name} got no gradient on backend triton"
        want = grads[name].grad
        torch.testing.assert_close(p.grad, want, rtol=1e-3, atol=1e-4 * want.abs().max().item(), msg=name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_adamw_steps_lower_the_loss_on_a_fixed_batch(device, backend):
    if backend == "triton":
        pytest.importorskip("triton")
    model = _tiny(backend, device)
    images = torch.randn(4, 3, 16, 16, device=device, generator=None)
    labels = torch.tensor([0, 1, 2, 0], device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_eval_after_training_step_sees_updated_weights(device):
    """The mixer's inference weight cache is keyed on the parameters' versions: a no-grad forward after an
    optimizer step uses the new weights, not the ones cached before it."""
    pytest.importorskip("triton")
    model = _tiny("triton", device)
    images = torch.randn(2, 3, 16, 16, device=device)
    with torch.no_grad():
        before = model(images)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    F.cross_entropy(model(images), torch.tensor([0, 1], device=device)).backward()
    opt.step()
    with torch.no_grad():
        after = model(images)
        reference = _tiny("torch", device)
        reference.load_state_dict(model.state_dict())
        expected = reference(images)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-5)


def test_compiled_training_step_is_one_graph_with_eager_gradients(device):
    """torch.compile(fullgraph=True) traces forward and backward of backend triton through the custom ops' fake
    implementations (aot_eager: no code generation, the kernels run as in eager mode)."""
    pytest.importorskip("triton")
    model = _tiny("triton", device)
    images = torch.randn(2, 3, 16, 16, device=device)
    labels = torch.tensor([0, 2], device=device)
    F.cross_entropy(model(images), labels).backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    F.cross_entropy(compiled(images), labels).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[name], msg=name)


@pytest.mark.parametrize("stacked", [True, False])
def test_compiled_training_builds_every_mixers_weights_once(device, monkeypatch, stacked):
    """A torch.compile'd training forward of a two-layer Vim stacks the layers' parameters and builds the mixers'
    weights once (one exp for A = -exp(A_log) in the traced graph), as the eager step's StackedMixerWeights does;
    per mixer (TRACED_STACKED_WEIGHTS off) once per layer. The gradients equal eager's either way."""
    pytest.importorskip("triton")
    from vimbench.models import vim
    monkeypatch.setattr(vim, "TRACED_STACKED_WEIGHTS", stacked)
    torch.manual_seed(0)
    model = VisionMamba(img_size=16, embed_dim=8, depth=2, num_classes=3, backend="triton").to(device).train()
    images = torch.randn(2, 3, 16, 16, device=device)
    labels = torch.tensor([0, 2], device=device)
    F.cross_entropy(model(images), labels).backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    torch._dynamo.reset()
    F.cross_entropy(torch.compile(model, backend=backend, fullgraph=True)(images), labels).backward()
    exps = [node for gm in graphs for node in gm.graph.nodes if node.target in (torch.exp, torch.Tensor.exp)]
    assert len(graphs) == 1 and len(exps) == (1 if stacked else 2)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[name], msg=name)


def test_inference_traces_without_graph_breaks(device):
    """No-grad inference (the halves-over-u path, a declared mutation) traces as one graph."""
    pytest.importorskip("triton")
    model = _tiny("triton", device).eval()
    images = torch.randn(2, 3, 16, 16, device=device)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(images)
        expected = model(images)
        got = torch.compile(model, backend="aot_eager", fullgraph=True)(images)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch.testing.assert_close(got, expected)


def _readme_saved_row() -> str:
    readme = Path(__file__).resolve().parents[1] / "kernels" / "README.md"
    rows = [line for line in readme.read_text().splitlines() if line.startswith("| total per layer |")]
    assert len(rows) == 1, "kernels/README.md lost its '| total per layer |' row"
    return rows[0]


def test_saved_activations_per_layer_are_kernels_readme_table():
    """What one Vim-Ti layer keeps for the backward pass at 1248 px, batch 8, bf16 (meta device: sizes only),
    counted with saved-tensor hooks: the fused boundary keeps no tensor of the size of h, xz, u, delta or the
    halves, and each
    boundary's total is the one kernels/README.md's table states."""
    pytest.importorskip("triton")
    from vimbench.bench.live_memory import vim_saved_per_layer

    batch, length, d_model, inner = 8, 6085, 192, 384
    bf16, f32 = torch.bfloat16, torch.float32
    boundaries = ("per-op", "fused", "fused-combined")
    saved = {boundary: vim_saved_per_layer(1248, batch, boundary) for boundary in boundaries}
    activations = {b: Counter((s.shape, s.dtype) for s in saved[b] if s.nbytes >= 2 ** 20) for b in boundaries}
    from kernels.runtime import cdiv
    from kernels.selective_scan.op import CHECKPOINT_CHUNK

    chunks = cdiv(length, CHECKPOINT_CHUNK)  # 48 at 128 tokens between checkpoints
    common = Counter([((2, batch, chunks, 16, inner), f32),   # scan state checkpoints
                      ((batch, length, d_model), f32),        # residual r (add + RMSNorm; h is recomputed from it)
                      ((2, batch * length, 48), bf16)])       # x_dbl [B | C | dt | pad]
    # out_proj's weight gradient needs the scan's combined output y only, whichever form the forward used
    assert activations["fused"] == activations["fused-combined"] == common + Counter([((batch, length, inner), bf16)])
    sizes = {b: [s.nbytes for s in saved[b]] for b in boundaries}
    recomputed = 2 * batch * length * inner * 2  # bytes of xz, u, delta or the halves
    assert sizes["fused"].count(recomputed) == 0
    assert sizes["per-op"].count(recomputed) == 4  # xz, u, delta, the halves
    totals = [f"{sum(sizes[b]) / 1e6:.1f} MB" for b in boundaries]
    assert _readme_saved_row().split("|")[2:5] == [f" {t} " for t in totals]


@pytest.mark.gpu
@pytest.mark.parametrize("train_boundary", ["fused", "fused-combined", "per-op"])
def test_training_step_vim_t_bf16_gpu(train_boundary):
    """Vim-Ti at 224 px, batch 8, bf16 autocast: backend triton's gradients are about as accurate as backend
    torch's in bf16, both measured against backend torch in fp32, through each training boundary."""
    torch.manual_seed(0)
    models = {}
    for backend in ("torch", "triton"):
        models[backend] = vimbench.create_model("vim_t", img_size=224, backend=backend,
                                                train_boundary=train_boundary).cuda().train()
    models["triton"].load_state_dict(models["torch"].state_dict())
    images = torch.randn(8, 3, 224, 224, device="cuda")
    labels = torch.randint(0, 1000, (8,), device="cuda")

    def grads(model, autocast):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            F.cross_entropy(model(images), labels).backward()
        return {n: p.grad.float().clone() for n, p in model.named_parameters()}

    gold = grads(models["torch"], autocast=False)
    plain = grads(models["torch"], autocast=True)
    ours = grads(models["triton"], autocast=True)
    for name, want in gold.items():
        assert torch.isfinite(ours[name]).all(), name
        scale = want.abs().max().item() + 1e-12
        err = (ours[name] - want).abs().max().item() / scale
        plain_err = (plain[name] - want).abs().max().item() / scale
        assert err <= 2 * plain_err + 2e-2, f"{name}: triton {err:.3g} vs torch bf16 {plain_err:.3g}"


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_training_forward_builds_all_mixer_weights_in_one_node(backend):
    """A training forward stacks every layer's mixer weights in one StackedMixerWeights node (not one per layer),
    and every mixer parameter still gets its gradient."""
    if backend == "triton":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    model = vimbench.create_model("vim_test", img_size=16, backend=backend).train()
    assert len(model.layers) > 1
    out = model(torch.randn(1, 3, 16, 16))
    nodes, seen, todo = [], set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(type(node).__name__)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    assert nodes.count("StackedMixerWeightsBackward") == 1
    out.float().sum().backward()
    missing = [n for n, p in model.named_parameters() if ".mixer." in n and p.grad is None]
    assert not missing


@pytest.mark.parametrize("n_mixers", [1, 3])
@pytest.mark.parametrize("dtype, sum_halves", [(torch.float32, False), (torch.bfloat16, True),
                                               (torch.bfloat16, False)])
def test_stacked_mixer_weights_node_matches_autograd_through_the_stacking(n_mixers, dtype, sum_halves):
    """The mixers' weights under autograd are one node (StackedMixerWeights) for one mixer or several (the model
    builds all its layers' at once): the same values, and the same parameter gradients as autograd through the
    stacking ops one mixer at a time, for every parameter of every mixer."""
    from vimbench.models.ops import get_ops
    from vimbench.models.vim import BiMambaMixer, _stack_mixer_weights, stacked_mixer_weights

    torch.manual_seed(0)
    mixers = [BiMambaMixer(16, 2, get_ops("torch")) for _ in range(n_mixers)]
    params = [p for mixer in mixers for p in mixer._mixer_params()]
    g = torch.Generator().manual_seed(1)
    node = [t for w in stacked_mixer_weights(mixers, dtype, sum_halves) for t in w.__dict__.values()]
    plain = [t for mixer in mixers for t in _stack_mixer_weights(mixer.x_dbl_layout, dtype, sum_halves,
                                                                 *mixer._mixer_params()).__dict__.values()]
    grads_out = [torch.randn(t.shape, generator=g).to(t.dtype) for t in plain]
    assert {type(t.grad_fn).__name__ for t in node[1:]} == {"StackedMixerWeightsBackward"}
    assert len({id(t.grad_fn) for t in node[1:]}) == 1, "one autograd node for all mixers"
    got = torch.autograd.grad(node, params, grads_out, retain_graph=True)
    want = torch.autograd.grad(plain, params, grads_out)
    names = "in_proj conv_w conv_b x_proj_t dt_proj_t A D dt_bias out_proj".split() * n_mixers
    for (a, b), name in zip(zip(node, plain), names):
        assert a.shape == b.shape and a.stride() == b.stride(), name
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"parameter {i}")
    if n_mixers > 1:  # a mixer whose weights reach no output: its parameters get no gradient, not zeros
        used = [k for k in range(len(node)) if k // 9 != 1]
        got = torch.autograd.grad([node[k] for k in used], params, [grads_out[k] for k in used], allow_unused=True)
        assert [g is None for g in got] == [k // 16 == 1 for k in range(len(params))]
