"""The kernel-op registry: a toy op added from outside (its own kernel module, one register() call, no other
file touched) is benchmarked on CPU, compiled by the static check, timed by the regression suite's cases,
categorized by the profile's name rules and listed by `vimbench kernels list`."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from vimbench.analysis.roofline import KernelWork
from vimbench.errors import VimbenchError
from vimbench.kerneltools import registry

TOY_MODULE = textwrap.dedent('''
    import torch
    import triton
    import triton.language as tl

    from kernels.runtime import LaunchConfig, check_device


    @triton.jit
    def _toy_double_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2.0, mask=mask)


    def toy_launch_config(n, interpreted):
        block = 16 if interpreted else 1024
        return LaunchConfig(kernel="_toy_double_kernel", grid=(triton.cdiv(n, block),),
                            constexprs=dict(BLOCK=block), num_warps=4)


    def toy_double(x):
        y = torch.empty_like(x)
        cfg = toy_launch_config(x.numel(), check_device(x, _toy_double_kernel))
        _toy_double_kernel[cfg.grid](x_ptr=x, y_ptr=y, n=x.numel(), **cfg.constexprs, num_warps=cfg.num_warps)
        return y
''')


@pytest.fixture
def toy_op(tmp_path, monkeypatch):
    pytest.importorskip("triton")
    (tmp_path / "vimbench_toy_ops.py").write_text(TOY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))

    def static_specs():
        from vimbench.kerneltools.static_check import Ptr, spec_from_args
        from vimbench_toy_ops import toy_launch_config

        cfg = toy_launch_config(4096, interpreted=False)
        return [spec_from_args("toy/fp32", "vimbench_toy_ops", cfg.kernel,
                               {"x_ptr": Ptr("fp32"), "y_ptr": Ptr("fp32"), "n": 4096}, cfg.constexprs,
                               num_warps=cfg.num_warps)]

    op = registry.register(registry.KernelOp(
        name="toy_double",
        summary="doubles its input",
        category="norm",
        forward="vimbench_toy_ops:toy_double",
        reference=lambda x: 2 * x,
        inputs=lambda shape, dtype, device: {"x": torch.randn(shape.rows, shape.channels, dtype=dtype,
                                                               device=device)},
        work=lambda shape, dtype: KernelWork("toy_double", 2 * 4 * shape.rows * shape.channels, 0.0,
                                             float(shape.rows * shape.channels)),
        kernels=("vimbench_toy_ops:_toy_double_kernel",),
        static_specs=static_specs,
        regression=(registry.RegressionShape(1, 16, 9, "fp32"),),
    ))
    yield op, tmp_path
    registry.unregister("toy_double")
    sys.modules.pop("vimbench_toy_ops", None)


def test_toy_op_is_benchmarked_on_cpu(toy_op):
    from vimbench.kerneltools import microbench as kb

    cases = kb.plan(["vim_test"], [32], [2], ["fp32"], ["triton", "torch", "cuda"], ["toy_double"])
    rows = {r.impl: r for r in kb.run_kernel_bench(cases, device="cpu")}
    shape = registry.OpShape.for_model("vim_test", 32, 2)
    for impl in ("triton", "torch"):
        assert rows[impl].status == "ok", rows[impl]
        assert rows[impl].ms_p50 > 0
        assert rows[impl].bytes == 2 * 4 * shape.rows * shape.channels  # x read once, y written once
    assert rows["cuda"].status == "skipped" and "no official" in rows["cuda"].error
    op, _ = toy_op
    args = op.inputs(shape, torch.float32, "cpu")
    torch.testing.assert_close(op.forward_fn()(**args), 2 * args["x"])


def test_toy_op_is_in_the_static_check_and_compiles_for_sm90(toy_op):
    from vimbench.kerneltools import static_check as sc

    _, folder = toy_op
    specs = [s for s in sc.kernel_specs() if s.name.startswith("toy/")]
    assert [s.name for s in specs] == ["toy/fp32"] and specs[0].constexprs["BLOCK"] == 1024
    (report,) = sc.static_reports(specs, extra_paths=[str(folder)])
    assert report.registers > 0 and not report.spills
    (finding,) = sc.compare_static([report], {})
    assert finding.status == "new"


def test_toy_op_is_in_the_regression_suite(toy_op):
    from vimbench.kerneltools import regression as rg

    case = next(c for c in rg.default_suite() if c.op == "toy_double")
    assert case.name == "toy_double/fp32/b1_e16_l9"
    assert rg.case_work(case).fma == 9 * 16
    assert case.build(device="cpu")().shape == (9, 16)


def test_toy_op_kernels_get_its_profile_category(toy_op):
    from vimbench.analysis.trace import categorize

    assert categorize("_toy_double_kernel") == "norm"
    assert categorize("_scan_kernel") == "scan"


def test_toy_op_is_listed(toy_op):
    from vimbench.cli import app

    result = CliRunner().invoke(app, ["kernels", "list"])
    assert result.exit_code == 0, result.output
    assert "toy_double" in result.output and "toy/fp32" in result.output and "_toy_double_kernel" in result.output
    for name in registry.op_names():
        assert name in result.output


def test_every_op_declares_what_the_tools_need():
    for op in registry.list_ops():
        assert op.kernels and op.static_specs is not None
        assert callable(op.forward_fn()) and callable(op.reference_fn())
        assert op.backward is None or callable(op.backward_fn())  # the slot the backward issues fill
        assert op.work(registry.OpShape(2, 16, 9), "bf16").bytes > 0


def test_names_are_unique_and_checked():
    op = registry.get_op("add_rmsnorm")
    with pytest.raises(VimbenchError, match="already registered"):
        registry.register(op)
    with pytest.raises(VimbenchError, match="unknown kernel op"):
        registry.get_op("scan_halves")
