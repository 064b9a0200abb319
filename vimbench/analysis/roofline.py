"""Roofline floors for vimbench's kernels: bytes moved, special-function (MUFU) ops and FMA-pipe ops per kernel,
per-GPU ceilings, and how close a measured time is to each floor.

Counting conventions (per kernel call, minimum work of a perfect implementation):
- bytes: every input read once from HBM and every output written once; nothing re-read. Element size of the
  activation dtype for activations; parameters A, D, delta_bias, norm weight and the residual stream in fp32.
- mufu: special-function-unit ops (ex2, rcp, rsqrt on the MUFU pipe): one ex2 per (batch, channel, state, token)
  element of each scan direction (a = exp2(Delta * A * log2 e)); SiLU counts 2 (ex2 + rcp) per element;
  RMSNorm counts one rsqrt per row.
- fma: FP32 instructions on the FMA pipe (FFMA, FMUL, FADD each count 1) of the sequential recurrence:
  per scan element Delta*A (1), Delta*u*B[n] (1), h = a*h + b (1), y += C[n]*h (1) = 4; the per-(channel,
  token) epilogue (softplus, D skip, gate, average) is O(1/N) of that and is not counted. A parallel
  (associative) scan does more: this is the floor, not a prediction. FMA floors use 2 FLOPs per FFMA, so the
  FP32 rate in instructions/s is fp32_flops / 2.
"""
from __future__ import annotations

from dataclasses import dataclass

from vimbench.errors import VimbenchError
from vimbench.geometry import D_CONV, D_STATE
from vimbench.layout import XDblLayout
from vimbench.precision import element_bytes

F32 = 4


@dataclass(frozen=True)
class Ceilings:
    """Peak rates of one GPU. Where a number was measured, `source` says so."""
    gpu: str
    hbm_bytes_per_s: float      # achievable copy bandwidth
    mufu_per_s: float           # ex2 (special-function unit) results per second, whole GPU
    fp32_flops_per_s: float     # FP32 FMA peak, FLOP/s (FFMA = 2 FLOPs)
    bf16_flops_per_s: float     # dense bf16 tensor-core matmul, FLOP/s
    source: str

    @property
    def fma_per_s(self) -> float:
        return self.fp32_flops_per_s / 2


# Keyed by a substring of torch.cuda.get_device_name() (case-insensitive).
CEILINGS: dict[str, Ceilings] = {
    "H200": Ceilings(
        "NVIDIA H200", 4.27e12, 4.2e12, 67e12, 790e12,
        "HBM: device-to-device copy measured on our H200 (2026-11-29, ../shared/spec/measurement.md); "
        "ex2: 16 MUFU results/clock/SM x 132 SMs x ~1.98 GHz (datasheet-derived); FP32: 67 TFLOP/s datasheet; "
        "bf16: ~790 TFLOP/s dense matmul measured on our H200 (../shared/spec/kernels.md)"),
    "H100": Ceilings(
        "NVIDIA H100 SXM", 3.0e12, 4.2e12, 67e12, 700e12,
        "estimates, not measured here: HBM ~90% of the 3.35 TB/s datasheet; ex2 as H200 (same SM count and clock); "
        "FP32 67 TFLOP/s datasheet; bf16 ~70% of the 989 TFLOP/s datasheet"),
}


def ceilings_for(gpu_name: str) -> Ceilings:
    """The ceilings of the GPU whose device name contains one of CEILINGS' keys."""
    for key, ceil in CEILINGS.items():
        if key.lower() in gpu_name.lower():
            return ceil
    raise VimbenchError(f"no roofline ceilings for GPU {gpu_name!r}; add it to CEILINGS in "
                        f"vimbench/analysis/roofline.py (known: {', '.join(CEILINGS)})")


@dataclass(frozen=True)
class KernelWork:
    """The minimum work of one kernel call."""
    name: str
    bytes: float
    mufu: float
    fma: float


