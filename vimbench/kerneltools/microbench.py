"""Kernel microbenchmarks at Vim shapes: our Triton ops vs the PyTorch references (vs mamba-ssm's CUDA ops when
installed), one row per (op, model, resolution, batch, dtype, implementation).

Ops: scan_bidir (both directions, combined and gated: the Vim mixer's fp32 path), scan_halves (both
directions, the two gated halves: the mixer's bf16/fp16 path, see vimbench.models.vim.sums_halves_in_gemm),
scan_fwd (one direction), conv1d (both directions' conv + SiLU) and add_rmsnorm.
Shapes: D = embed dim, E = 2D, N = 16, R = ceil(D/16), L = (res // 16)^2 + 1 tokens.

Numbers per row:
- ms_p50: triton.testing.do_bench median (warmup / rep are milliseconds of repetition, not counts).
- gbps: bytes / time, with bytes = every input tensor read once + every output written once (the traffic an ideal
  kernel moves; `bytes` is in the row). For the scan the inputs are u, delta, B, C, z, A, D, delta_bias.
- roofline (vimbench.analysis.roofline): the op's bytes, exp-unit (MUFU) and FMA counts against the GPU's ceilings;
  pct_hbm / pct_mufu / pct_fma = that floor / ms_p50 (100 = at the floor), pct_floor for the binding one, `bound`
  names it. The scan's exp count is batch * L * E * N per direction.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from vimbench.errors import VimbenchError
from vimbench.results import KernelResult

OPS = ("scan_bidir", "scan_halves", "scan_fwd", "conv1d", "add_rmsnorm")
IMPLS = ("triton", "torch", "cuda")
DTYPES = ("bf16", "fp16", "fp32")
N_STATE = 16
D_CONV = 4

@dataclass(frozen=True)
class KernelCase:
    op: str
    model: str
    res: int
    batch: int
    dtype: str
    impl: str

    def label(self) -> str:
        return f"{self.op} {self.model} {self.res}px b{self.batch} {self.dtype} {self.impl}"


def _work(op: str, dims: dict[str, int], batch: int, dtype: str):
    """The op's roofline work (bytes, MUFU and FMA counts) at these dims."""
    from vimbench.analysis import roofline as rl

    E, L, D = dims["E"], dims["L"], dims["D"]
    if op in ("scan_bidir", "scan_halves"):
        return rl.bimamba_scan_work(batch, E, L, N_STATE, dtype=dtype, halves=op == "scan_halves")
    if op == "scan_fwd":
        return rl.scan_work(batch, E, L, N_STATE, dtype=dtype)
    if op == "conv1d":
        return rl.conv1d_bidir_work(batch, E, L, D_CONV, dtype=dtype)
    return rl.add_rmsnorm_work(batch * L, D, dtype=dtype)


def _dims(model: str, res: int) -> dict[str, int]:
    from vimbench.models.registry import get_spec, num_tokens

    spec = get_spec(model)
    if spec.family != "vim":
        raise VimbenchError(f"{model} is not a Vim model; kernel benchmarks take vim_t, vim_s or vim_b")
    dim = spec.embed_dim
    return dict(D=dim, E=2 * dim, R=math.ceil(dim / 16), L=num_tokens(spec, res))


def _torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _inputs(op: str, dims: dict[str, int], batch: int, dtype, device: str) -> dict[str, Any]:
    """Realistic inputs laid out as the Vim mixer passes them on a GPU: channel-last, x and z views of xz, B and C
    views of x_dbl in XDblLayout order, in fp32 for bf16/fp16 activations (vimbench.models.vim.x_dbl_in_fp32)."""
    import torch

    from vimbench.layout import XDblLayout

    E, L, R, D = dims["E"], dims["L"], dims["R"], dims["D"]
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape, scale=1.0, shift=0.0, dt=dtype):
        return (torch.randn(*shape, generator=g, device=device) * scale + shift).to(dt)

    # Channel-last, as the model lays tensors out: (..., L, channels) buffers seen as (..., channels, L) views.
    if op.startswith("scan"):
        dirs = 1 if op == "scan_fwd" else 2
        lay = XDblLayout(R, N_STATE)
        xz = rnd(batch, L, 2 * E).transpose(1, 2)
        x_dbl = rnd(dirs, batch, L, lay.width, dt=torch.float32 if dtype != torch.float32 else dtype)
        A = -torch.arange(1, N_STATE + 1, device=device, dtype=torch.float32).repeat(dirs, E, 1)
        args = dict(u=rnd(dirs, batch, L, E).transpose(2, 3),
                    delta=rnd(dirs, batch, L, E, scale=0.5, shift=-4.0).transpose(2, 3), A=A,
                    B=x_dbl[..., lay.B].transpose(2, 3), C=x_dbl[..., lay.C].transpose(2, 3),
                    D=torch.ones(dirs, E, device=device), z=xz[:, E:],
                    delta_bias=rnd(dirs, E, scale=0.5, dt=torch.float32))
        if op == "scan_fwd":
            args = {k: (v if k == "z" else v[0]) for k, v in args.items()}
        if op == "scan_halves":
            args["combine"] = False
        return args
    if op == "conv1d":
        xz = rnd(batch, L, 2 * E).transpose(1, 2)
        return dict(x=xz[:, :E], weight=rnd(2, E, D_CONV, scale=0.5, dt=torch.float32),
                    bias=rnd(2, E, scale=0.1, dt=torch.float32))
    if op == "add_rmsnorm":
        return dict(x=rnd(batch, L, D), residual=rnd(batch, L, D, dt=torch.float32),
                    weight=torch.ones(D, device=device), eps=1e-5, out_dtype=dtype)
    raise VimbenchError(f"unknown kernel op {op!r}; choose from {', '.join(OPS)}")


