"""Static check of vimbench's Triton kernels without a GPU: compile for sm_90, read registers, local memory and
the SASS instructions that matter, and compare them with a committed expectation file.

How: `triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", 90, 32))` builds a
cubin on any machine (ptxas ships with Triton); Triton's own `cuobjdump` gives the resource usage
(`--dump-resource-usage`: REG, LOCAL) and the SASS (`-sass`). Compilation runs in subprocesses (one per CPU, up
to STATIC_WORKERS) with TRITON_INTERPRET removed from their environment: under the interpreter `@triton.jit`
returns an interpreted function that cannot be compiled, and Triton takes that decision when a kernel module is
imported.

What fails (exit 1 from `vimbench kernels static`):
- any local memory (STACK or LOCAL > 0, or any STL/LDL instruction): register spills, except up to a spec's
  `accepted_spill_bytes` (a launch that was measured faster with that spill than without it; the spec's
  registration in kernel_ops.py says where it was measured); more than that fails;
- registers > expected + REGISTER_MARGIN;
- fewer 128-bit global loads (LDG.E.128), or fewer vectorized (128 + 64-bit) loads, than expected;
- more MUFU.EX2 per state element than expected (the same count, since the spec fixes the tile);
- more SHFL (warp shuffles) than expected: a layout that moved the scan's states across lanes (Triton 3.6 did
  this to the v3 scan: 128 shuffles per loop trip, kernels/NOTES.md);
- a kernel spec with no expectation (run with --update and commit the file).
Counts are static (instructions in the binary, not executed ones): a change in the unrolled tile shows up as
a change in the count. Expectations record the Triton version they were made with; another version may
generate different code, and the report says so.

The kernels to check are the registered ops' static specs (`kernel_specs()`; the entries are in
vimbench/kerneltools/kernel_ops.py, their tile choices come from each kernel's *_launch_config). Signature types are Triton's ("*fp32", "*bf16", "i32",
"i64", "fp32"); a ":16" suffix marks the argument divisible by 16 (pointers 16-byte aligned, integers
multiples of 16), as Triton's JIT specializes them at launch. Do not mark arguments the kernel declares in
do_not_specialize (token counts L vary with resolution).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vimbench.errors import VimbenchError
from vimbench.kerneltools.jsonfile import load_checked_json

ARCH = 90
REGISTER_MARGIN = 8


def default_expectations_path() -> Path:
    """kernels/static_expectations.json of the checkout whose kernels are compiled (whatever the cwd)."""
    import kernels

    return Path(kernels.__file__).resolve().parent / "static_expectations.json"


EXPECTATIONS_SCHEMA = "vimbench.static_expectations/1"


@dataclass(frozen=True)
class KernelSpec:
    """One compiled variant of one @triton.jit function.

    state_elements: (channel, state, token) elements one program handles per pass over the code, used to
    report MUFU.EX2 per state element (None for kernels without a state)."""
    name: str                          # unique label, e.g. "bimamba_scan_fwd/bf16"
    module: str                        # importable module, e.g. "kernels.selective_scan.fwd"
    function: str                      # the @triton.jit function's name in that module
    signature: dict[str, str]          # non-constexpr arguments -> Triton type ("*bf16:16", "i32", ...)
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3
    state_elements: int | None = None
    maxnreg: int | None = None         # ptxas register cap, as the launch passes it (LaunchConfig.maxnreg)
    accepted_spill_bytes: int = 0      # spill (stack + local bytes) measured and accepted for this launch (see below)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ptr:
    """A tensor argument: its Triton element type; assumed 16-byte aligned, as torch allocations are."""
    dtype: str   # "fp32", "bf16", "fp16"


def spec_from_args(name: str, module: str, function: str, args: dict[str, Any], constexprs: dict[str, Any],
                   do_not_specialize: tuple[str, ...] = (), num_warps: int = 4, num_stages: int = 3,
                   state_elements: int | None = None, maxnreg: int | None = None,
                   accepted_spill_bytes: int = 0) -> KernelSpec:
    """A KernelSpec that specializes like Triton's JIT at a launch with these argument values: pointers aligned
    (":16"), integers equal to 1 become constexpr 1, integers divisible by 16 get ":16", integers beyond int32
    are i64, floats fp32; arguments in do_not_specialize (the kernel's own list) get none of that. Arguments the
    kernel declares `tl.constexpr` are compiled with their value, whatever args or constexprs holds them."""
    signature: dict[str, str] = {}
    consts = dict(constexprs)
    declared = _constexpr_params(module, function)
    for arg, value in args.items():
        if arg in declared:
            consts[arg] = value
        elif isinstance(value, Ptr):
            signature[arg] = f"*{value.dtype}:16"
        elif isinstance(value, bool):
            signature[arg] = "u1"
        elif isinstance(value, int):
            kind = "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
            if arg in do_not_specialize:
                signature[arg] = kind
            elif value == 1:
                consts[arg] = 1
            else:
                signature[arg] = kind + (":16" if value % 16 == 0 else "")
        elif isinstance(value, float):
            signature[arg] = "fp32"
        else:
            raise VimbenchError(f"static check spec {name}: cannot type argument {arg}={value!r}")
    return KernelSpec(name, module, function, signature, consts, num_warps, num_stages, state_elements, maxnreg,
                      accepted_spill_bytes)


def _constexpr_params(module: str, function: str) -> set[str]:
    """The parameters `module.function` (a @triton.jit function, compiled or interpreted) declares tl.constexpr."""
    import importlib
    import inspect

    fn = getattr(importlib.import_module(module), function, None)
    if fn is None:
        return set()
    if hasattr(fn, "params"):  # triton.runtime.jit.JITFunction
        return {p.name for p in fn.params if p.is_constexpr}
    python_fn = getattr(fn, "fn", fn)  # the interpreter's InterpretedFunction wraps the Python function
    return {name for name, p in inspect.signature(python_fn).parameters.items() if "constexpr" in str(p.annotation)}


def contiguous_strides(*shape: int) -> tuple[int, ...]:
    """Element strides of a contiguous tensor of this shape (for specs of views of model buffers)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def kernel_specs() -> list[KernelSpec]:
    """What `vimbench kernels static` compiles: every registered op's static specs
    (vimbench.kerneltools.kernel_ops), each variant once."""
    from vimbench.kerneltools.registry import list_ops

    specs: dict[str, KernelSpec] = {}
    for op in list_ops():
        for spec in op.static_specs() if op.static_specs else ():
            if spec.name in specs and specs[spec.name] != spec:
                raise VimbenchError(f"two different static specs are named {spec.name!r} (op {op.name})")
            specs[spec.name] = spec
    return list(specs.values())


@dataclass
class StaticReport:
    """What the compiler produced for one KernelSpec."""
    name: str
    registers: int
    stack_bytes: int         # stack frame: where spilled registers go
    local_bytes: int         # other local memory (local arrays)
    shared_bytes: int
    mufu_ex2: int
    ldg: int                 # all global loads
    ldg_128: int
    ldg_64: int
    stg_128: int
    stl: int                 # local-memory stores: spills
    ldl: int                 # local-memory loads: spills
    instructions: int
    state_elements: int | None = None
    shfl: int = 0            # warp shuffles: cross-lane traffic (the scan keeps a channel's states in one lane)
    accepted_spill_bytes: int = 0  # from the spec: a spill up to this many bytes does not fail

    @property
    def ex2_per_state_element(self) -> float | None:
        return self.mufu_ex2 / self.state_elements if self.state_elements else None

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0 or self.local_bytes > 0 or self.stl > 0 or self.ldl > 0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ex2_per_state_element"] = self.ex2_per_state_element
        return out


# ---------------------------------------------------------------------------------------------- SASS parsing

_SASS_LINE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)")
_RESOURCE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")


