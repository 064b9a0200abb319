"""Peak memory from tensor sizes, without a GPU: count the bytes of live tensor storages while a forward runs.

`LiveBytes` is a TorchDispatchMode: every op's outputs that bring a new storage add its bytes, a storage
counts until its last tensor dies (a weak reference tells), and the peak is the largest sum seen. It runs on the
meta device too, so the real sizes cost no memory and no arithmetic: Vim-Ti at 1248 px, batch 64 takes seconds.

What it leaves out, by construction: the caching allocator's rounding and fragmentation (peak *allocated*, not
reserved), workspace memory inside cuBLAS/cuDNN, and autocast on the meta device (torch has none there:
`autocast_ops` casts the GEMM and convolution inputs to the autocast dtype the way autocast does, each cast a
new tensor like autocast's, except that parameters' casts count once as autocast's cache holds them).

`allocation_twin_ops()` is a Vim op table that allocates exactly what the Triton ops allocate (same shapes, dtypes
and layouts; the scan writes its halves over u) and computes nothing: memory accounting only. Where the Triton
backend's choices depend on the GPU's size (whether an eager scan takes dt_proj), it answers as on
ESTIMATE_GPU_SMS SMs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

GIB = 2 ** 30
# The GPU whose choices the estimates follow where they depend on its size (the H100's and the H200's SMs).
ESTIMATE_GPU_SMS = 132
_AUTOCAST_OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
                 torch.ops.aten.convolution.default}


@dataclass
class LiveBytes(TorchDispatchMode):
    """Live storage bytes over the ops run inside the mode. `track(*tensors)` counts tensors made before it
    (weights, the input). autocast_dtype: emulate autocast for GEMMs and convolutions (for meta runs)."""
    autocast_dtype: torch.dtype | None = None
    live: dict[int, tuple[StorageWeakRef, int]] = field(default_factory=dict)
    current: int = 0
    peak: int = 0
    _param_casts: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        super().__init__()

    def track(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            self._add(t)

    def _add(self, t) -> None:
        if not isinstance(t, torch.Tensor):
            return
        storage = t.untyped_storage()
        ref = StorageWeakRef(storage)
        if ref.cdata not in self.live:
            self.live[ref.cdata] = (ref, storage.nbytes())
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)

    def _sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def _cast(self, t):
        if not (isinstance(t, torch.Tensor) and t.dtype == torch.float32):
            return t
        if isinstance(t, torch.nn.Parameter) or t.requires_grad:  # autocast caches parameter casts
            cached = self._param_casts.get(id(t))
            if cached is None:
                cached = self._param_casts[id(t)] = t.to(self.autocast_dtype)
                self._add(cached)
            return cached
        cast = t.to(self.autocast_dtype)
        self._add(cast)
        return cast

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._sweep()
        if self.autocast_dtype is not None and func in _AUTOCAST_OPS:
            args, kwargs = tree_map(self._cast, args), tree_map(self._cast, kwargs)
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            self._add(t)
        return out

    @property
    def peak_gib(self) -> float:
        return self.peak / GIB


def allocation_twin_ops(gpu_sms: int = ESTIMATE_GPU_SMS):
    """The Triton backend's allocations without its arithmetic (see the module docstring), with its choices as on
    a GPU of `gpu_sms` SMs (whether an eager scan takes dt_proj: not where it runs chunk-parallel)."""
    from kernels.selective_scan.fwd import eager_scan_takes_dt_proj
    from vimbench.models.ops import VimOps

    def add_rmsnorm(x, residual, weight, eps=1e-5, out_dtype=None):
        return (torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device),
                torch.empty(x.shape, dtype=torch.float32, device=x.device))

    def conv1d_silu_bidir(x, weight, bias, out=None):
        if out is not None:
            return out
        batch, channels, length = x.shape
        if x.stride(1) == 1 and channels > 1:  # channel-last: (B, L, 2, E) in memory
            return torch.empty((batch, length, 2, channels), dtype=x.dtype, device=x.device).permute(2, 0, 3, 1)
        return torch.empty((2, batch, channels, length), dtype=x.dtype, device=x.device)

    def bimamba_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True, combine=True,
                     out=None, dt_proj=None):
        if not combine:
            return out if out is not None else torch.empty_like(u)
        return torch.empty_like(u[0])

    def zgate(y, h, z_weight, out=None):  # kernels.zgate.fwd.zgate_out_like
        if out is not None:
            return out
        batch, channels, length = y.shape[-3:]
        return torch.empty((batch, length, channels), dtype=y.dtype, device=y.device)

    def conv_xproj(x, weight, bias, x_proj_t, out_dtype, out=None):  # kernels.conv1d.xproj: u, then x_dbl
        if out is not None:
            return out
        u = conv1d_silu_bidir(x, weight, bias)
        return u, torch.empty((2, x.shape[0] * x.shape[2], x_proj_t.shape[-1]), dtype=out_dtype, device=x.device)

    def norm_in_proj(y, out_w, residual, norm_w, eps, in_w, out=None):  # kernels.norm_in_proj.fwd.outputs_like
        if out is not None:
            return out
        batch, length = y.shape[:2]
        return (torch.empty((batch, length, in_w.shape[0]), dtype=in_w.dtype, device=y.device),
                torch.empty((batch, length, norm_w.shape[0]), dtype=torch.float32, device=y.device))

    def x_proj_rows(u, x_proj_t, out_dtype, out=None):  # kernels.conv1d.xproj.x_dbl_like
        if out is not None:
            return out
        return torch.empty((2, u.shape[1] * u.shape[3], x_proj_t.shape[-1]), dtype=out_dtype, device=u.device)

    def dt_softplus(dt, weight, bias, out_dtype):  # kernels.dt_softplus.fwd.dt_softplus_out_like
        return torch.empty((2, dt.shape[1], weight.shape[2]), dtype=out_dtype, device=dt.device)

    def scan_takes_dt_proj(batch, channels, length, dt_rank, n_state, device):  # as on the GPU, not the interpreter
        return eager_scan_takes_dt_proj(batch, channels, length, dt_rank, n_state, device, gpu_sms=gpu_sms)

    return VimOps("triton-allocations", add_rmsnorm, conv1d_silu_bidir, bimamba_scan, scan_fuses_dt_proj=True,
                  scan_takes_dt_proj=scan_takes_dt_proj, zgate=zgate, conv_xproj=conv_xproj,
                  norm_in_proj=norm_in_proj, x_proj_rows=x_proj_rows, dt_softplus=dt_softplus)


def vim_peak_bytes(name: str, res: int, batch: int, dtype: str = "bf16", batch_slice: int = 0,
                   device: str = "meta") -> int:
    """Peak live bytes of one inference forward of Vim `name` on the Triton backend's allocations: weights,
    the fp32 input images, and everything the forward allocates (autocast emulated for bf16/fp16)."""
    from vimbench.models.registry import create_model

    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    with torch.device(device):
        model = create_model(name, img_size=res, backend="torch", batch_slice=batch_slice).eval()
        images = torch.empty(batch, 3, res, res)
    ops = allocation_twin_ops()
    model.ops = ops
    for layer in model.layers:
        layer.mixer.ops = ops
    # what the model asks autocast for (fp32: no autocast); the meta device has no autocast to ask
    model._activation_dtype = lambda: autocast if autocast is not None else torch.float32
    mode = LiveBytes(autocast_dtype=autocast)
    mode.track(*model.parameters(), *model.buffers(), images)
    with torch.inference_mode(), mode:
        model(images)
    return mode.peak


@dataclass(frozen=True)
class SavedTensor:
    """One storage the autograd graph keeps for the backward pass: the shape and dtype of the (first) tensor saved
    on it, and the storage's bytes (a saved view counts its whole storage, once)."""
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


