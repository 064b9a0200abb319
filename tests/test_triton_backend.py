"""The Vim model on the triton backend agrees with the torch (reference) backend, same weights."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import vimbench


def _pair(name: str, img_size: int, device: str):
    pytest.importorskip("triton")
    torch.manual_seed(0)
    ref = vimbench.create_model(name, img_size=img_size, backend="torch").to(device).eval()
    tri = vimbench.create_model(name, img_size=img_size, backend="triton").to(device).eval()
    tri.load_state_dict(ref.state_dict())
    return ref, tri


def test_triton_backend_matches_torch_fp32(device):
    ref, tri = _pair("vim_test", 64, device)
    images = torch.randn(2, 3, 64, 64, device=device)
    with torch.no_grad():
        feats_ref, feats_tri = ref.forward_features(images), tri.forward_features(images)
        out_ref, out_tri = ref.head(feats_ref), tri.head(feats_tri)  # what forward returns, without a second pass
    assert tri.backend == "triton"
    torch.testing.assert_close(feats_tri, feats_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out_tri, out_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_triton_backend_vim_t_bf16_autocast():
    ref, tri = _pair("vim_t", 224, "cuda")
    images = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        gold = ref.forward_features(images)  # fp32 torch backend: the accuracy reference
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out_ref = ref.forward_features(images).float()
            out_tri = tri.forward_features(images).float()
    assert torch.isfinite(out_tri).all()
    err_tri = (out_tri - gold).abs().max().item()
    err_ref = (out_ref - gold).abs().max().item()
    # bf16 end to end: the triton backend must be about as accurate as the torch backend in bf16.
    assert err_tri <= 2 * err_ref + 1e-2, f"triton {err_tri:.3g} vs torch {err_ref:.3g} (max abs error)"
    torch.testing.assert_close(out_tri, out_ref, rtol=0.1, atol=0.25)


def test_default_fuses_dt_proj_only_in_host_bound_calls(device, monkeypatch):
    """Memory mode default (fuse_dt_proj None): the scan gets dt_proj in eager calls of at most FUSE_DT_MAX_ROWS
    token rows (for 16-bit activations; the fp32 model here runs under FUSE_DT_FP32 False for that part), the delta
    GEMM runs above that and while traced, unless the fused scan runs in blocks of tokens there
    (FUSE_DT_IN_TOKEN_BLOCKS); eager fp32 calls above the limit are fused with FUSE_DT_FP32 (the default), 16-bit
    ones are not; the logits agree either way (and with the torch backend)."""
    import vimbench.models.vim as vim
    from kernels.selective_scan import chunked, fwd

    assert vim.FUSE_DT_FP32, "the shipped default (measured faster in fp32 at 1248 px, batch 64)"
    monkeypatch.setattr(vim, "FUSE_DT_FP32", False)
    ref, tri = _pair("vim_test", 32, device)
    calls = []
    scan = tri.ops.bimamba_scan

    def spy(u, delta, *args, **kwargs):
        calls.append(kwargs.get("dt_proj") is not None)
        return scan(u, delta, *args, **kwargs)

    for layer in tri.layers:
        layer.mixer.ops = dataclasses.replace(tri.ops, bimamba_scan=spy)
    images = torch.randn(2, 3, 32, 32, device=device)
    rows = 2 * tri.num_tokens
    with torch.no_grad():
        gold = ref(images)
        monkeypatch.setattr(vim, "FUSE_DT_MAX_ROWS", rows)
        small = tri(images)
        assert calls and all(calls), "at the limit: fused"
        calls.clear()
        monkeypatch.setattr(vim, "FUSE_DT_MAX_ROWS", rows - 1)
        large = tri(images)
        assert calls and not any(calls), "above it: the delta GEMM"
        calls.clear()
        monkeypatch.setattr(vim, "FUSE_DT_FP32", True)
        large_fp32 = tri(images)
        assert calls and all(calls), "above it in fp32 with FUSE_DT_FP32: fused"
        above = torch.zeros(1, rows, tri.embed_dim, device=device)
        assert tri.layers[0].mixer.fuses_dt_proj(above), "fp32 activations"
        assert not tri.layers[0].mixer.fuses_dt_proj(above.bfloat16()), "16-bit activations keep the row limit"
        monkeypatch.setattr(vim, "FUSE_DT_FP32", False)
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(large_fp32, large, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(small, gold, rtol=1e-4, atol=1e-4)
    h = torch.zeros(1, 1, tri.embed_dim, device=device)
    mixer = tri.layers[0].mixer
    with torch.no_grad():
        assert mixer.fuses_dt_proj(h) and not ref.layers[0].mixer.fuses_dt_proj(h), "the torch backend's scan does not"
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        for name in ("TOKEN_BLOCK", "INTERPRETED_TOKEN_BLOCK"):  # the GPU's and the interpreter's switch
            monkeypatch.setattr(fwd, name, 0)
        assert not mixer.fuses_dt_proj(h), "traced, no token blocks: the delta GEMM"
        for name in ("TOKEN_BLOCK", "INTERPRETED_TOKEN_BLOCK"):
            monkeypatch.setattr(fwd, name, 4)
        assert mixer.fuses_dt_proj(h), "traced, token blocks: fused"
        longer = torch.zeros(1, chunked.TOKEN_BLOCKS_MAX_CAPTURED_LENGTH + 1, tri.embed_dim, device=device)
        assert not mixer.fuses_dt_proj(longer), "traced, a sequence captured in chunks: the delta GEMM"
        monkeypatch.setattr(vim, "FUSE_DT_IN_TOKEN_BLOCKS", False)
        assert not mixer.fuses_dt_proj(h), "switched off: the delta GEMM"
    with torch.enable_grad():
        assert not mixer.fuses_dt_proj(h), "training keeps the dt_proj GEMM"


def test_delta_softplus_before_the_scan_gives_the_same_logits(device, monkeypatch):
    """Where the scan does not take dt_proj (here: FUSE_DT_MAX_ROWS 0), 16-bit inference makes delta already
    softplus'd (ops.dt_softplus, DT_SOFTPLUS_BEFORE_SCAN) and calls the scan without bias or softplus; checked in
    fp32 through DT_SOFTPLUS_FP32 (the fp32 path's switch, off by default): the logits match the delta GEMM path and
    the torch backend. Training and (by default) fp32 keep the GEMM; the torch backend has no such op."""
    import vimbench.models.vim as vim

    ref, tri = _pair("vim_test", 32, device)
    seen = []
    scan, dt_softplus = tri.ops.bimamba_scan, tri.ops.dt_softplus

    def scan_spy(u, delta, A, B, C, D, z, delta_bias, **kwargs):
        seen.append(("scan", delta.dtype, delta_bias is None, kwargs.get("delta_softplus", True)))
        return scan(u, delta, A, B, C, D, z, delta_bias, **kwargs)

    def dt_spy(dt, weight, bias, out_dtype):
        seen.append(("dt_softplus", out_dtype))
        return dt_softplus(dt, weight, bias, out_dtype)

    for layer in tri.layers:
        layer.mixer.ops = dataclasses.replace(tri.ops, bimamba_scan=scan_spy, dt_softplus=dt_spy)
    monkeypatch.setattr(vim, "FUSE_DT_MAX_ROWS", 0)
    monkeypatch.setattr(vim, "FUSE_DT_FP32", False)  # (else the fp32 model's scan takes dt_proj at any size)
    images = torch.randn(2, 3, 32, 32, device=device)
    with torch.no_grad():
        gold = ref(images)
        with monkeypatch.context() as patch:  # fp32 through the op (its fp32 tile computes fp32 exactly)
            patch.setattr(vim, "DT_SOFTPLUS_FP32", True)
            before = tri(images)
        assert seen[:2] == [("dt_softplus", torch.float32), ("scan", torch.float32, True, False)]
        seen.clear()
        monkeypatch.setattr(vim, "DT_SOFTPLUS_BEFORE_SCAN", False)
        in_scan = tri(images)
        assert seen and all(call[0] == "scan" and call[2:] == (False, True) for call in seen), "bias and softplus in it"
    torch.testing.assert_close(before, in_scan, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(before, gold, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(vim, "DT_SOFTPLUS_BEFORE_SCAN", True)
    mixer = tri.layers[0].mixer
    with torch.no_grad():
        assert mixer.softplus_before_scan(torch.bfloat16)
        assert not ref.layers[0].mixer.softplus_before_scan(torch.bfloat16), "the torch backend has no dt_softplus"
        assert not mixer.softplus_before_scan(torch.float32), "fp32 keeps the delta GEMM (measured faster there)"
        monkeypatch.setattr(vim, "DT_SOFTPLUS_FP32", True)
        assert mixer.softplus_before_scan(torch.float32)
        monkeypatch.setattr(vim, "DT_SOFTPLUS_FP32", False)
    with torch.enable_grad():
        assert not mixer.softplus_before_scan(torch.bfloat16), "training keeps the delta GEMM and the scan's softplus"
    assert vim.delta_dtype(torch.bfloat16) == vim.delta_dtype(torch.float16) == torch.float16
    assert vim.delta_dtype(torch.float32) == torch.float32


@pytest.mark.parametrize("res,batch,takes", [(224, 1, True), (224, 64, True), (512, 8, False), (1248, 1, False),
                                              (1248, 2, False), (1248, 64, True)])
def test_eager_scans_take_dt_proj_only_in_one_pass(monkeypatch, res, batch, takes):
    """On a GPU (132 SMs, as an H100's; no GPU needed to decide), an eager Vim-Ti scan applies dt_proj itself only
    where it runs in one pass: where the automatic choice runs the chunk-parallel passes (long sequences on a
    small grid), which compute delta first, the mixer keeps its delta GEMM."""
    from kernels.selective_scan import fwd
    from vimbench.geometry import D_STATE, d_inner, dt_rank, num_tokens

    monkeypatch.setattr(fwd, "sm_count", lambda device: 132)
    length = num_tokens(res)
    assert fwd.eager_scan_takes_dt_proj(batch, d_inner(192), length, dt_rank(192), D_STATE,
                                        torch.device("cuda")) is takes
    assert fwd.eager_scan_takes_dt_proj(batch, d_inner(192), length, dt_rank(192), D_STATE, torch.device("cpu"))


def test_the_mixer_asks_the_backend_whether_the_scan_takes_dt_proj(device):
    """fuses_dt_proj in an eager call within FUSE_DT_MAX_ROWS follows ops.scan_takes_dt_proj, asked with the
    call's batch, channels, length, dt rank, state size and device."""
    _, tri = _pair("vim_test", 32, device)
    mixer = tri.layers[0].mixer
    asked = []
    h = torch.zeros(2, 5, tri.embed_dim, device=device)
    for answer in (True, False):
        mixer.ops = dataclasses.replace(mixer.ops, scan_takes_dt_proj=lambda *a, answer=answer: asked.append(a)
                                        or answer)
        with torch.no_grad():
            assert mixer.fuses_dt_proj(h) is answer
    assert asked[-1] == (2, mixer.d_inner, 5, mixer.dt_rank, 16, h.device)


@pytest.mark.gpu
@pytest.mark.parametrize("batch,fused", [(1, True), (16, False)])
def test_captured_forward_fuses_dt_proj_in_token_blocks(batch, fused):
    """Vim-Ti at 224 px, bf16: the eager forward fuses dt_proj into the scan (host-bound); the forward captured
    into a CUDA graph fuses it where the scan runs in blocks of tokens (batch 1), and keeps the delta GEMM where
    it walks token by token (batch 16); both give the logits of the delta path within bf16 rounding."""
    _, tri = _pair("vim_t", 224, "cuda")
    seen = []
    mixer = tri.layers[0].mixer
    decide = mixer.fuses_dt_proj
    mixer.fuses_dt_proj = lambda h: seen.append(decide(h)) or seen[-1]
    images = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = tri(images).float()
        assert seen == [True], "eager: fused"
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            tri(images)
        torch.cuda.synchronize()
        seen.clear()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = tri(images)
        assert seen == [fused], "captured: fused in token blocks only"
        graph.replay()
        torch.cuda.synchronize()
        from vimbench.models.vim import set_dt_proj_fusion
        set_dt_proj_fusion(tri, False)
        gemm = tri(images).float()
    torch.testing.assert_close(captured.float(), gemm, rtol=0.05, atol=0.05)
    torch.testing.assert_close(eager, gemm, rtol=0.05, atol=0.05)


def test_inference_fuses_dt_proj_and_splits_in_proj_and_matches_torch(device):
    """In the memory mode (off by default) the triton mixer hands the scan the low-rank dt and dt_proj at
    inference (no delta tensor, no dt_proj GEMM) and computes in_proj as two GEMMs; the logits equal the torch
    backend's, and the previous path's (both switched off)."""
    from vimbench.models.vim import set_dt_proj_fusion

    ref, tri = _pair("vim_test", 32, device)
    assert tri.layers[0].mixer.fuse_dt_proj is None and not tri.layers[0].mixer.split_in_proj, "automatic by default"
    set_dt_proj_fusion(tri, True, split_in_proj=True)  # the memory mode
    calls = []
    scan = tri.ops.bimamba_scan

    def spy(u, delta, *args, **kwargs):
        calls.append((tuple(delta.shape), kwargs.get("dt_proj")))
        return scan(u, delta, *args, **kwargs)

    for layer in tri.layers:
        layer.mixer.ops = dataclasses.replace(tri.ops, bimamba_scan=spy)
    images = torch.randn(2, 3, 32, 32, device=device)
    with torch.no_grad():
        gold = ref(images)
        fused = tri(images)
        rank, length = tri.layers[0].mixer.dt_rank, tri.num_tokens
        assert calls and all(shape == (2, 2, rank, length) and w is not None and w.shape == (2, 64, rank)
                             for shape, w in calls), "every mixer passes the low-rank dt and dt_proj"
        calls.clear()
        set_dt_proj_fusion(tri, False, split_in_proj=False)
        before = tri(images)
        assert calls and all(shape == (2, 2, 64, length) and w is None for shape, w in calls)
    torch.testing.assert_close(fused, gold, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused, before, rtol=1e-4, atol=1e-4)
    set_dt_proj_fusion(tri, True, split_in_proj=True)
    with torch.enable_grad():
        assert not tri.layers[0].mixer.fuses_dt_proj(images) and not tri.layers[0].mixer.splits_in_proj(), \
            "training keeps the dt_proj GEMM and the single in_proj GEMM"


def test_conv_xproj_fusion_gives_the_unfused_logits(device, monkeypatch):
    """With FUSE_CONV_XPROJ on, inference makes u and x_dbl in one launch (ops.conv_xproj) where in_proj is not split
    (memory mode default), and the logits equal the unfused path's (and the torch backend's); the memory modes that
    split in_proj, training, and the switch off keep the conv op and the x_proj GEMM."""
    import vimbench.models.vim as vim
    from vimbench.models.vim import set_memory_mode

    ref, tri = _pair("vim_test", 32, device)
    monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 0)  # the per-op path (the front path fuses the conv by its own flag)
    fused_calls = []
    fused = tri.ops.conv_xproj

    def spy(*args, **kwargs):
        fused_calls.append(1)
        return fused(*args, **kwargs)

    for layer in tri.layers:
        layer.mixer.ops = dataclasses.replace(tri.ops, conv_xproj=spy)
    images = torch.randn(2, 3, 32, 32, device=device)
    with torch.no_grad():
        gold = ref(images)
        unfused = tri(images)
        assert not fused_calls, "off by default"
        monkeypatch.setattr(vim, "FUSE_CONV_XPROJ", True)
        for mode, fuses in (("default", True), ("lean", False), ("lean-gated", False)):  # not where in_proj splits
            set_memory_mode(tri, mode)
            out = tri(images)
            assert len(fused_calls) == (len(tri.layers) if fuses else 0), mode
            fused_calls.clear()
            torch.testing.assert_close(out, unfused, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(out, gold, rtol=1e-4, atol=1e-4)
    assert ref.layers[0].mixer.ops.conv_xproj is None, "the torch backend keeps the conv and the GEMM"
    x = torch.zeros(1, 3, tri.layers[0].mixer.d_inner, device=device).transpose(1, 2)  # channel-last, as in the mixer
    with torch.no_grad():
        assert tri.layers[0].mixer.fuses_conv_xproj(x)
        assert not tri.layers[0].mixer.fuses_conv_xproj(x.contiguous()), "token-contiguous x: the conv op"
    with torch.enable_grad():
        assert not tri.layers[0].mixer.fuses_conv_xproj(x), "training keeps the conv op and the GEMM"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_front_path_gives_the_per_op_logits(device, monkeypatch, dtype):
    """Small eager inference in bf16 runs the front path (`VisionMamba._forward_front`): per layer one
    ops.norm_in_proj (the previous out_proj, add + RMSNorm, in_proj), one ops.conv_xproj and the scan, and one
    add_rmsnorm at the end; the logits equal the per-op path's (FRONT_MAX_ROWS 0) and the torch backend's. The
    path handles both scan outputs: bf16's halves with the doubled out_proj weight, and fp32's combined output
    (fp32 activations take it only when FRONT_DTYPES lists fp32; by default they keep the per-op path), and both
    forms of the conv with x_proj: ops.conv_xproj (FRONT_CONV_XPROJ), or the conv op then ops.x_proj_rows."""
    import vimbench.models.vim as vim

    ref, tri = _pair("vim_test", 32, device)
    if dtype == torch.float32:
        with torch.no_grad():
            assert not tri.uses_front(torch.zeros(2, tri.num_tokens, tri.embed_dim, device=device), dtype)
        monkeypatch.setattr(vim, "FRONT_DTYPES", (torch.float32,))
    ref, tri = ref.to(dtype), tri.to(dtype)
    monkeypatch.setattr(vim, "FRONT_CONV_XPROJ", True)
    calls = {"norm_in_proj": 0, "conv_xproj": 0, "conv1d_silu_bidir": 0, "x_proj_rows": 0, "add_rmsnorm": 0}

    def spy(name):
        real = getattr(tri.ops, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return counted

    spied = dataclasses.replace(tri.ops, **{name: spy(name) for name in calls})
    tri.ops = spied
    for layer in tri.layers:
        layer.mixer.ops = spied
    images = torch.randn(2, 3, 32, 32, device=device, dtype=dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
    with torch.no_grad():
        gold = ref(images)
        front = tri(images)
        assert calls == {"norm_in_proj": len(tri.layers), "conv_xproj": len(tri.layers), "conv1d_silu_bidir": 0,
                         "x_proj_rows": 0, "add_rmsnorm": 1}, calls
        monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 0)
        per_op = tri(images)
        assert calls["norm_in_proj"] == len(tri.layers) and calls["add_rmsnorm"] == 1 + len(tri.layers) + 1
        torch.testing.assert_close(front, per_op, **tol)
        torch.testing.assert_close(front, gold, **tol)
        monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 10 ** 6)
        monkeypatch.setattr(vim, "FRONT_CONV_XPROJ", False)
        calls.update(conv_xproj=0, conv1d_silu_bidir=0, x_proj_rows=0)
        torch.testing.assert_close(tri(images), front, **tol)
        assert calls["conv_xproj"] == 0 and calls["conv1d_silu_bidir"] == calls["x_proj_rows"] == len(tri.layers)


def test_front_path_only_where_it_applies(device, monkeypatch):
    """uses_front: inference (not under autograd), eager, 16-bit activations, at most FRONT_MAX_ROWS token rows of at
    most FRONT_MAX_DIM features, a backend with the op, every mixer in the default layout (not split, not gated, no
    batch slicing at this batch)."""
    import vimbench.models.vim as vim
    from vimbench.models.vim import set_memory_mode

    ref, tri = _pair("vim_test", 32, device)
    hidden = torch.zeros(2, tri.num_tokens, tri.embed_dim, device=device)
    bf16 = torch.bfloat16
    with torch.no_grad():
        assert tri.uses_front(hidden, bf16) and tri.uses_front(hidden, torch.float16)
        assert not tri.uses_front(hidden, torch.float32), "fp32 activations keep the per-op path (FRONT_DTYPES)"
        assert not ref.uses_front(hidden, bf16), "the torch backend has no norm_in_proj"
        monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 2 * tri.num_tokens - 1)
        assert not tri.uses_front(hidden, bf16) and tri.uses_front(hidden[:1], bf16)
        monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 4096)
        monkeypatch.setattr(vim, "FRONT_MAX_DIM", tri.embed_dim - 1)
        assert not tri.uses_front(hidden, bf16), "wider models than FRONT_MAX_DIM keep the per-op path"
        monkeypatch.setattr(vim, "FRONT_MAX_DIM", tri.embed_dim)
        assert tri.uses_front(hidden, bf16)
        for mode in ("split", "lean", "lean-gated"):
            set_memory_mode(tri, mode)
            assert not tri.uses_front(hidden, bf16), mode
        set_memory_mode(tri, "default")
        tri.layers[-1].mixer.batch_slice = 1
        assert not tri.uses_front(hidden, bf16) and tri.uses_front(hidden[:1], bf16)
        tri.layers[-1].mixer.batch_slice = 0
        assert tri.uses_front(hidden, bf16)
    with torch.enable_grad():
        assert not tri.uses_front(hidden, bf16), "training keeps the per-op path"


@pytest.mark.gpu
def test_front_path_vim_t_bf16_gpu(monkeypatch):
    """Vim-Ti at 224 px, batch 1 and 8, bf16 autocast on the GPU: the front path's logits against the per-op path's
    (bf16 tl.dot in norm_in_proj and conv_xproj against cuBLAS)."""
    import vimbench.models.vim as vim

    ref, tri = _pair("vim_t", 224, "cuda")
    for batch in (1, 8):
        images = torch.randn(batch, 3, 224, 224, device="cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            assert tri.uses_front(torch.zeros(batch, tri.num_tokens, tri.embed_dim, device="cuda"), torch.bfloat16)
            front = tri(images).float()
            monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 0)
            per_op = tri(images).float()
            monkeypatch.setattr(vim, "FRONT_MAX_ROWS", 4096)
            gold = ref(images).float()
        err_front, err_per_op = (front - gold).abs().max().item(), (per_op - gold).abs().max().item()
        assert err_front <= 2 * err_per_op + 1e-2, f"front {err_front:.3g} vs per-op {err_per_op:.3g} (max abs error)"
