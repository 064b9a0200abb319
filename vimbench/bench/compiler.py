"""How a case's forward is executed: the `--compile` axis (for a training case, how its step is: bench/train.py).

One axis, one concept (the forward as launched, traced or captured), values:
    none                         eager: every op launched from Python on each call (the default)
    cuda-graphs                  the eager forward captured once by vimbench into a CUDA graph; replays are timed.
                                 This is the former `--cuda-graphs` switch: results files that stored
                                 `cuda_graphs: true` load as this mode.
    default, max-autotune,       torch.compile(model, mode=MODE, dynamic=False, fullgraph=False) with the compile
    max-autotune-no-cudagraphs,  backend of the sweep (inductor unless a suite says otherwise). max-autotune and
    reduce-overhead              reduce-overhead replay CUDA graphs that inductor records itself.

Compilation, autotuning and graph capture are never timed: they happen in the first (untimed) call and the warm-up
calls. The first call's wall time goes into the row's `compile_s` column (for none it is the Triton JIT and lazy
initialisation). Graph breaks and the number of compiled graphs are counted from dynamo's counters and recorded.

Modes that differ only by CUDA graphs (cuda-graphs, reduce-overhead, max-autotune) need a CUDA device; the
grid drops them on CPU with that reason. The debug backends `eager` and `aot_eager` (dynamo tracing without
inductor; fast on a CPU, used by the tests) take only the default mode: torch has no meaning for the others there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vimbench.errors import VimbenchError

NONE = "none"
CUDA_GRAPHS = "cuda-graphs"
TORCH_COMPILE_MODES = ("default", "max-autotune", "max-autotune-no-cudagraphs", "reduce-overhead")
COMPILE_MODES = (NONE, CUDA_GRAPHS, *TORCH_COMPILE_MODES)
# Modes that replay CUDA graphs (vimbench's own capture, or inductor's cudagraph trees).
GRAPH_MODES = (CUDA_GRAPHS, "max-autotune", "reduce-overhead")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
_ALIASES = {"eager": NONE, "off": NONE, "graphs": CUDA_GRAPHS, "cudagraphs": CUDA_GRAPHS}
# Inductor settings that change what a compiled forward runs; recorded in every compiled row and the header.
INDUCTOR_KEYS = ("max_autotune", "max_autotune_gemm", "max_autotune_pointwise", "max_autotune_gemm_backends",
                 "coordinate_descent_tuning", "triton.cudagraphs", "triton.cudagraph_trees", "freezing",
                 "epilogue_fusion", "fx_graph_cache", "autotune_local_cache", "split_reductions", "cpp_wrapper")


def parse_compile(value: Any) -> tuple[str, ...]:
    """Compile modes in the order given (a CLI string, a list from a suite); `eager`/`off` mean none."""
    if isinstance(value, bool):  # a suite's `compile = false`
        return (NONE,)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    text = str(value).strip()
    hint = f"choose from {', '.join(COMPILE_MODES)}"
    if not text:
        raise VimbenchError(f"the compile list is empty; {hint}")
    out = []
    for piece in text.split(","):
        name = _ALIASES.get(piece.strip().lower(), piece.strip().lower())
        if not name:
            raise VimbenchError(f"the compile list {text!r} has an empty item; {hint}")
        if name not in COMPILE_MODES:
            raise VimbenchError(f"unknown compile mode {piece.strip()!r}; {hint}")
        out.append(name)
    return tuple(dict.fromkeys(out))


def parse_compile_backend(value: Any) -> str:
    name = str(value).strip().lower()
    if name not in COMPILE_BACKENDS:
        raise VimbenchError(f"unknown compile backend {value!r}; choose from {', '.join(COMPILE_BACKENDS)} "
                            "(inductor is the real compiler; eager and aot_eager only check tracing)")
    return name


def check_mode_backend(modes: tuple[str, ...], backend: str) -> None:
    """The debug backends take only the default mode; torch would reject the others."""
    if backend == "inductor":
        return
    other = [m for m in modes if m in TORCH_COMPILE_MODES and m != "default"]
    if other:
        raise VimbenchError(f"compile mode {other[0]} needs the inductor backend; with compile_backend {backend} "
                            "use --compile default (or none)")


def is_torch_compile(mode: str) -> bool:
    return mode in TORCH_COMPILE_MODES


def inductor_settings(mode: str | None = None, freeze: bool = False) -> dict[str, Any]:
    """The inductor settings that matter, as a compile of `mode` applies them (mode options over the global
    config, then freezing when `freeze`); the global config alone when mode is None."""
    import torch._inductor.config as config

    settings = {}
    for key in INDUCTOR_KEYS:
        obj, _, attr = key.rpartition(".")
        holder = getattr(config, obj) if obj else config
        if hasattr(holder, attr):
            value = getattr(holder, attr)
            settings[key] = value if isinstance(value, (bool, int, float, str, type(None))) else str(value)
    if mode is not None:
        settings.update(_mode_options(mode))
    if freeze:
        settings["freezing"] = True
    return settings


def header_settings(modes: tuple[str, ...], backend: str) -> dict[str, Any]:
    """What a results header records about compilation."""
    import torch

    compiled = [m for m in modes if is_torch_compile(m)]
    out: dict[str, Any] = {"modes": list(modes), "backend": backend, "dynamic": False, "fullgraph": False,
                           "torch": torch.__version__}
    if compiled and backend == "inductor":
        out["inductor"] = inductor_settings()
        # inference cases compile with freezing (the runner), training cases without
        out["inductor_by_mode"] = {m: inductor_settings(m) for m in compiled}
        out["inference_freezing"] = True
    return out


@dataclass
class CompileStats:
    """Counted by dynamo over the first call: compiled graphs and graph breaks (with their reasons)."""
    graphs: int = 0
    graph_breaks: int = 0
    break_reasons: list[str] | None = None


def compile_model(model, mode: str, backend: str = "inductor", freeze: bool = False):
    """model wrapped by torch.compile for `mode` (one of TORCH_COMPILE_MODES). dynamic=False: each case has one
    fixed shape, so a shape change must recompile rather than silently run a generic kernel.

    freeze (inductor only; inference): inductor's freezing, the setting torch documents for compiled inference:
    the weights become constants of the compiled graph and what is computed from weights alone (Vim's stacked
    and reordered mixer weights, the casts of every model's weights under autocast) is folded at compile time.
    The compiled model then runs the weights it was compiled with. Applied to every model alike; see
    `FreezingCompile` for how (passing freezing among torch.compile's options alone does nothing)."""
    import torch

    if not is_torch_compile(mode):
        raise ValueError(f"{mode!r} is not a torch.compile mode")
    check_mode_backend((mode,), backend)
    if freeze and backend == "inductor":
        # torch.compile takes a mode or options, not both: the mode's own options plus freezing
        return FreezingCompile(torch.compile(model, backend=backend, dynamic=False, fullgraph=False,
                                             options={**_mode_options(mode), "freezing": True}))
    return torch.compile(model, mode=None if mode == "default" else mode, backend=backend, dynamic=False,
                         fullgraph=False)


class FreezingCompile:
    """A torch.compile'd model whose compilation runs with inductor's global `freezing` flag set.

    Why: dynamo decides while it traces whether parameters enter the graph as constants (graph attributes that
    inductor can freeze) or as inputs, by reading the GLOBAL inductor config (torch._dynamo.utils.
    is_parameter_freezing); torch.compile's `options` only apply later, inside inductor. With
    options={"freezing": True} alone the parameters stay graph inputs and nothing is frozen: every compiled call
    rebuilt Vim's stacked mixer weights (4 extra kernels per layer) and re-cast every model's weights under
    autocast (found 2026-12-02 in inductor's output code on CPU, torch 2.14; on the H200, torch 2.11, the fix
    took Vim-Ti's reduce-overhead batch-1 latency from 2.65 to 1.52 ms, DeiT-Ti's from 0.85 to 0.49). Compilation
    happens in the first call (tracing is lazy), so that call runs under config.patch(freezing=True); later
    calls go straight to the compiled model (the patch costs ~14 us of host time, too much for a timed call)."""

    def __init__(self, compiled):
        self.compiled = compiled
        self._compiled_once = False

    def __call__(self, *args, **kwargs):
        if self._compiled_once:
            return self.compiled(*args, **kwargs)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            out = self.compiled(*args, **kwargs)
        self._compiled_once = True
        return out


def _mode_options(mode: str) -> dict[str, Any]:
    import torch._inductor

    return {} if mode == "default" else dict(torch._inductor.list_mode_options(mode))


def reset() -> None:
    """Forget compiled code and dynamo's counters. Called around every compiled case: dynamo caches per code
    object, so successive models would pile up recompiles of the same forward and, past the recompile limit,
    silently fall back to eager. Also drops inductor's loaded output code (`_drop_inductor_output_code`): a frozen
    compile keeps its constants there, which outlive the model otherwise."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    _drop_inductor_output_code()


def _drop_inductor_output_code() -> None:
    """Unload the Python modules inductor generated and imported. Each compiled graph's output code is a module
    registered in sys.modules, and with freezing its globals hold the graph's constants (the weights cast to the
    autocast dtype, Vim's stacked mixer weights): after dynamo's reset and the model's deletion those stayed
    allocated for the rest of the process, ~11-18 MiB per compiled Vim-Ti/DeiT-Ti case, counted into every later
    case's baseline and peak (results/headline-compiled-h200-2026-12-02.jsonl). A later compile that needs the same
    code loads it again from inductor's on-disk cache."""
    import os
    import sys

    if "torch._inductor.codecache" not in sys.modules:  # inductor never loaded: it generated nothing
        return
    try:
        from torch._inductor.codecache import PyCodeCache
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:
        return
    PyCodeCache.cache_clear()
    root = cache_dir()
    roots = tuple({os.path.join(root, ""), os.path.join(os.path.realpath(root), "")})
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.startswith(roots):
            del sys.modules[name]


def stats() -> CompileStats:
    """Dynamo's counters since the last reset()."""
    from torch._dynamo.utils import counters

    breaks = counters.get("graph_break", {})
    graphs = counters.get("stats", {}).get("unique_graphs", 0)
    reasons = sorted({str(r).strip().splitlines()[0][:200] for r in breaks})
    return CompileStats(graphs=int(graphs), graph_breaks=int(sum(breaks.values())), break_reasons=reasons or None)
