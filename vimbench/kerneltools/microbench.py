"""Kernel microbenchmarks at Vim shapes: the registered ops (vimbench.kerneltools.registry) in their Triton form
vs their PyTorch references (vs mamba-ssm's CUDA ops when installed), one row per (op, model, resolution,
batch, dtype, implementation).

Implementations: triton (the op's forward), torch (its reference), cuda (its official CUDA counterpart).
Shapes: D = embed dim, E = 2D, N = 16, R = ceil(D/16), L = (res // 16)^2 + 1 tokens; inputs as the op's
registry entry builds them (the model's layouts).

Numbers per row:
- ms_p50: triton.testing.do_bench median (warmup / rep are milliseconds of repetition, not counts); on a CPU
  (tests, the interpreter) the median of wall-clock calls, named in timing_method.
- gbps: bytes / time, with bytes = every input tensor read once + every output written once (the traffic an ideal
  kernel moves; `bytes` is in the row). For the scan the inputs are u, delta, B, C, z, A, D, delta_bias.
- roofline (vimbench.analysis.roofline): the op's bytes, exp-unit (MUFU) and FMA counts (its registry entry's
  work) against the GPU's ceilings; pct_hbm / pct_mufu / pct_fma = that floor / ms_p50 (100 = at the floor),
  pct_floor for the binding one, `bound` names it. The scan's exp count is batch * L * E * N per direction.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from vimbench.errors import VimbenchError
from vimbench.kerneltools.registry import OpShape, Unavailable, get_op
from vimbench.precision import torch_dtype
from vimbench.results import KernelResult

IMPLS = ("triton", "torch", "cuda")
DTYPES = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class BenchCase:
    """One microbenchmark case: a registered op at a Vim model's shape."""
    op: str
    model: str
    res: int
    batch: int
    dtype: str
    impl: str

    def label(self) -> str:
        return f"{self.op} {self.model} {self.res}px b{self.batch} {self.dtype} {self.impl}"

    def shape(self) -> OpShape:
        return OpShape.for_model(self.model, self.res, self.batch)


def _callable(op_name: str, impl: str, args: dict[str, Any]) -> Callable[[], Any]:
    """A no-argument call of one implementation of the op on these inputs; raises Unavailable."""
    op = get_op(op_name)
    if impl == "triton":
        fn = op.forward_fn()
        return lambda: fn(**args)
    if impl == "torch":
        fn = op.reference_fn()
        return lambda: fn(**args)
    if not callable(op.official):
        raise Unavailable(op.official)
    return op.official(args)


def _tensor_bytes(value: Any) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def traffic_bytes(args: dict[str, Any], output: Any) -> int:
    """Each input read once, each output written once."""
    return sum(_tensor_bytes(v) for v in args.values()) + _tensor_bytes(output)


def make_call(op: str, impl: str, shape: OpShape, dtype, device: str = "cuda") -> Callable[[], Any]:
    """A no-argument callable running one op on fresh inputs laid out as the model lays them out (channel-last)."""
    return _callable(op, impl, get_op(op).inputs(shape, dtype, device))


def plan(models, resolutions, batches, dtypes, impls, ops) -> list[BenchCase]:
    for d in dtypes:
        if d not in DTYPES:
            raise VimbenchError(f"kernel benchmarks take dtypes {', '.join(DTYPES)}; got {d!r}")
    for i in impls:
        if i not in IMPLS:
            raise VimbenchError(f"unknown implementation {i!r}; choose from {', '.join(IMPLS)}")
    for o in ops:
        get_op(o)
    for m in models:
        OpShape.for_model(m, 224, 1)
    return [BenchCase(o, m, r, b, d, i) for o in ops for m in models for r in resolutions for b in batches
            for d in dtypes for i in impls]