def scan_work(batch: int, channels: int, length: int, n_state: int = D_STATE, dtype: str = "bf16",
              gate: bool = True, skip: bool = True) -> KernelWork:
    """One selective-scan direction: reads u, delta (B, E, L), B, C (B, N, L), z (B, E, L) if gated, A (E, N),
    D and delta_bias (E,); writes y (B, E, L)."""
    elt = element_bytes(dtype)
    bel, bnl = batch * channels * length, batch * n_state * length
    act = bel * (3 + gate) + 2 * bnl
    params = channels * n_state + channels * (1 + skip)
    return KernelWork("selective_scan", elt * act + F32 * params, float(bel * n_state), 4.0 * bel * n_state)


def bimamba_scan_work(batch: int, channels: int, length: int, n_state: int = D_STATE, dtype: str = "bf16",
                      halves: bool = False, dt_rank: int = 0) -> KernelWork:
    """Both directions and gated in one kernel: reads u, delta (2, B, E, L), B, C (2, B, N, L), z (B, E, L),
    A (2, E, N), D, delta_bias (2, E); writes y (B, E, L) once, or both gated halves (2, B, E, L) if `halves`.
    dt_rank R > 0: dt_proj fused: instead of delta it reads the low-rank dt (2, B, R, L) in fp32 and the
    (2, E, R) weight, and does R more FMAs per (direction, channel, token)."""
    elt = element_bytes(dtype)
    bel, bnl = batch * channels * length, batch * n_state * length
    delta_bytes = 2 * batch * dt_rank * length * F32 if dt_rank else 2 * bel * elt
    act = 2 * bel + 2 * 2 * bnl + bel + (2 if halves else 1) * bel
    params = 2 * channels * n_state + 2 * 2 * channels + 2 * channels * dt_rank
    fma = 2 * 4.0 * bel * n_state + 2.0 * bel * dt_rank
    return KernelWork("bimamba_scan", delta_bytes + elt * act + F32 * params, 2.0 * bel * n_state, fma)


