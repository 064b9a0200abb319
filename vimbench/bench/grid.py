"""The sweep grid: the value grammar of --res/--batch/--points/--models/--dtype/--attn/--backend/--mode/--compile/
--vim-slice, and case expansion.

Resolution grammar (pieces separated by commas, combined, deduplicated and sorted):
    224..2048      the standard ladder inside the bounds: 224, 384, 512, 640, 738, 896, 1024, 1248, 1536, 2048
    256..1024:128  every 128 px from 256 up to 1024
    224,512,738    explicit sizes
Any size of at least one 16 px patch is allowed; the model sees img // 16 patches per side (738 px -> 46 x 46).

Points: explicit (resolution, batch) pairs written RESxBATCH, e.g. 224x128,1248x8; they replace the product
res x batch (a training sweep pairs a large batch with a small resolution and a small batch with a large one).

Every parser accepts a string (the CLI), an int, or a list of either (a suite file), and raises VimbenchError
with one line saying what is wrong and what would be accepted.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any, Iterable

from vimbench.bench import compiler
from vimbench.errors import VimbenchError
from vimbench.geometry import PATCH
from vimbench.precision import DTYPE_ALIASES as _DTYPE_ALIASES
from vimbench.precision import DTYPES
from vimbench.results import CaseKey
from vimbench.settings import BACKENDS

# The paper's points up to 1248 px, then 1536 and 2048, where Vim-Ti and DeiT-Ti cross over today.
LADDER = (224, 384, 512, 640, 738, 896, 1024, 1248, 1536, 2048)
MAX_RES = 8192          # 262,144 tokens: far beyond any GPU's memory for these models
ATTENTIONS = ("sdpa", "eager")
DEVICES = ("auto", "cuda", "cpu")
MODES = ("infer", "train")   # train: one optimizer step per timed call (bench/train.py)
MIN_ITERS = 5           # fewer samples make p20/p80 meaningless
_RES_HINT = "use e.g. 224..2048 (standard ladder), 256..1024:128 (every 128 px) or 224,512,738"


def _pieces(value: Any, what: str, hint: str) -> list[str]:
    """Split a CLI string, an int or a list of them into stripped comma pieces."""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    text = str(value).strip()
    pieces = [p.strip() for p in text.split(",")]
    if not text:
        raise VimbenchError(f"the {what} is empty; {hint}")
    if not all(pieces):
        raise VimbenchError(f"the {what} {text!r} has an empty item; {hint}")
    return pieces


def _int(text: str, what: str, context: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise VimbenchError(f"{what} {context!r}: {text!r} is not a whole number") from None


def _check_res(value: int, context: str) -> int:
    if value < PATCH:
        raise VimbenchError(f"resolution {context!r}: {value} px is smaller than the {PATCH} px patch; "
                            f"use at least {PATCH}")
    if value > MAX_RES:
        raise VimbenchError(f"resolution {context!r}: {value} px is above the {MAX_RES} px limit")
    return value


def _res_piece(piece: str) -> list[int]:
    if ".." not in piece:
        return [_check_res(_int(piece, "resolution", piece), piece)]
    lo_text, _, rest = piece.partition("..")
    hi_text, colon, step_text = rest.partition(":")
    lo = _check_res(_int(lo_text.strip(), "resolution range", piece), piece)
    hi = _check_res(_int(hi_text.strip(), "resolution range", piece), piece)
    if hi < lo:
        raise VimbenchError(f"resolution range {piece!r} ends below its start; write it as {hi}..{lo}")
    if not colon:
        values = [r for r in LADDER if lo <= r <= hi]
        if not values:
            raise VimbenchError(f"resolution range {piece!r} holds no size of the standard ladder "
                                f"({', '.join(map(str, LADDER))}); add a step, e.g. {lo}..{hi}:32")
        return values
    step = _int(step_text.strip(), "resolution step", piece)
    if step <= 0:
        raise VimbenchError(f"resolution range {piece!r}: the step must be a positive number of px")
    return list(range(lo, hi + 1, step))


def parse_res(value: Any) -> tuple[int, ...]:
    """Resolutions in px, sorted and deduplicated (grammar in the module docstring)."""
    pieces = _pieces(value, "resolution list", _RES_HINT)
    return tuple(sorted({r for piece in pieces for r in _res_piece(piece)}))


def off_patch_resolutions(resolutions: Iterable[int]) -> list[tuple[int, int]]:
    """(res, px the model sees) for each resolution that is not a multiple of the patch (1250 -> 1248)."""
    return [(r, r // PATCH * PATCH) for r in resolutions if r % PATCH]


def parse_batch(value: Any) -> tuple[int, ...]:
    """Batch sizes: positive whole numbers, sorted and deduplicated. The batch is never changed afterwards."""
    out = set()
    for piece in _pieces(value, "batch list", "use e.g. 1,8,64"):
        batch = _int(piece, "batch", piece)
        if batch <= 0:
            raise VimbenchError(f"batch {batch} is not a positive number of images; use e.g. --batch 1,8,64")
        out.add(batch)
    return tuple(sorted(out))


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_models(value: Any) -> tuple[str, ...]:
    """Model aliases, in the order given; full names are accepted and mapped to their alias."""
    from vimbench.models.registry import get_spec

    pieces = _pieces(value, "model list", "use e.g. vim_t,deit_t (vimbench models lists them)")
    return _dedupe(get_spec(piece).alias for piece in pieces)


def _choices(value: Any, what: str, allowed: tuple[str, ...], aliases: dict[str, str] | None = None):
    out = []
    for piece in _pieces(value, f"{what} list", f"choose from {', '.join(allowed)}"):
        name = piece.lower()
        name = (aliases or {}).get(name, name)
        if name not in allowed:
            raise VimbenchError(f"unknown {what} {piece!r}; choose from {', '.join(allowed)}")
        out.append(name)
    return _dedupe(out)


def parse_dtypes(value: Any) -> tuple[str, ...]:
    """Precision modes: fp32 (TF32 off), tf32, bf16 and fp16 (autocast)."""
    return _choices(value, "dtype", DTYPES, _DTYPE_ALIASES)


def parse_attn(value: Any) -> tuple[str, ...]:
    """DeiT attention paths: sdpa (timm's fused attention) and eager (explicit softmax(QK^T)V)."""
    return _choices(value, "attention", ATTENTIONS)


def parse_backends(value: Any) -> tuple[str, ...]:
    """Vim op backends: torch (reference ops) and triton (our kernels)."""
    return _choices(value, "backend", BACKENDS)


def parse_modes(value: Any) -> tuple[str, ...]:
    """What a timed call is: infer (one forward) and/or train (one training step: forward, loss, backward, AdamW)."""
    return _choices(value, "mode", MODES)


def parse_vim_slice(value: Any) -> tuple[int, ...]:
    """Images per Vim mixer slice at inference, in the order given; 0 (or off) = the whole batch at once."""
    out = []
    for piece in _pieces(value, "vim-slice list", "use e.g. 0,16 (0: no slicing)"):
        size = 0 if piece.lower() in ("off", "none") else _int(piece, "vim slice", piece)
        if size < 0:
            raise VimbenchError(f"vim slice {size} is negative; use 0 (no slicing) or a number of images, e.g. 16")
        out.append(size)
    return tuple(dict.fromkeys(out))


def fuses_dt_proj(mode: str) -> bool:
    """Whether memory mode `mode` always fuses dt_proj into the Triton scan (lean, lean-gated): backend triton
    only. (default and split fuse it only in host-bound calls, where the backend can.)"""
    from vimbench.models.vim import MEMORY_MODES

    return MEMORY_MODES[mode][0] is True


def _fused_memory_modes(modes: tuple[str, ...]) -> list[str]:
    """The memory modes among `modes` that fuse dt_proj into the Triton scan (`fuses_dt_proj`)."""
    return [m for m in modes if fuses_dt_proj(m)]


def parse_vim_memory(value: Any) -> tuple[str, ...]:
    """Vim mixers' inference memory modes (vimbench.models.vim.MEMORY_MODES), in the order given."""
    from vimbench.models.vim import MEMORY_MODES

    return _choices(value, "vim memory mode", tuple(MEMORY_MODES))


def parse_points(value: Any) -> tuple[tuple[int, int], ...]:
    """(resolution px, batch) pairs written RESxBATCH, in the order given, deduplicated."""
    hint = "write resolution x batch pairs, e.g. 224x128,1248x8"
    out = []
    for piece in _pieces(value, "point list", hint):
        res_text, sep, batch_text = piece.lower().partition("x")
        if not sep:
            raise VimbenchError(f"point {piece!r} is not RESxBATCH; {hint}")
        res = _check_res(_int(res_text.strip(), "point resolution", piece), piece)
        batch = _int(batch_text.strip(), "point batch", piece)
        if batch <= 0:
            raise VimbenchError(f"point {piece!r}: batch {batch} is not a positive number of images")
        out.append((res, batch))
    return tuple(dict.fromkeys(out))


def parse_device(value: str, cuda_available: bool, plan_only: bool = False) -> str:
    """auto -> cuda when a GPU is present, else cpu. Asking for cuda without one is an error, unless the sweep is
    only being planned (a dry run may preview a GPU sweep anywhere)."""
    device = str(value).strip().lower()
    if device not in DEVICES:
        raise VimbenchError(f"unknown device {value!r}; choose from {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device == "cuda" and not cuda_available and not plan_only:
        raise VimbenchError("--device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")
    return device


def check_counts(warmup: int, iters: int) -> None:
    if warmup < 1:
        raise VimbenchError(f"--warmup {warmup}: at least 1 warm-up call is needed (the first call is never timed)")
    if iters < MIN_ITERS:
        raise VimbenchError(f"--iters {iters}: at least {MIN_ITERS} timed calls are needed for p20/p50/p80")


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep, validated. Expand it into cases with `expand_cases`.

    points, when given, replace the product res x batch (res and batch are then empty). also: further blocks
    (suite [[also]] tables), each a SweepConfig on the same device with the same warmup and iters, whose cases
    run after this one's (cases already listed are not repeated)."""
    models: tuple[str, ...]
    res: tuple[int, ...]
    batch: tuple[int, ...]
    dtypes: tuple[str, ...] = ("fp32",)
    attn: tuple[str, ...] = ("sdpa",)
    backends: tuple[str, ...] = ("torch",)
    device: str = "cpu"
    modes: tuple[str, ...] = ("infer",)
    warmup: int = 3
    iters: int = 10
    compile: tuple[str, ...] = (compiler.NONE,)   # the --compile axis (vimbench.bench.compiler)
    compile_backend: str = "inductor"
    h2d: bool = False
    vim_slice: tuple[int, ...] = (0,)             # images per Vim mixer slice at inference; 0 = whole batch
    vim_memory: tuple[str, ...] = ("default",)    # Vim mixers' inference memory modes (models.vim.MEMORY_MODES)
    points: tuple[tuple[int, int], ...] = ()
    also: tuple["SweepConfig", ...] = ()

    def __post_init__(self):
        check_counts(self.warmup, self.iters)
        if self.points and (self.res or self.batch):
            raise VimbenchError("give either points (resolution x batch pairs) or res and batch, not both")
        for block in self.also:
            if (block.device, block.warmup, block.iters, block.compile_backend) != \
                    (self.device, self.warmup, self.iters, self.compile_backend):
                raise VimbenchError("every block of a sweep runs on one device with one warmup and iters (and "
                                    "one compile_backend); set them once, at the top of the suite")
            if block.also:
                raise VimbenchError("an [[also]] block cannot hold further blocks")
        if self.device not in ("cuda", "cpu"):
            raise VimbenchError(f"device {self.device!r} must be resolved to cuda or cpu before a sweep")
        if compiler.CUDA_GRAPHS in self.compile and self.h2d:
            raise VimbenchError("--h2d cannot be combined with --compile cuda-graphs (a replayed graph has a fixed "
                                "input)")
        if self.h2d and self.device != "cuda":
            raise VimbenchError("--h2d times a host-to-device copy and needs a CUDA device")
        compiler.check_mode_backend(self.compile, self.compile_backend)
        axes = ("models", "dtypes", "attn", "backends", "modes", "compile", "vim_slice", "vim_memory") + \
            (() if self.points else ("res", "batch"))
        for name in axes:
            if not getattr(self, name):
                raise VimbenchError(f"the sweep has no {name}; give at least one")

    def pairs(self) -> tuple[tuple[int, int], ...]:
        """The (resolution, batch) pairs this block runs: its points, or the product res x batch."""
        return self.points or tuple(product(self.res, self.batch))

    def to_suite(self) -> dict[str, Any]:
        """The sweep in suite-file form (the keys of suites/*.toml), as written into a results header."""
        shape: dict[str, Any] = ({"points": [f"{r}x{b}" for r, b in self.points]} if self.points else
                                 {"res": list(self.res), "batch": list(self.batch)})
        suite = {"models": list(self.models), **shape, "dtype": list(self.dtypes), "attn": list(self.attn),
                 "backend": list(self.backends), "device": self.device, "mode": list(self.modes),
                 "warmup": self.warmup, "iters": self.iters, "compile": list(self.compile),
                 "compile_backend": self.compile_backend, "h2d": self.h2d, "vim_slice": list(self.vim_slice),
                 "vim_memory": list(self.vim_memory)}
        if self.also:
            suite["also"] = [{k: v for k, v in block.to_suite().items() if k not in SWEEP_WIDE_KEYS}
                             for block in self.also]
        return suite


# Keys that hold for a whole sweep: a suite sets them at its top, never inside an [[also]] block.
SWEEP_WIDE_KEYS = ("description", "device", "warmup", "iters", "compile_backend")


@dataclass(frozen=True)
class Dropped:
    """A part of the cartesian product that was not run, and why."""
    what: str
    reason: str


_TRAIN_DROPS = {
    "h2d": "training steps are timed with the batch already on the device; drop --h2d for mode train",
}

CPU_DTYPE_DROPS = {
    "tf32": "TF32 is a CUDA tensor-core mode; on CPU it would repeat fp32",
    "fp16": "fp16 autocast is not a meaningful CPU benchmark (emulated on most CPUs); use bf16 or fp32",
}


def expand_cases(config: SweepConfig) -> tuple[list[CaseKey], list[Dropped]]:
    """The cartesian product mode x models x (res, batch) x dtype x (Vim: backend | DeiT: attn) x compile x Vim
    slice, in that order,
    minus combinations that mean nothing, each stated once with its reason; then the cases of each [[also]]
    block that are not listed yet."""
    cases, dropped = _expand_block(config)
    for block in config.also:
        more, why = _expand_block(block)
        cases += more
        dropped += [d for d in why if d not in dropped]
    return list(dict.fromkeys(cases)), dropped


def _expand_block(config: SweepConfig) -> tuple[list[CaseKey], list[Dropped]]:
    from vimbench.models.registry import get_spec

    dropped: list[Dropped] = []
    modes = config.modes
    if "train" in modes:
        flags = [f for f in _TRAIN_DROPS if getattr(config, f)]
        for flag in flags:
            dropped.append(Dropped(f"mode train with {flag.replace('_', '-')}", _TRAIN_DROPS[flag]))
        if flags:
            modes = tuple(m for m in modes if m != "train")
    compile_modes = config.compile
    dtypes = config.dtypes
    backends = config.backends
    if config.device == "cpu":
        graph_modes = [m for m in compile_modes if m in compiler.GRAPH_MODES]
        if graph_modes:
            dropped.append(Dropped(f"compile {','.join(graph_modes)} on cpu",
                                   "each needs a CUDA device for its CUDA-graph replays (use --device cuda); on CPU "
                                   "reduce-overhead would repeat default and max-autotune its no-cudagraphs twin"))
            compile_modes = tuple(m for m in compile_modes if m not in compiler.GRAPH_MODES)
        for dtype in dtypes:
            if dtype in CPU_DTYPE_DROPS:
                dropped.append(Dropped(f"dtype {dtype} on cpu", CPU_DTYPE_DROPS[dtype]))
        dtypes = tuple(d for d in dtypes if d not in CPU_DTYPE_DROPS)
        if "triton" in backends:
            dropped.append(Dropped("backend triton on cpu",
                                   "the Triton kernels need a CUDA GPU (on CPU only the slow interpreter runs them)"))
            backends = tuple(b for b in backends if b != "triton")

    families = {alias: get_spec(alias).family for alias in config.models}
    host_sync_graphs = compiler.CUDA_GRAPHS in compile_modes and "torch" in backends and \
        any(f == "vim" for f in families.values())
    if host_sync_graphs:
        dropped.append(Dropped("backend torch with compile cuda-graphs",
                               "the torch reference scan reads a value back to the host (its chunk length), "
                               "which a CUDA graph cannot capture; use --backend triton (or a torch.compile "
                               "mode, which splits the graph there)"))
    vims = [m for m in config.models if families[m] == "vim"]
    deits = [m for m in config.models if families[m] == "deit"]
    peers = [m for m in config.models if families[m] == "timm"]
    if peers and config.attn and config.attn != ("sdpa",):
        dropped.append(Dropped(f"attn {','.join(config.attn)} x {','.join(peers)}",
                               "timm peers run once, with timm's own attention"))
    # A timm peer is built at each resolution where timm allows it; elsewhere it is dropped with timm's reason.
    unbuildable: set[tuple[str, int]] = set()
    if peers:
        from vimbench.models.registry import get_spec as spec_of
        from vimbench.models.timm_adapter import build_problem

        for model in peers:
            for res in config.res:
                problem = build_problem(spec_of(model).official_name, res)
                if problem:
                    unbuildable.add((model, res))
                    dropped.append(Dropped(f"{model} at {res} px", problem))
    if vims and config.attn:
        dropped.append(Dropped(f"attn {','.join(config.attn)} x {','.join(vims)}",
                               "the attention path applies to DeiT only; Vim runs once per backend"))
    if deits and any(config.vim_slice):
        dropped.append(Dropped(f"vim-slice {','.join(map(str, config.vim_slice))} x {','.join(deits)}",
                               "batch slicing is a Vim mixer option; DeiT runs once, unsliced"))
    memory_modes = [m for m in config.vim_memory if m != "default"]
    if deits and memory_modes:
        dropped.append(Dropped(f"vim-memory {','.join(memory_modes)} x {','.join(deits)}",
                               "memory modes are a Vim mixer option; DeiT runs once"))
    fused_modes = _fused_memory_modes(config.vim_memory)
    if vims and fused_modes and "torch" in backends:
        dropped.append(Dropped(f"vim-memory {','.join(fused_modes)} x backend torch",
                               "lean modes fuse dt_proj into the Triton scan; the torch backend has no fused scan "
                               "(use split there)"))
    if "train" in modes and memory_modes and vims:
        dropped.append(Dropped(f"vim-memory {','.join(memory_modes)} x mode train",
                               "memory modes change inference only; training steps run once, as default"))
    if deits and config.backends:
        dropped.append(Dropped(f"backend {','.join(config.backends)} x {','.join(deits)}",
                               "the op backend applies to Vim only; DeiT runs through timm once per attention path"))

    cases = []
    for mode, model, (res, batch), dtype in product(modes, config.models, config.pairs(), dtypes):
        if (model, res) in unbuildable:
            continue
        vim = families[model] == "vim"
        if vim:
            impls = [(b, None) for b in backends]
        elif families[model] == "timm":
            impls = [("timm", None)]
        else:
            impls = [("timm", a) for a in config.attn]
        # slicing is an inference option; a slice at least as large as the batch is no slicing: run as 0 once
        slices = dict.fromkeys(s if s < batch else 0 for s in config.vim_slice) if vim and mode == "infer" \
            else {0: None}
        memories = config.vim_memory if vim and mode == "infer" else ("default",)
        for (implementation, attn), execution, vim_slice, vim_memory in product(impls, compile_modes, slices,
                                                                                 memories):
            if host_sync_graphs and implementation == "torch" and execution == compiler.CUDA_GRAPHS:
                continue
            if vim_memory in fused_modes and implementation == "torch":
                continue
            cases.append(CaseKey(model=model, res=res, batch=batch, dtype=dtype, implementation=implementation,
                                 attn=attn, device=config.device, mode=mode, compile=execution, h2d=config.h2d,
                                 vim_slice=vim_slice, vim_memory=vim_memory))
    return cases, dropped