def _saved_storages(model, images) -> list[SavedTensor]:
    """The storages a training forward of `model` saves for backward, parameters' own storages excluded."""
    params = {StorageWeakRef(p.untyped_storage()).cdata for p in model.parameters()}
    saved: dict[int, SavedTensor] = {}
    keep: list[torch.Tensor] = []  # keeps storages alive, so that their keys stay unique during the forward

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = StorageWeakRef(storage).cdata
        if key not in params and key not in saved:
            saved[key] = SavedTensor(tuple(t.shape), t.dtype, storage.nbytes())
            keep.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images)
    return list(saved.values())


def vim_saved_per_layer(res: int, batch: int, train_boundary: str = "fused", embed_dim: int = 192,
                        dtype: torch.dtype = torch.bfloat16, device: str = "meta") -> list[SavedTensor]:
    """What one Vim layer adds to the autograd graph of a training forward on backend triton (Vim-Ti width by
    default): the storages saved by a 2-layer model that a 1-layer one does not save, largest first. On the meta
    device only sizes exist (the custom ops' fake implementations allocate what the launchers return, not their
    internal temporaries). The model runs in `dtype`, as autocast would run its activations; the weights' own
    16-bit casts under autocast (each < 1 MB for Vim-Ti) are not in the list."""
    from collections import Counter

    from vimbench.models.vim import VisionMamba

    def saved(depth: int) -> Counter:
        with torch.device(device):
            model = VisionMamba(res, embed_dim, depth, 1000, backend="triton", train_boundary=train_boundary)
            model = model.to(dtype).train()
            images = torch.empty(batch, 3, res, res, dtype=dtype)
        model._activation_dtype = lambda: dtype  # the meta device has no autocast state to ask
        # each mixer builds its own weights, so that what a layer saves is its own (the model's one stacked node
        # for all layers would put every layer's weights in shared storages; the same bytes in total)
        model.training_weights = lambda dtype: None
        return Counter(_saved_storages(model, images))

    per_layer = saved(2) - saved(1)
    return sorted(per_layer.elements(), key=lambda s: (-s.nbytes, s.shape))


def vim_train_peak_bytes(res: int, batch: int, train_boundary: str = "fused", embed_dim: int = 192,
                         depth: int = 24, dtype: torch.dtype = torch.bfloat16, device: str = "meta") -> int:
    """Peak live bytes of one Vim training forward + backward on backend triton (Vim-Ti width and depth by
    default) under emulated autocast: weights, their gradients, the fp32 images, the saved activations and what
    the ops return. Not counted: the kernels' internal temporaries (the scan backward's per-block dB/dC partials,
    its fp32 dz accumulator and state scratch: ~0.3 GB at Vim-Ti 1248 px, batch 8), the optimizer's state and
    the caching allocator's rounding, so a measured peak lies above this."""
    import torch.nn.functional as F

    from vimbench.models.vim import VisionMamba

    with torch.device(device):
        model = VisionMamba(res, embed_dim, depth, 1000, backend="triton", train_boundary=train_boundary).train()
        images = torch.empty(batch, 3, res, res)
        labels = torch.zeros(batch, dtype=torch.long)
    model._activation_dtype = lambda: dtype  # the meta device has no autocast state to ask
    mode = LiveBytes(autocast_dtype=dtype if dtype != torch.float32 else None)
    mode.track(*model.parameters(), images)
    with mode:
        F.cross_entropy(model(images).float(), labels).backward()
    return mode.peak
