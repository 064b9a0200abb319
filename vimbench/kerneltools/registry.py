"""The kernel-op registry: every op vimbench's kernel tools know, declared once (the entries are in
vimbench/kerneltools/kernel_ops.py).

One entry says what an op is (its Triton forward, its PyTorch reference, later its backward), how to build its
inputs at a model's shape, how much work it does (bytes, exp-unit and FMA counts, for the roofline), which
launch variants the static sm_90 check compiles, and which shapes the timed regression check times. The
microbenchmark (`vimbench kernels`), the regression check (`kernels check`), the static check (`kernels
static`), `kernels list` and the profile's kernel-name rules all read this registry and use its names, so an op
is named the same way everywhere. Adding an op: a kernel folder under kernels/ and one `register(KernelOp(...))`.

Functions may be given as "module:attribute" strings: they are imported when first used, so reading the
registry (e.g. for the profile's name rules) imports neither torch nor triton.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Union

from vimbench import geometry
from vimbench.errors import VimbenchError

if TYPE_CHECKING:
    from vimbench.analysis.roofline import KernelWork
    from vimbench.kerneltools.static_check import KernelSpec

FnRef = Union[str, Callable[..., Any]]

# Profile categories a kernel of an op can fall in (vimbench.analysis.trace.CATEGORIES minus the catch-alls and
# "optimizer", which only torch.optim's kernels fall in).
OP_CATEGORIES = ("scan", "conv", "norm", "gemm", "attention")


class Unavailable(Exception):
    """An implementation that cannot run here (e.g. mamba-ssm not installed): the case is recorded as skipped."""


@dataclass(frozen=True)
class OpShape:
    """The sizes an op runs at: a Vim mixer's, `batch` sequences of `length` tokens.

    channels is the mixer's inner width E = EXPAND * D (D the model width, vimbench.geometry); norms run on D."""
    batch: int
    channels: int
    length: int
    d_state: int = geometry.D_STATE
    d_conv: int = geometry.D_CONV

    @property
    def d_model(self) -> int:
        return self.channels // geometry.EXPAND

    @property
    def dt_rank(self) -> int:
        return geometry.dt_rank(self.d_model)

    @property
    def rows(self) -> int:
        """Token rows (batch * length): what a norm over the model width sees."""
        return self.batch * self.length

    def label(self) -> str:
        return f"b{self.batch}_e{self.channels}_l{self.length}"

    @classmethod
    def for_model(cls, model: str, res: int, batch: int) -> "OpShape":
        """The shape a Vim model's mixers run at for `batch` images of res x res px."""
        from vimbench.models.registry import get_spec

        spec = get_spec(model)
        if spec.family != "vim":
            raise VimbenchError(f"{model} is not a Vim model; kernel benchmarks take Vim models "
                                f"(vim_t, vim_s, vim_b)")
        return cls(batch, geometry.d_inner(spec.embed_dim), geometry.num_tokens(res))


@dataclass(frozen=True)
class RegressionShape:
    """One case of the timed regression check: the op at this shape and dtype."""
    batch: int
    channels: int
    length: int
    dtype: str

    @property
    def shape(self) -> OpShape:
        return OpShape(self.batch, self.channels, self.length)


def _shape_label(shape: OpShape) -> str:
    return shape.label()