def count_sass(sass: str) -> dict[str, int]:
    """Opcode counts that matter, from `cuobjdump -sass` text."""
    opcodes = _SASS_LINE.findall(sass)
    ldg = [op for op in opcodes if op.startswith("LDG")]
    return {
        "instructions": len(opcodes),
        "mufu_ex2": sum(op == "MUFU.EX2" for op in opcodes),
        "ldg": len(ldg),
        "ldg_128": sum(".128" in op for op in ldg),
        "ldg_64": sum(".64" in op for op in ldg),
        "stg_128": sum(op.startswith("STG") and ".128" in op for op in opcodes),
        "stl": sum(op.startswith("STL") for op in opcodes),
        "ldl": sum(op.startswith("LDL") for op in opcodes),
        "shfl": sum(op.startswith("SHFL") for op in opcodes),
    }


def parse_resource_usage(text: str) -> dict[str, int]:
    """REG / STACK / SHARED / LOCAL of the (single) function in `cuobjdump --dump-resource-usage` output.
    Spilled registers go to the stack frame (STACK), local arrays to LOCAL; both live in local memory."""
    for line in text.splitlines():
        values = dict(_RESOURCE.findall(line))
        if "REG" in values:
            return {"registers": int(values["REG"]), "stack_bytes": int(values.get("STACK", 0)),
                    "shared_bytes": int(values.get("SHARED", 0)), "local_bytes": int(values.get("LOCAL", 0))}
    raise VimbenchError("could not read the resource usage from cuobjdump's output:\n" + text[:500])


