"""Training mode: what one timed training step is, how it is timed, and what a step row records.

One step (the convention of timm's benchmark.py train mode, ../shared/spec/training.md):
    optimizer.zero_grad(set_to_none=True)
    with autocast (bf16/fp16; none for fp32/tf32): loss = cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()                                   # AdamW
The model is in train() mode; images and random labels are already on the device. fp16 runs without a
GradScaler (loss scaling adds an unscale pass and a host sync per step; it is not part of what is timed).

Timing: one CUDA-event pair around each step (device synchronized before each step, as in inference), plus one
event recorded between the loss and loss.backward(): it splits the step into "forward" (zero_grad + forward +
loss) and "backward" (loss.backward() + optimizer.step()) without a synchronization inside the step, so the step
time is undisturbed. On CPU, perf_counter at the same three points.

With compile "cuda-graphs" (vimbench.bench.compiler) the whole step (zero_grad, forward, loss, backward, AdamW with
capturable=True, its step counts on the device) is captured once into a CUDA graph after the warm-up steps, and
graph replays are timed with one CUDA-event pair each; a replay is one step, so there is no forward/backward split.
The graph removes the host's per-op cost (Python, autograd, launches), which bounds small-image steps.

With a torch.compile mode (default, max-autotune-no-cudagraphs, reduce-overhead, max-autotune;
`compile_train_step`) the model is wrapped by torch.compile (dynamic=False, no freezing: the weights are trained):
AOTAutograd compiles its forward and backward. zero_grad, the loss and the AdamW step stay eager, for every model
alike. The modes with CUDA graphs (reduce-overhead, max-autotune) replay inductor's own graphs of the forward and of
the backward; each step then starts with torch.compiler.cudagraph_mark_step_begin().

The first step is never timed: it allocates the gradients and the AdamW state and, on the triton backend,
compiles the backward kernels (with a torch.compile mode, it also compiles the model). It also checks that every
trainable parameter received a gradient: a backend whose backward is disconnected fails the case (status "error")
instead of timing a step that trains nothing.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vimbench.bench.grid import MIN_ITERS
from vimbench import precision
from vimbench.bench import compiler
from vimbench.bench.timing import CUDA_EVENTS, PERF_COUNTER, Timing, percentile, time_graph_replays
from vimbench.errors import VimbenchError

OPTIMIZER = "adamw"
LEARNING_RATE = 1e-3
LOSS = "cross_entropy"
ACTIVATION_CHECKPOINTING = False   # no layer recomputes its activations in the backward pass


@dataclass
class TrainStep:
    """One training step over a fixed batch already on the device. Call it: returns the (detached) loss."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor            # (B, 3, H, W) fp32
    labels: torch.Tensor            # (B,) int64 in [0, num_classes)
    autocast_dtype: torch.dtype | None = None
    capturable: bool = False        # built for CUDA-graph capture (AdamW capturable, autocast's cast cache off)
    mark_steps: bool = False        # a compiled model replaying inductor's CUDA graphs: mark each step's start

    def forward_loss(self) -> torch.Tensor:
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        self.optimizer.zero_grad(set_to_none=True)
        if self.autocast_dtype is None:
            return F.cross_entropy(self.model(self.images), self.labels)
        with torch.autocast(self.images.device.type, dtype=self.autocast_dtype, cache_enabled=not self.capturable):
            return F.cross_entropy(self.model(self.images), self.labels)

    def backward_update(self, loss: torch.Tensor) -> None:
        loss.backward()
        self.optimizer.step()

    def __call__(self) -> torch.Tensor:
        loss = self.forward_loss()
        self.backward_update(loss)
        return loss.detach()


def make_train_step(model: torch.nn.Module, batch: int, res: int, dtype: str, device: str,
                    lr: float = LEARNING_RATE, seed: int = 0, capturable: bool = False) -> TrainStep:
    """The model put in train() mode with an AdamW optimizer over its parameters, random images and random labels
    (seeded) on `device`. dtype: fp32/tf32 (no autocast; the TF32 flags are the caller's) or bf16/fp16.
    capturable: a step that a CUDA graph can capture (AdamW(capturable=True); CUDA only)."""
    if capturable and device != "cuda":
        raise VimbenchError("a CUDA-graph training step needs --device cuda")
    model.train()
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, res, res, generator=gen).to(device)
    num_classes = _num_classes(model)
    labels = torch.randint(num_classes, (batch,), generator=gen).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, capturable=capturable)
    return TrainStep(model, optimizer, images, labels, precision.autocast_dtype(dtype), capturable)


def compile_train_step(step: TrainStep, mode: str, backend: str = "inductor") -> None:
    """Run `step`'s model through torch.compile for `mode` (a torch.compile mode; vimbench.bench.compiler): the
    step's forward and, through AOTAutograd, its backward compile on the next call; the optimizer keeps the same
    parameters. No freezing (the weights change every step). The modes with CUDA graphs mark each step's start,
    which inductor's graph trees need to know that the previous step's outputs are dead."""
    step.model = compiler.compile_model(step.model, mode, backend, freeze=False)
    step.mark_steps = mode in compiler.GRAPH_MODES and backend == "inductor"


def _num_classes(model: torch.nn.Module) -> int:
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        return head.out_features
    raise VimbenchError(f"{type(model).__name__} has no linear classification head to train against labels")