@dataclass(frozen=True)
class KernelOp:
    """One kernel op. Callables:
    - forward / reference / backward: the Triton op, its PyTorch reference (same signature), the backward (None
      until it exists); called as fn(**inputs).
    - inputs(shape, torch_dtype, device) -> the keyword arguments of one call, laid out as the model lays them.
    - work(shape, dtype_name) -> vimbench.analysis.roofline.KernelWork (the floor of a perfect kernel).
    - static_specs() -> the KernelSpecs `vimbench kernels static` compiles (their launch configuration comes
      from the kernel's own *_launch_config function).
    - official(inputs) -> a no-argument call of the official CUDA implementation (raises Unavailable where it is
      not installed); or a string saying why the op has none.
    kernels: the "module:function" of each @triton.jit kernel the forward launches; category: the profile
    category their time counts in (the profile's name rules come from here)."""
    name: str
    summary: str
    category: str
    forward: FnRef
    reference: FnRef
    inputs: Callable[[OpShape, Any, str], dict[str, Any]]
    work: Callable[[OpShape, str], "KernelWork"]
    kernels: tuple[str, ...] = ()
    static_specs: Callable[[], list["KernelSpec"]] | None = None
    regression: tuple[RegressionShape, ...] = ()
    case_label: Callable[[OpShape], str] = _shape_label
    official: Callable[[dict[str, Any]], Callable[[], Any]] | str = "no official CUDA counterpart is benchmarked"
    backward: FnRef | None = None

    def forward_fn(self) -> Callable[..., Any]:
        return resolve(self.forward)

    def reference_fn(self) -> Callable[..., Any]:
        return resolve(self.reference)

    def backward_fn(self) -> Callable[..., Any] | None:
        return None if self.backward is None else resolve(self.backward)

    def kernel_names(self) -> tuple[str, ...]:
        """The @triton.jit functions' names (what a profiler trace shows)."""
        return tuple(ref.rpartition(":")[2] for ref in self.kernels)

    def regression_name(self, case: RegressionShape) -> str:
        """A regression case's name, e.g. "bimamba_scan/bf16/b64_e384_l6085" (the baseline files' keys)."""
        return f"{self.name}/{case.dtype}/{self.case_label(case.shape)}"


def resolve(ref: FnRef) -> Callable[..., Any]:
    """A callable, or the attribute named by a "module:attribute" string."""
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


_OPS: dict[str, KernelOp] = {}
_generation = 0
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module("vimbench.kerneltools.kernel_ops")


def register(op: KernelOp) -> KernelOp:
    """Add an op; its name must be new. Returns it (so an entry can be kept in a variable)."""
    global _generation
    _load_builtins()
    if op.name in _OPS:
        raise VimbenchError(f"kernel op {op.name!r} is already registered")
    if op.category not in OP_CATEGORIES:
        raise VimbenchError(f"kernel op {op.name!r}: category {op.category!r} is not one of "
                            f"{', '.join(OP_CATEGORIES)}")
    _OPS[op.name] = op
    _generation += 1
    return op


def unregister(name: str) -> None:
    global _generation
    _OPS.pop(name, None)
    _generation += 1


def generation() -> int:
    """Changes whenever the registry does (for caches of what is derived from it)."""
    _load_builtins()
    return _generation


def list_ops() -> list[KernelOp]:
    _load_builtins()
    return list(_OPS.values())


def op_names() -> list[str]:
    return [op.name for op in list_ops()]


def get_op(name: str) -> KernelOp:
    _load_builtins()
    if name not in _OPS:
        raise VimbenchError(f"unknown kernel op {name!r}; choose from {', '.join(_OPS)}")
    return _OPS[name]


@dataclass(frozen=True)
class OpDescription:
    """What `vimbench kernels list` shows of one op."""
    name: str
    category: str
    summary: str
    forward: str
    backward: str | None
    reference: str
    kernels: tuple[str, ...]
    static_specs: tuple[str, ...]
    regression_cases: int
    official: bool


def _ref_name(ref: FnRef) -> str:
    """"module:attribute" for a reference given as a string or a function."""
    return ref if isinstance(ref, str) else f"{ref.__module__}:{getattr(ref, '__qualname__', repr(ref))}"


def describe_ops() -> list[OpDescription]:
    """Every registered op and what it has. Builds the static specs (imports the kernel modules for their
    launch configurations)."""
    out = []
    for op in list_ops():
        specs = tuple(spec.name for spec in op.static_specs()) if op.static_specs else ()
        out.append(OpDescription(op.name, op.category, op.summary, _ref_name(op.forward),
                                 None if op.backward is None else _ref_name(op.backward), _ref_name(op.reference),
                                 op.kernel_names(), specs, len(op.regression), callable(op.official)))
    return out