def _bytes(op: str, args: dict[str, Any], dtype) -> int:
    """Each input read once, each output written once."""
    import torch

    def size(t):
        return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    inputs = sum(size(v) for v in args.values())
    item = torch.empty((), dtype=dtype).element_size()
    if op == "scan_bidir":
        out = args["z"].numel() * item
    elif op == "scan_halves":
        out = 2 * args["z"].numel() * item
    elif op == "scan_fwd":
        out = args["u"].numel() * item
    elif op == "conv1d":
        out = 2 * args["x"].numel() * item
    else:  # y in dtype + fp32 residual
        out = args["x"].numel() * (item + 4)
    return inputs + out


def _mamba_fns():
    """mamba-ssm / causal-conv1d CUDA ops, or None where not importable."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        selective_scan_fn = None
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception:  # noqa: BLE001
        causal_conv1d_fn = None
    return selective_scan_fn, causal_conv1d_fn


def _callable(op: str, impl: str, args: dict[str, Any]) -> Callable[[], Any]:
    import torch

    if impl == "triton":
        from kernels.conv1d.op import conv1d_silu_bidir
        from kernels.rmsnorm.op import add_rmsnorm
        from kernels.selective_scan.op import bimamba_scan, selective_scan

        fns = dict(scan_bidir=bimamba_scan, scan_halves=bimamba_scan, scan_fwd=selective_scan,
                   conv1d=conv1d_silu_bidir, add_rmsnorm=add_rmsnorm)
        return lambda: fns[op](**args)
    if impl == "torch":
        from kernels import add_rmsnorm_ref, bimamba_scan_ref, conv1d_silu_bidir_ref, selective_scan_ref

        fns = dict(scan_bidir=bimamba_scan_ref, scan_halves=bimamba_scan_ref, scan_fwd=selective_scan_ref,
                   conv1d=conv1d_silu_bidir_ref, add_rmsnorm=add_rmsnorm_ref)
        return lambda: fns[op](**args)
    # impl == "cuda": the official path (flipped copies for the backward direction, two launches)
    scan_fn, conv_fn = _mamba_fns()
    if op in ("scan_bidir", "scan_fwd") and scan_fn is None:
        raise _Skip("mamba_ssm is not importable here")
    if op == "conv1d" and conv_fn is None:
        raise _Skip("causal_conv1d is not importable here")
    if op == "add_rmsnorm":
        raise _Skip("no official CUDA op for add_rmsnorm is benchmarked")
    if op == "scan_halves":
        raise _Skip("the official code has no halves variant; compare scan_bidir")
    if op == "scan_fwd":
        return lambda: scan_fn(**{k: v for k, v in args.items()}, delta_softplus=True)
    if op == "scan_bidir":
        a = args

        def official():
            y_f = scan_fn(a["u"][0], a["delta"][0], a["A"][0], a["B"][0], a["C"][0], a["D"][0], a["z"],
                          a["delta_bias"][0], delta_softplus=True)
            y_b = scan_fn(a["u"][1].flip(-1), a["delta"][1].flip(-1), a["A"][1], a["B"][1].flip(-1),
                          a["C"][1].flip(-1), a["D"][1], a["z"].flip(-1), a["delta_bias"][1], delta_softplus=True)
            return 0.5 * (y_f + y_b.flip(-1))
        return official
    x, w, b = args["x"], args["weight"], args["bias"]
    return lambda: torch.stack([conv_fn(x, w[0], b[0], activation="silu"),
                                conv_fn(x.flip(-1), w[1], b[1], activation="silu").flip(-1)])


class _Skip(Exception):
    pass


def make_call(op: str, impl: str, channels: int, length: int, batch: int, dtype, device: str = "cuda"):
    """A no-argument callable running one op on fresh inputs laid out as the model lays them out (channel-last).
    channels is the mixer's E; the norm runs on D = E / 2 (the model width)."""
    d_model = channels // 2
    dims = {"E": channels, "L": length, "R": -(-d_model // 16), "D": d_model}
    return _callable(op, impl, _inputs(op, dims, batch, dtype, device))


def plan(models, resolutions, batches, dtypes, impls, ops) -> list[KernelCase]:
    for d in dtypes:
        if d not in DTYPES:
            raise VimbenchError(f"kernel benchmarks take dtypes {', '.join(DTYPES)}; got {d!r}")
    for i in impls:
        if i not in IMPLS:
            raise VimbenchError(f"unknown implementation {i!r}; choose from {', '.join(IMPLS)}")
    for o in ops:
        if o not in OPS:
            raise VimbenchError(f"unknown kernel op {o!r}; choose from {', '.join(OPS)}")
    for m in models:
        _dims(m, 224)
    return [KernelCase(o, m, r, b, d, i) for o in ops for m in models for r in resolutions for b in batches
            for d in dtypes for i in impls]


def run_case(case: KernelCase, gpu_name: str | None, warmup_ms: float = 25, rep_ms: float = 100,
             max_reference_elements: int | None = None) -> KernelResult:
    """Time one case on the current CUDA device; returns its results row (status ok | skipped | oom | error)."""
    import torch
    import triton.testing

    dims = _dims(case.model, case.res)
    dtype = _torch_dtype(case.dtype)
    row = KernelResult(**asdict(case), tokens=dims["L"], E=dims["E"], D=dims["D"], N=N_STATE,
                       timing_method="triton.testing.do_bench(median)", warmup_ms=warmup_ms, rep_ms=rep_ms,
                       gpu_name=gpu_name, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))
    elements = case.batch * dims["E"] * dims["L"]
    if case.impl == "torch" and case.op.startswith("scan") and max_reference_elements is not None \
            and elements > max_reference_elements:
        row.status = "skipped"
        row.error = (f"reference scan skipped above {max_reference_elements:,} elements (batch*E*L); raise "
                     "--max-ref-elements to time it")
        return row
    try:
        args = _inputs(case.op, dims, case.batch, dtype, "cuda")
        fn = _callable(case.op, case.impl, args)
        ms = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median")
    except _Skip as exc:
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
    nbytes = _bytes(case.op, args, dtype)
    row.ms_p50, row.bytes, row.gbps = ms, nbytes, nbytes / (ms * 1e-3) / 1e9
    from vimbench.analysis import roofline as rl

    try:
        ceil = rl.ceilings_for(gpu_name or "")
    except VimbenchError:  # a GPU without a ceilings entry: times and GB/s only
        ceil = None
    if ceil is not None:
        floors = rl.roofline(_work(case.op, dims, case.batch, case.dtype), ms * 1e-3, ceil).as_row()
        row.pct_hbm, row.pct_mufu, row.pct_fma = floors["pct_hbm"], floors["pct_mufu"], floors["pct_fma"]
        row.pct_floor, row.bound = floors["pct_floor"], floors["bound"]
    del args
    return row


def run_kernel_bench(cases: list[KernelCase], results=None, progress: Callable[[str, int], None] | None = None,
                     max_reference_elements: int | None = 50_000_000, warmup_ms: float = 25,
                     rep_ms: float = 100) -> list[KernelResult]:
    """Time every case; rows are appended to `results` (a vimbench.results.RunWriter) as they are measured."""
    import torch

    if not torch.cuda.is_available():
        raise VimbenchError("kernel benchmarks need a CUDA GPU and none is visible here; the kernels' correctness "
                            "tests run on CPU: python -m pytest tests/kernels")
    gpu_name = torch.cuda.get_device_name(0)
    rows = []
    for i, case in enumerate(cases):
        if progress:
            progress(case.label(), i)
        row = run_case(case, gpu_name, warmup_ms, rep_ms, max_reference_elements)
        rows.append(row)
        if results is not None:
            results.append(row)
    if progress:
        progress("done", len(cases))
    return rows