def record_step_fields(result, model: torch.nn.Module) -> None:
    """Set what a training row says about its step on `result` (a sweep or profile row): the optimizer, lr, loss,
    activation checkpointing and, for Vim, the training boundary (fixed per model at build)."""
    result.optimizer, result.lr, result.loss = OPTIMIZER, LEARNING_RATE, LOSS
    result.activation_checkpointing = ACTIVATION_CHECKPOINTING
    result.train_boundary = getattr(model, "train_boundary", None)


def check_gradients(model: torch.nn.Module, backend: str) -> None:
    """After a step: raise when a trainable parameter received no gradient (a backward pass that does not reach
    it would leave it untrained while the step still looks fast)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise RuntimeError(f"backend {backend}: the backward pass reached no gradient to {len(missing)} of "
                           f"{len(params)} parameters ({shown}); this backend cannot train yet")


@dataclass
class StepTiming:
    """The timing pass of a training step: the whole step, and its forward and backward parts (same steps)."""
    step: Timing
    forward_ms_samples: list[float] = field(default_factory=list)    # zero_grad + forward + loss
    backward_ms_samples: list[float] = field(default_factory=list)   # loss.backward() + optimizer.step()

    @property
    def forward_ms_p50(self) -> float | None:
        return percentile(self.forward_ms_samples, 50) if self.forward_ms_samples else None

    @property
    def backward_ms_p50(self) -> float | None:
        return percentile(self.backward_ms_samples, 50) if self.backward_ms_samples else None


def _split_cpu(step: TrainStep, iters: int) -> tuple[list[float], list[float], list[float]]:
    whole, fwd, bwd = [], [], []
    for _ in range(iters):
        start = time.perf_counter()
        loss = step.forward_loss()
        mid = time.perf_counter()
        step.backward_update(loss)
        end = time.perf_counter()
        whole.append((end - start) * 1e3)
        fwd.append((mid - start) * 1e3)
        bwd.append((end - mid) * 1e3)
    return whole, fwd, bwd


def _split_cuda(step: TrainStep, iters: int, host_ms: list[float]) -> tuple[list[float], list[float], list[float]]:
    events = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(iters)]
    for start, mid, end in events:
        torch.cuda.synchronize()
        issued = time.perf_counter()
        start.record()
        loss = step.forward_loss()
        mid.record()
        step.backward_update(loss)
        end.record()
        host_ms.append((time.perf_counter() - issued) * 1e3)  # the host's submission of the step (bench.timing)
    torch.cuda.synchronize()
    whole = [s.elapsed_time(e) for s, _, e in events]
    fwd = [s.elapsed_time(m) for s, m, _ in events]
    bwd = [m.elapsed_time(e) for _, m, e in events]
    return whole, fwd, bwd


def time_train_steps(step: TrainStep, device: str, warmup: int, iters: int, cuda_graphs: bool = False) -> StepTiming:
    """`warmup` untimed steps, then `iters` timed steps, each timed alone (module docstring). cuda_graphs: the
    step (built capturable) captured once after the warm-up, replays timed; no forward/backward split."""
    if warmup < 1:
        raise VimbenchError("at least one warm-up step is needed: the first step is never timed")
    if iters < MIN_ITERS:
        raise VimbenchError(f"at least {MIN_ITERS} timed steps are needed, got {iters}")
    if cuda_graphs:
        if device != "cuda" or not step.capturable:
            raise VimbenchError("a CUDA-graph training step needs --device cuda and a step built capturable")
        return StepTiming(time_graph_replays(step, warmup, iters))
    for _ in range(warmup):
        step()
    host_ms: list[float] = []
    if device == "cuda":
        whole, fwd, bwd = _split_cuda(step, iters, host_ms)
    else:
        whole, fwd, bwd = _split_cpu(step, iters)
    method = CUDA_EVENTS if device == "cuda" else PERF_COUNTER
    timing = Timing(method, warmup, len(whole), whole, percentile(whole, 20), percentile(whole, 50),
                    percentile(whole, 80), host_ms or None)
    return StepTiming(timing, fwd, bwd)


PROTOCOL = {
    "step": "optimizer.zero_grad(set_to_none=True); forward under autocast (bf16/fp16) or none (fp32 TF32 off, "
            "tf32); cross-entropy on random labels; loss.backward(); AdamW step (torch.optim.AdamW, lr 1e-3, "
            "defaults otherwise); model in train() mode; activation checkpointing off; fp16 without a GradScaler",
    "timing": "first step untimed (gradients, AdamW state, kernel compilation); warm-up steps untimed; per step: "
              "device synchronized, one CUDA event pair around the step (CPU: perf_counter), plus one event between "
              "the loss and loss.backward() splitting it into forward (zero_grad + forward + loss) and backward "
              "(backward + optimizer step); fps = batch / p50 step; compile cuda-graphs: the whole step captured "
              "once into a CUDA graph after the warm-up (AdamW capturable=True, autocast cast cache off), replays "
              "timed with one CUDA-event pair each, no forward/backward split; a torch.compile mode: the model "
              "compiled (forward and backward, dynamic=False, no freezing) in the first step, zero_grad, loss and "
              "AdamW eager",
    "memory": "one step after gc, empty_cache and a peak reset, the AdamW state already present: baseline = "
              "allocated before the step (weights, the previous step's gradients, AdamW state, batch); peak "
              "allocated/reserved over the step; activation = peak - baseline (saved activations and backward "
              "temporaries, net of the gradients the step frees first); NVML sampled every ~1 ms (CPU: peak RSS "
              "of the process during the step); compile cuda-graphs: the same pass over one eager step of the "
              "capturable step (before capture)",
}