def cuobjdump_path() -> Path:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not path.exists():
        raise VimbenchError(f"Triton's cuobjdump is missing ({path}); install a Triton wheel with the NVIDIA backend")
    return path


def inspect_cubin(cubin: bytes, name: str, state_elements: int | None = None,
                  accepted_spill_bytes: int = 0) -> StaticReport:
    tool = cuobjdump_path()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        usage = subprocess.run([str(tool), "--dump-resource-usage", str(path)], capture_output=True, text=True,
                               check=True).stdout
        sass = subprocess.run([str(tool), "-sass", str(path)], capture_output=True, text=True, check=True).stdout
    return StaticReport(name=name, state_elements=state_elements, accepted_spill_bytes=accepted_spill_bytes,
                        **parse_resource_usage(usage), **count_sass(sass))


# ---------------------------------------------------------------------------------------------- compilation

def _load_function(spec: KernelSpec):
    import importlib

    module = importlib.import_module(spec.module)
    fn = getattr(module, spec.function, None)
    if fn is None:
        raise VimbenchError(f"{spec.module} has no function {spec.function!r} (static check spec {spec.name})")
    return fn


def compile_spec(spec: KernelSpec) -> bytes:
    """The sm_90 cubin of one spec. Must run where TRITON_INTERPRET is unset (see module docstring)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _load_function(spec)
    if not hasattr(fn, "arg_names"):
        raise VimbenchError(f"{spec.module}.{spec.function} is not a compilable @triton.jit function "
                            "(TRITON_INTERPRET set when it was imported?)")
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for index, arg in enumerate(fn.arg_names):
        if arg in spec.constexprs:
            signature[arg] = "constexpr"
            continue
        if arg not in spec.signature:
            raise VimbenchError(f"static check spec {spec.name}: no type for argument {arg!r} of {spec.function}")
        kind, _, hint = spec.signature[arg].partition(":")
        signature[arg] = kind
        if hint == "16":
            attrs[(index,)] = [["tt.divisibility", 16]]
    unknown = set(spec.signature) | set(spec.constexprs)
    unknown -= set(fn.arg_names)
    if unknown:
        raise VimbenchError(f"static check spec {spec.name}: {spec.function} has no arguments {sorted(unknown)}")
    src = ASTSource(fn, signature, constexprs=dict(spec.constexprs), attrs=attrs)
    options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages}
    if spec.maxnreg:
        options["maxnreg"] = spec.maxnreg
    compiled = triton.compile(src, target=GPUTarget("cuda", ARCH, 32), options=options)
    return compiled.asm["cubin"]


def _worker(specs_json: str) -> str:
    """Subprocess side: compile and inspect each spec; one JSON object per spec (a report or an error)."""
    out = []
    for raw in json.loads(specs_json):
        spec = KernelSpec(**raw)
        try:
            out.append({"ok": True, **inspect_cubin(compile_spec(spec), spec.name, spec.state_elements,
                                                    spec.accepted_spill_bytes).to_json()})
        except Exception as exc:  # reported per kernel, so one broken kernel does not hide the others
            out.append({"ok": False, "name": spec.name, "error": f"{type(exc).__name__}: {exc}"})
    return json.dumps(out)


# Compiler subprocesses `static_reports` runs at once (at most one per CPU): Triton's frontend, LLVM and ptxas are
# CPU-bound and each spec compiles on its own, so on CI's 2 cores two children take the ~60 specs in about half the
# time of one (a cold Triton cache: ~190 s in one child).
STATIC_WORKERS = 4


def static_reports(specs: list[KernelSpec], extra_paths: list[str] | None = None,
                   timeout_s: float = 900, workers: int | None = None) -> list[StaticReport]:
    """Compile every spec for sm_90 in subprocesses (TRITON_INTERPRET removed; `workers` of them at once, default
    min(STATIC_WORKERS, CPUs), each given every workers-th spec) and inspect the binaries. Reports come in the
    specs' order.

    extra_paths are prepended to the subprocesses' PYTHONPATH (for kernels outside the installed packages).
    Raises VimbenchError if any kernel fails to compile, or a subprocess fails or runs past timeout_s."""
    if not specs:
        return []
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # The children compile the kernels of this process's checkout, whatever the current folder is.
    paths = [*(extra_paths or []), str(Path(__file__).resolve().parents[2])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    count = max(1, min(len(specs), workers or min(STATIC_WORKERS, os.cpu_count() or 1)))
    shards = [specs[i::count] for i in range(count)]
    procs = [subprocess.Popen([sys.executable, "-m", "vimbench.kerneltools.static_check"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in shards]
    try:
        with ThreadPoolExecutor(len(procs)) as pool:  # one reader per child, so no child blocks on a full pipe
            outputs = list(pool.map(lambda job: job[0].communicate(json.dumps([s.to_json() for s in job[1]]),
                                                                   timeout=timeout_s), zip(procs, shards)))
    except subprocess.TimeoutExpired as exc:
        raise VimbenchError(f"the static-check compiler subprocesses ran past {timeout_s:.0f} s") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = []
    for proc, (stdout, stderr) in zip(procs, outputs):
        if proc.returncode != 0:
            raise VimbenchError(f"the static-check compiler subprocess failed:\n{stderr[-2000:]}")
        results += json.loads(stdout.strip().splitlines()[-1])
    errors = [f"{r['name']}: {r['error']}" for r in results if not r["ok"]]
    if errors:
        raise VimbenchError("kernels failed to compile for sm_90:\n" + "\n".join(errors))
    order = {spec.name: i for i, spec in enumerate(specs)}
    results.sort(key=lambda r: order.get(r["name"], len(order)))  # the specs' order, not the shards'
    return [StaticReport(**{k: v for k, v in r.items() if k not in ("ok", "ex2_per_state_element")})
            for r in results]


# ---------------------------------------------------------------------------------------------- expectations

@dataclass
class Finding:
    kernel: str
    status: str          # ok | fail | new | improved | missing
    messages: list[str] = field(default_factory=list)


def compare_static(reports: list[StaticReport], expected: dict[str, dict[str, Any]],
                   register_margin: int = REGISTER_MARGIN) -> list[Finding]:
    """Pure comparison of compiled kernels with expectations ({name: report-as-json}); see module docstring."""
    findings = []
    for rep in reports:
        exp = expected.get(rep.name)
        fails, better, notes = [], [], []
        spill = f"{rep.stack_bytes} B stack + {rep.local_bytes} B local memory, {rep.stl} STL / {rep.ldl} LDL"
        if rep.spills and rep.stack_bytes + rep.local_bytes > rep.accepted_spill_bytes:
            fails.append(f"spills: {spill}" + (f" (accepted: up to {rep.accepted_spill_bytes} B)"
                                                if rep.accepted_spill_bytes else ""))
        elif rep.spills:
            notes.append(f"spill accepted (up to {rep.accepted_spill_bytes} B, measured faster): {spill}")
        if exp is None:
            findings.append(Finding(rep.name, "fail" if fails else "new",
                                    fails + ["no expectation recorded; run `vimbench kernels static --update`"]))
            continue
        if rep.registers > exp["registers"] + register_margin:
            fails.append(f"registers {rep.registers} > expected {exp['registers']} + {register_margin}")
        elif rep.registers < exp["registers"] - register_margin:
            better.append(f"registers {rep.registers} < expected {exp['registers']}")
        if rep.ldg_128 < exp["ldg_128"]:
            fails.append(f"128-bit loads {rep.ldg_128} < expected {exp['ldg_128']}")
        elif rep.ldg_128 + rep.ldg_64 < exp["ldg_128"] + exp["ldg_64"]:
            fails.append(f"vector loads (128+64-bit) {rep.ldg_128 + rep.ldg_64} < expected "
                         f"{exp['ldg_128'] + exp['ldg_64']}")
        elif rep.ldg_128 > exp["ldg_128"]:
            better.append(f"128-bit loads {rep.ldg_128} > expected {exp['ldg_128']}")
        if rep.shfl > exp.get("shfl", rep.shfl):
            fails.append(f"SHFL {rep.shfl} > expected {exp['shfl']}: more cross-lane traffic (a layout change?)")
        exp_ratio = exp.get("ex2_per_state_element")
        if rep.ex2_per_state_element is not None and exp_ratio is not None:
            if rep.ex2_per_state_element > exp_ratio * (1 + 1e-9):
                fails.append(f"MUFU.EX2 per state element {rep.ex2_per_state_element:.3g} > expected {exp_ratio:.3g}")
            elif rep.ex2_per_state_element < exp_ratio:
                better.append(f"MUFU.EX2 per state element {rep.ex2_per_state_element:.3g} < expected {exp_ratio:.3g}")
        elif rep.mufu_ex2 > exp["mufu_ex2"]:
            fails.append(f"MUFU.EX2 {rep.mufu_ex2} > expected {exp['mufu_ex2']}")
        status = "fail" if fails else ("improved" if better else "ok")
        findings.append(Finding(rep.name, status, fails + better + notes))
    seen = {rep.name for rep in reports}
    for name in expected:
        if name not in seen:
            findings.append(Finding(name, "missing", ["expected but no registered op compiles it (removed? run --update)"]))
    return findings


def load_expectations(path: Path) -> dict[str, Any]:
    return load_checked_json(path, EXPECTATIONS_SCHEMA, "kernels", "static expectation file",
                             f"create it with `vimbench kernels static --update --expect {path}`")


def write_expectations(path: Path, reports: list[StaticReport]) -> dict[str, Any]:
    import triton

    data = {
        "schema": EXPECTATIONS_SCHEMA,
        "triton": triton.__version__,
        "arch": f"sm_{ARCH}",
        "register_margin": REGISTER_MARGIN,
        "kernels": {r.name: r.to_json() for r in sorted(reports, key=lambda r: r.name)},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


if __name__ == "__main__":
    print(_worker(sys.stdin.read()))
