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


@pytest.mark.parametrize("name, category", [
    # the triton backend's backward kernels (and the chunked scan's forward ones), from the kernel registry
    ("_scan_bwd_kernel", "scan"),
    ("_scan_bwd_group_carry_kernel", "scan"),
    ("_bc_rows_kernel", "scan"),
    ("_chunk_states_kernel", "scan"),
    ("_chunk_combine_kernel", "scan"),
    ("_chunk_outputs_kernel", "scan"),
    ("_conv1d_silu_bidir_bwd_kernel", "conv"),
    ("_conv1d_silu_bidir_bwd_rows_kernel", "conv"),
    ("_add_rmsnorm_bwd_kernel", "norm"),
    # cuBLAS / CUTLASS GEMMs of the backward (input and weight gradients, the patch embedding's wgrad)
    ("nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT", "gemm"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_nn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_nt_align8>", "gemm"),
    ("sm90_xmma_wgrad_implicit_gemm_indexed_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64", "gemm"),
    # torch.optim AdamW: foreach and fused multi_tensor_apply kernels ("multi" must not read as "mul"), CPU ops
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<2>, at::native::(anonymous namespace)::BinaryOpListAlphaFunctor<float, 2, 2, 0>, "
     "std::plus<float>, float>", "optimizer"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "FusedOptimizerTensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4, "
     "(at::native::ADAM_MODE)1, false>, double*>", "optimizer"),
    ("aten::_foreach_lerp_", "optimizer"),
    # the cross-entropy: log-softmax and NLL are the loss, not attention; softmax itself stays attention
    ("void (anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, LogSoftMaxForwardEpilogue>",
     "elementwise/copy"),
    ("void (anonymous namespace)::cunn_SoftMaxBackward<4, float, float, float, LogSoftMaxBackwardEpilogue>",
     "elementwise/copy"),
    ("void nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>", "elementwise/copy"),
    ("aten::_log_softmax", "elementwise/copy"),
    ("void (anonymous namespace)::cunn_SoftMaxBackward<4, float, float, float, SoftMaxBackwardEpilogue>",
     "attention"),
    # reductions (bias and weight-gradient partial sums), fills and copies of the backward
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float, "
     "float, float>, unsigned int, float, 4>>", "elementwise/copy"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, "
     "at::detail::Array<char*, 1>>", "elementwise/copy"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda>", "elementwise/copy"),
    ("Memset (Device)", "elementwise/copy"),
])
def test_training_step_name_rules(name, category):
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


def test_optimizer_annotation_wins_on_the_gpu():
    trace = {"traceEvents": [
        {"ph": "X", "cat": "gpu_user_annotation", "name": "vimbench::optimizer", "ts": 100, "dur": 30},
        {"ph": "X", "cat": "kernel", "name": "void at::native::vectorized_elementwise_kernel<sqrt>", "ts": 105,
         "dur": 5},
        {"ph": "X", "cat": "kernel", "name": "void at::native::vectorized_elementwise_kernel<sqrt>", "ts": 10,
         "dur": 5},
    ]}
    assert [e.category for e in tr.gpu_events(trace)] == ["optimizer", "elementwise/copy"]


def _kernel(ts, dur, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": "k", "ts": ts, "dur": dur}


def test_union_of_intervals():
    assert tr.union_us([]) == 0
    assert tr.union_us([(0, 10), (5, 15)]) == 15            # overlap counts once
    assert tr.union_us([(0, 10), (2, 4)]) == 10             # nested
    assert tr.union_us([(20, 30), (0, 10), (10, 12)]) == 22  # unsorted, touching
    assert tr.union_us([(0, 1), (5, 6), (5.5, 9)]) == 5       # gap, then overlap


def test_gpu_idle_is_span_minus_union_of_kernels():
    kernels = [_kernel(10, 20), _kernel(20, 20),             # two streams: 10..40, busy 30 (not 40)
               _kernel(60, 10), _kernel(65, 3),              # 60..70, one nested
               _kernel(70, 5, "gpu_memcpy"),                 # 70..75: copies count as busy
               {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 500},          # not the GPU
               {"ph": "X", "cat": "gpu_user_annotation", "name": "vimbench::gemm", "ts": 10, "dur": 65}]
    alone = tr.gpu_timeline({"traceEvents": kernels})        # no profiled range: first to last kernel
    assert (alone.span_ms, alone.busy_ms, alone.idle_ms) == pytest.approx((0.065, 0.045, 0.020))
    # the profiled call starts on the host 10 us before its first kernel and returns before its last kernel ends
    window = {"ph": "X", "cat": "user_annotation", "name": tr.PROFILED_RANGE, "ts": 0, "dur": 50}
    timeline = tr.gpu_timeline({"traceEvents": [window, *kernels]})
    assert (timeline.span_ms, timeline.busy_ms, timeline.idle_ms) == pytest.approx((0.075, 0.045, 0.030))
    late = dict(window, dur=100)                             # the host still busy after the last kernel
    assert tr.gpu_timeline({"traceEvents": [late, *kernels]}).idle_ms == pytest.approx(0.055)
    assert tr.gpu_timeline({"traceEvents": [window]}) is None
