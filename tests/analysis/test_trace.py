"""Trace parsing: kernel-name rules, annotations (innermost wins), CPU self time, GPU kernel events."""
from __future__ import annotations

import pytest

from vimbench.analysis import trace as tr


@pytest.mark.parametrize("name, category", [
    ("_scan_kernel", "scan"),
    ("_conv1d_silu_bidir_kernel", "conv"),
    ("_add_rmsnorm_kernel", "norm"),
    ("void causal_conv1d_fwd_kernel<Causal_conv1d_fwd_kernel_traits<128, 4>>", "conv"),
    ("void selective_scan_fwd_kernel<Ktraits>(SSMParamsBase)", "scan"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "gemm"),
    ("nvjet_tst_128x64_64x8_1x2_h_bz_coopA_NTN", "gemm"),
    ("cutlass::Kernel2<cutlass_80_tensorop_s1688gemm_64x64_16x6_tn_align4>", "gemm"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>", "attention"),
    ("fmha_cutlassF_f32_aligned_64x64_rf_sm80", "attention"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::silu_kernel>", "elementwise/copy"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float>", "elementwise/copy"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float>", "norm"),
    ("aten::addmm", "gemm"),
    ("aten::mkldnn_convolution", "conv"),
    ("some_unknown_kernel", "other"),
])
def test_name_rules(name, category):
    assert tr.categorize(name) == category


def test_innermost_annotation_wins_and_self_time():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "vimbench::attention", "ts": 0, "dur": 100, "tid": 1},
        {"ph": "X", "cat": "user_annotation", "name": "vimbench::gemm", "ts": 0, "dur": 30, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "ts": 1, "dur": 28, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "ts": 2, "dur": 20, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::bmm", "ts": 40, "dur": 50, "tid": 1},
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 200, "dur": 10, "tid": 1},
    ]}
    events = {e.name: e for e in tr.cpu_events(trace)}
    assert events["aten::linear"].us == pytest.approx(8) and events["aten::linear"].category == "gemm"
    assert events["aten::bmm"].category == "attention"          # eager attention's matmul
    assert events["aten::add"].category == "elementwise/copy"
    summary = tr.summarize(list(events.values()))
    assert summary["total_ms"] == pytest.approx(0.088)
    assert sum(summary["pct"].values()) == pytest.approx(100)


def test_gpu_events_from_trace():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "gpu_user_annotation", "name": "vimbench::scan", "ts": 10, "dur": 50},
        {"ph": "X", "cat": "kernel", "name": "void at::native::elementwise_kernel<exp>", "ts": 12, "dur": 5},
        {"ph": "X", "cat": "kernel", "name": "nvjet_tst_x", "ts": 70, "dur": 20},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoD", "ts": 95, "dur": 2},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 500},
    ]}
    cats = {e.name: e.category for e in tr.gpu_events(trace)}
    assert cats == {"void at::native::elementwise_kernel<exp>": "scan", "nvjet_tst_x": "gemm",
                    "Memcpy DtoD": "elementwise/copy"}