def bimamba_scan_bwd_work(batch: int, channels: int, length: int, n_state: int = D_STATE, dtype: str = "bf16",
                          halves: bool = False, chunk: int = 64) -> KernelWork:
    """Backward of both directions from the fp32 checkpoints every `chunk` steps: reads u, delta (2, B, E, L),
    grad_out (2, B, E, L) if `halves` else (B, E, L), z (B, E, L), B, C (2, B, N, L), the checkpoints; writes
    du, ddelta (2, B, E, L), dz (B, E, L) and fp32 dB, dC (2, B, N, L) (parameter gradients are small). Per
    (direction, token, channel, state): two exps (the state recomputed from its checkpoint, the adjoint's
    decay) and ~14 FMA-pipe ops (recompute 2, state 2, adjoint 2, dB/dC/dA/dDelta contributions 8)."""
    elt = element_bytes(dtype)
    bel, bnl = batch * channels * length, batch * n_state * length
    act = 2 * 2 * bel + (2 if halves else 1) * bel + bel + 2 * 2 * bnl + 2 * 2 * bel + bel
    ckpt = 2 * batch * -(-length // chunk) * n_state * channels
    return KernelWork("bimamba_scan_bwd", elt * act + F32 * (ckpt + 2 * 2 * bnl), 2 * 2.0 * bel * n_state,
                      2 * 14.0 * bel * n_state)


def conv1d_bidir_work(batch: int, channels: int, length: int, width: int = D_CONV, dtype: str = "bf16") -> KernelWork:
    """Depthwise conv + SiLU for both directions: reads x (B, E, L) once, weight (2, E, K), bias (2, E);
    writes (2, B, E, L). Per output: K FMAs, SiLU (ex2 + rcp on MUFU, ~3 FMA-pipe ops)."""
    elt = element_bytes(dtype)
    bel = batch * channels * length
    outputs = 2 * bel
    return KernelWork("conv1d_silu_bidir", elt * (bel + outputs) + F32 * 2 * channels * (width + 1),
                      2.0 * outputs, (width + 3.0) * outputs)


def conv_xproj_work(batch: int, channels: int, length: int, dt_rank: int, width: int = D_CONV,
                    dtype: str = "bf16", n_state: int = D_STATE) -> KernelWork:
    """The conv fused with x_proj (kernels/conv1d/xproj.py): the conv's traffic (reads x, writes u for both
    directions) plus x_proj_t (2, E, W) and the fp32 x_dbl (2, B * L, W) it writes; u is not read back. The GEMM's
    multiply-adds run on the tensor cores and count in no floor here (as zgate's)."""
    conv = conv1d_bidir_work(batch, channels, length, width, dtype)
    w = XDblLayout(dt_rank, n_state).width
    extra = element_bytes(dtype) * 2 * channels * w + F32 * 2 * batch * length * w
    return KernelWork("conv_xproj", conv.bytes + extra, conv.mufu, conv.fma)


def x_proj_rows_work(batch: int, channels: int, length: int, dt_rank: int, dtype: str = "bf16",
                     n_state: int = D_STATE) -> KernelWork:
    """x_proj on the conv's output (kernels/conv1d/xproj.py `x_proj_rows`): reads u (2, B, L, E) and x_proj_t
    (2, E, W), writes the fp32 x_dbl (2, B * L, W). The multiply-adds run on the tensor cores (no floor here)."""
    w = XDblLayout(dt_rank, n_state).width
    elem = element_bytes(dtype)
    return KernelWork("x_proj_rows", elem * 2 * batch * length * channels + elem * 2 * channels * w
                      + F32 * 2 * batch * length * w, 0.0, 0.0)


def norm_in_proj_work(batch: int, channels: int, length: int, dim: int, dtype: str = "bf16") -> KernelWork:
    """The mixer front (kernels/norm_in_proj) as the front path calls it: reads the previous scan's halves (B, L, 2E),
    out_proj's doubled weight (D, 2E), the fp32 residual and in_proj's weight (2E, D) once, writes the fp32
    residual and xz (B, L, 2E). Per token and model channel the norm's ~4 FMA-pipe ops and one rsqrt per row; the
    GEMMs' multiply-adds run on the tensor cores and count in no floor here (as zgate's). The row tiles' repeated
    out_proj (once per in_proj tile) is not counted: the floor is the op's, not this kernel's."""
    elt = element_bytes(dtype)
    tokens = batch * length
    reads = elt * (tokens * 2 * channels + 2 * (dim * 2 * channels)) + F32 * tokens * dim
    writes = F32 * tokens * dim + elt * tokens * 2 * channels
    return KernelWork("norm_in_proj", reads + writes, float(tokens), 4.0 * tokens * dim)


def zgate_work(batch: int, channels: int, length: int, dim: int, dtype: str = "bf16",
               halves: bool = True) -> KernelWork:
    """The z gate with the halves' sum (kernels/zgate): reads h (B, L, D), z_weight (E, D) and y (the two halves,
    or their sum) once, writes (B, L, E). Per output: SiLU (ex2 + rcp on MUFU, ~3 FMA-pipe ops) and the sum and
    product (2); the z GEMM's D multiply-adds per output run on the tensor cores and count in no floor here."""
    elt = element_bytes(dtype)
    tokens = batch * length
    outputs = tokens * channels
    reads = elt * (tokens * dim + channels * dim + (2 if halves else 1) * outputs)
    return KernelWork("zgate", reads + elt * outputs, 2.0 * outputs, 5.0 * outputs)


def dt_softplus_work(batch: int, channels: int, length: int, dt_rank: int, dtype: str = "bf16") -> KernelWork:
    """dt_proj with the bias and softplus (kernels/dt_softplus), both directions: reads the low-rank dt rows
    (2, B * L, R; fp32 x_dbl columns in 16-bit models, as the model's inference keeps x_dbl), dt_proj (2, R, E) and
    the bias; writes delta (2, B * L, E) in fp16 for 16-bit models, fp32 otherwise. Per output: softplus's ex2 on
    the MUFU and FMA-pipe ops for the bias add, |x|, max and the log1p polynomial: ~9 with the degree-4 fit of
    16-bit outputs (kernels.dt_softplus.fwd.SHORT_LOG1P), ~12 with fp32's longer form; the R multiply-adds run on
    the tensor cores (16-bit) and count in no floor here."""
    elt = element_bytes(dtype)
    rows = 2 * batch * length
    outputs = rows * channels
    fma_per_output = 12.0 if dtype == "fp32" else 9.0
    return KernelWork("dt_softplus", F32 * rows * dt_rank + elt * 2 * dt_rank * channels + F32 * 2 * channels
                      + (2 if dtype != "fp32" else F32) * outputs, float(outputs), fma_per_output * outputs)


def conv1d_bidir_bwd_work(batch: int, channels: int, length: int, width: int = D_CONV,
                          dtype: str = "bf16") -> KernelWork:
    """Backward of conv + SiLU, both directions: reads x (B, E, L) and dout (2, B, E, L), writes dx (B, E, L);
    weight/bias gradients are per-program partials (small). Per output: the pre-activation recomputed (K FMAs),
    SiLU' (ex2 + rcp on MUFU, ~5 FMA-pipe ops), K FMAs into dx and K into dweight."""
    elt = element_bytes(dtype)
    bel = batch * channels * length
    outputs = 2 * bel
    return KernelWork("conv1d_silu_bidir_bwd", elt * (bel + outputs + bel) + F32 * 4 * channels * (width + 1),
                      2.0 * outputs, (3 * width + 5.0) * outputs)


def add_rmsnorm_bwd_work(rows: int, dim: int, dtype: str = "bf16", residual: bool = True) -> KernelWork:
    """Backward of residual add + RMSNorm: reads dy (rows, D) in dtype, dr and r (fp32), weight; writes dx in
    dtype and dresidual (fp32, if any); dweight as per-program partials (small). Per element: ~8 FMA-pipe ops."""
    elt = element_bytes(dtype)
    n = rows * dim
    reads = elt * n + 2 * F32 * n + F32 * dim
    writes = elt * n + (F32 * n if residual else 0)
    return KernelWork("add_rmsnorm_bwd", reads + writes, float(rows), 8.0 * n)


def add_rmsnorm_work(rows: int, dim: int, dtype: str = "bf16", residual: bool = True) -> KernelWork:
    """Residual add + RMSNorm: reads x (rows, D) in dtype, the fp32 residual (if any) and weight (D,);
    writes y (rows, D) in dtype and the fp32 residual. Per element: add, square-accumulate, two scales."""
    elt = element_bytes(dtype)
    n = rows * dim
    reads = elt * n + (F32 * n if residual else 0) + F32 * dim
    writes = elt * n + F32 * n
    return KernelWork("add_rmsnorm", reads + writes, float(rows), 4.0 * n)


@dataclass(frozen=True)
class Roofline:
    """Floors (seconds) of one measured call and the measured time as a share of each floor's speed."""
    work: KernelWork
    time_s: float
    hbm_floor_s: float
    mufu_floor_s: float
    fma_floor_s: float

    @property
    def floor_s(self) -> float:
        return max(self.hbm_floor_s, self.mufu_floor_s, self.fma_floor_s)

    @property
    def bound(self) -> str:
        floors = {"hbm": self.hbm_floor_s, "mufu": self.mufu_floor_s, "fma": self.fma_floor_s}
        return max(floors, key=floors.get)

    def pct(self, floor_s: float) -> float:
        return 100.0 * floor_s / self.time_s

    def as_row(self) -> dict[str, float | str]:
        """Flat fields for a results row: pct_* is floor / measured (100 = at that floor)."""
        return {
            "bytes": self.work.bytes, "mufu_ops": self.work.mufu, "fma_ops": self.work.fma,
            "hbm_floor_us": self.hbm_floor_s * 1e6, "mufu_floor_us": self.mufu_floor_s * 1e6,
            "fma_floor_us": self.fma_floor_s * 1e6,
            "pct_hbm": self.pct(self.hbm_floor_s), "pct_mufu": self.pct(self.mufu_floor_s),
            "pct_fma": self.pct(self.fma_floor_s), "pct_floor": self.pct(self.floor_s), "bound": self.bound,
            "achieved_gb_per_s": self.work.bytes / self.time_s / 1e9,
        }


def roofline(work: KernelWork, time_s: float, ceilings: Ceilings) -> Roofline:
    """Floors of `work` on `ceilings` and how a measured `time_s` compares with them."""
    if not time_s > 0:
        raise VimbenchError(f"measured time must be positive, got {time_s}")
    return Roofline(work, time_s, work.bytes / ceilings.hbm_bytes_per_s, work.mufu / ceilings.mufu_per_s,
                    work.fma / ceilings.fma_per_s)