def _time_ms(fn: Callable[[], Any], device: str, warmup_ms: float, rep_ms: float) -> tuple[float, str]:
    """(median ms, method). CUDA: triton.testing.do_bench; CPU: wall clock over a few calls."""
    if device == "cuda":
        import triton.testing

        return (triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"),
                "triton.testing.do_bench(median)")
    from vimbench.bench.timing import MIN_ITERS, time_forward

    timing = time_forward(fn, device, 1, MIN_ITERS)
    return timing.p50_ms, f"{timing.method}(median)"


def run_case(case: BenchCase, gpu_name: str | None, warmup_ms: float = 25, rep_ms: float = 100,
             max_reference_elements: int | None = None, device: str = "cuda") -> KernelResult:
    """Time one case on the current device (CUDA; "cpu" runs the Triton ops under the interpreter, for tests);
    returns its results row (status ok | skipped | oom | error)."""
    import torch

    op = get_op(case.op)
    shape = case.shape()
    dtype = torch_dtype(case.dtype)
    row = KernelResult(**asdict(case), tokens=shape.length, E=shape.channels, D=shape.d_model, N=shape.d_state,
                       timing_method="triton.testing.do_bench(median)", warmup_ms=warmup_ms, rep_ms=rep_ms,
                       gpu_name=gpu_name, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    elements = case.batch * shape.channels * shape.length
    if case.impl == "torch" and op.category == "scan" and max_reference_elements is not None \
            and elements > max_reference_elements:
        row.status = "skipped"
        row.error = (f"reference scan skipped above {max_reference_elements:,} elements (batch*E*L); raise "
                     "--max-ref-elements to time it")
        return row
    try:
        args = op.inputs(shape, dtype, device)
        fn = _callable(case.op, case.impl, args)
        output = fn()  # compiles outside the timed region; its outputs give the bytes written
        ms, method = _time_ms(fn, device, warmup_ms, rep_ms)
    except Unavailable as exc:
        row.status, row.error = "skipped", str(exc)
        return row
    except torch.cuda.OutOfMemoryError as exc:
        row.status, row.error = "oom", str(exc).splitlines()[0]
        torch.cuda.empty_cache()
        return row
    except Exception as exc:  # noqa: BLE001 - one failing case must not end the run; the row says why
        row.status = "error"
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return row
    nbytes = traffic_bytes(args, output)
    row.ms_p50, row.bytes, row.gbps, row.timing_method = ms, nbytes, nbytes / (ms * 1e-3) / 1e9, method
    from vimbench.analysis import roofline as rl

    try:
        ceil = rl.ceilings_for(gpu_name or "")
    except VimbenchError:  # a GPU without a ceilings entry (or a CPU): times and GB/s only
        ceil = None
    if ceil is not None:
        floors = rl.roofline(op.work(shape, case.dtype), ms * 1e-3, ceil).as_row()
        row.pct_hbm, row.pct_mufu, row.pct_fma = floors["pct_hbm"], floors["pct_mufu"], floors["pct_fma"]
        row.pct_floor, row.bound = floors["pct_floor"], floors["bound"]
    del args, output
    return row


def run_kernel_bench(cases: list[BenchCase], results=None, progress: Callable[[str, int], None] | None = None,
                     max_reference_elements: int | None = 50_000_000, warmup_ms: float = 25,
                     rep_ms: float = 100, device: str = "cuda") -> list[KernelResult]:
    """Time every case; rows are appended to `results` (a vimbench.results.RunWriter) as they are measured.
    device "cpu" is for tests: the Triton ops run under the interpreter, timed by wall clock."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise VimbenchError("kernel benchmarks need a CUDA GPU and none is visible here; the kernels' correctness "
                            "tests run on CPU: python -m pytest tests/kernels")
    gpu_name = torch.cuda.get_device_name(0) if device == "cuda" else None
    rows = []
    for i, case in enumerate(cases):
        if progress:
            progress(case.label(), i)
        row = run_case(case, gpu_name, warmup_ms, rep_ms, max_reference_elements, device)
        rows.append(row)
        if results is not None:
            results.append(row)
    if progress:
        progress("done", len(cases))
    return rows
