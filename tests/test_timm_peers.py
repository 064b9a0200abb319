"""Any timm model as a peer (`--models timm:<name>`): listed, planned per resolution (dropped with timm's reason
where it cannot run), measured with the same protocol into the same rows, and reported. CPU, tiny timm models."""
from __future__ import annotations

import sys
import textwrap

import pytest
from typer.testing import CliRunner

from vimbench.cli import app
from vimbench.results import load_results


def invoke(args):
    return CliRunner().invoke(app, args)


def test_models_lists_timm_candidates():
    result = invoke(["models", "--timm", "test_vit*"])
    assert result.exit_code == 0, result.output
    assert "timm:test_vit" in result.output and "timm:test_resnet" not in result.output
    bad = invoke(["models", "--timm", "no_such_model_*"])
    assert bad.exit_code == 2 and "no timm model matches" in bad.output


def test_dry_run_drops_resolutions_where_the_peer_cannot_run():
    result = invoke(["sweep", "--models", "timm:test_vit,timm:test_resnet", "--res", "17,32", "--batch", "1",
                     "--device", "cpu", "--attn", "sdpa", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "timm:test_vit timm 32px" in result.output and "timm:test_vit timm 17px" not in result.output
    assert "timm:test_resnet timm 17px" in result.output      # a convnet runs at any size it can pool
    assert "timm:test_vit at 17 px" in result.output and "divisible by patch size" in result.output


def test_unknown_timm_model_is_one_clear_line():
    result = invoke(["sweep", "--models", "timm:no_such_net", "--res", "32", "--batch", "1", "--device", "cpu",
                     "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "timm has no model 'no_such_net'" in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_peer_is_measured_and_reported_like_the_others(tmp_path):
    out = tmp_path / "peers.jsonl"
    result = invoke(["sweep", "--models", "deit_test,timm:test_vit,timm:test_resnet", "--res", "32,64",
                     "--batch", "1", "--dtype", "fp32", "--attn", "sdpa", "--device", "cpu", "--warmup", "1",
                     "--iters", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    df = load_results(out)
    peers = df[df.model.str.startswith("timm:")]
    assert len(peers) == 4 and set(peers.status) == {"ok"}
    assert (peers.params > 0).all() and peers.tokens.isna().all() and (peers.fps > 0).all()
    assert set(peers.implementation) == {"timm"} and peers.attn.isna().all()
    rep = tmp_path / "rep"
    result = invoke(["report", str(out), "-o", str(rep), "--full"])
    assert result.exit_code == 0, result.output
    svg = (rep / "figures" / "throughput_memory_vs_res-fp32-b1.svg").read_text()
    assert "test_vit, timm" in svg and "test_resnet, timm" in svg
    results = (rep / "tables" / "results.csv").read_text()
    assert results.count("timm:test_vit") == 2


def test_timm_import_registers_a_plugin_model(tmp_path, monkeypatch):
    (tmp_path / "vimbench_test_plugin.py").write_text(textwrap.dedent('''
        from timm.models import register_model
        from timm.models.vision_transformer import VisionTransformer

        @register_model
        def plugin_tiny_vit(pretrained=False, **kwargs):
            for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
                kwargs.pop(key, None)
            kwargs.setdefault("img_size", 32)
            return VisionTransformer(patch_size=16, embed_dim=16, depth=1, num_heads=2, **kwargs)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vimbench_test_plugin", raising=False)
    args = ["sweep", "--models", "timm:plugin_tiny_vit", "--res", "32", "--batch", "1", "--device", "cpu",
            "--attn", "sdpa", "--dry-run"]
    if "vimbench_test_plugin" not in sys.modules:
        before = invoke(args)
        assert before.exit_code == 2 and "--timm-import" in before.output
    result = invoke([*args, "--timm-import", "vimbench_test_plugin"])
    assert result.exit_code == 0, result.output
    assert "timm:plugin_tiny_vit timm 32px" in result.output
    missing = invoke([*args, "--timm-import", "no_such_plugin_module"])
    assert missing.exit_code == 2 and "cannot import" in missing.output


@pytest.mark.parametrize("name", ["timm:", "timm:   "])
def test_empty_timm_name(name):
    result = invoke(["sweep", "--models", name, "--res", "32", "--batch", "1", "--device", "cpu", "--dry-run"])
    assert result.exit_code == 2 and "needs a model name" in result.output
