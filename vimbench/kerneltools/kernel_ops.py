"""vimbench's kernel ops, one registry entry each (vimbench.kerneltools.registry says what an entry holds).

Ops: bimamba_scan (both directions, combined and gated: the Vim mixer's fp32 path), bimamba_scan_halves (both
directions, the two gated halves: the mixer's bf16/fp16 path, see vimbench.models.vim.sums_halves_in_gemm),
selective_scan (one direction), bimamba_scan_bwd (the training backward of both directions),
conv1d_silu_bidir (both directions' conv + SiLU) and add_rmsnorm, and the backward ops; zgate (inference memory
mode lean-gated: the z GEMM with the gate and the halves' sum as its epilogue); conv_xproj (inference: the conv with
the x_proj GEMM in one launch, vimbench.models.vim.FUSE_CONV_XPROJ, off: measured slower; the front path uses it);
norm_in_proj (small eager inference: the previous out_proj, add + RMSNorm and in_proj in one launch); x_proj_rows
(small eager inference: x_proj on the conv's output).

Inputs are laid out as the Vim mixer passes them on a GPU: channel-last, x and z views of xz, B and C views of
x_dbl in XDblLayout order, in fp32 for bf16/fp16 activations (vimbench.models.vim.x_dbl_in_fp32).
Static specs: the kernels at Vim-Ti, 1248 px, batch 64 (L = 6085, E = 384, D = 192), in the variants the model
launches (bf16: gated halves; fp32: combined), plus the combined bf16 scan of the public API and the
one-direction scan. Regression cases: Vim-Ti at 1248 px (L = 6085) and 224 px (L = 197), batch 64 and 8.
"""
from __future__ import annotations

from typing import Any, Callable

from vimbench.analysis import roofline as rl
from vimbench.errors import VimbenchError
from vimbench.kerneltools.registry import KernelOp, OpShape, RegressionShape, Unavailable, register
from vimbench.kerneltools.static_check import KernelSpec, Ptr, contiguous_strides, spec_from_args

# Vim-Ti at 1248 px, batch 64: the shape the static specs compile at.
STATIC_SHAPE = OpShape(batch=64, channels=384, length=6085)
VIM_TI_1248, VIM_TI_224 = 6085, 197


def _random(shape: OpShape, device: str):
    """A seeded normal sampler: rnd(*size, scale, shift, dt) -> tensor."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*size, scale=1.0, shift=0.0, dt):
        return (torch.randn(*size, generator=g, device=device) * scale + shift).to(dt)

    return rnd


# ---------------------------------------------------------------------------------------------- selective scan

def _scan_inputs(dirs: int, halves: bool = False, dt_proj: bool = False
                 ) -> Callable[[OpShape, Any, str], dict[str, Any]]:
    """dt_proj: the fused form (the model's inference path on the triton backend): delta is the low-rank dt, a
    view of x_dbl's dt columns, and dt_proj (2, E, R) a view of the stacked (2, R, E) weight, as the mixer passes
    them."""
    def build(shape: OpShape, dtype, device: str) -> dict[str, Any]:
        import torch

        from vimbench.layout import XDblLayout

        B_, E, L, N = shape.batch, shape.channels, shape.length, shape.d_state
        rnd = _random(shape, device)
        lay = XDblLayout(shape.dt_rank, N)
        # Channel-last, as the model lays tensors out: (..., L, channels) buffers seen as (..., channels, L) views.
        xz = rnd(B_, L, 2 * E, dt=dtype).transpose(1, 2)
        x_dbl = rnd(dirs, B_, L, lay.width, dt=torch.float32)
        A = -torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(dirs, E, 1)
        args = dict(u=rnd(dirs, B_, L, E, dt=dtype).transpose(2, 3),
                    delta=rnd(dirs, B_, L, E, scale=0.5, shift=-4.0, dt=dtype).transpose(2, 3), A=A,
                    B=x_dbl[..., lay.B].transpose(2, 3), C=x_dbl[..., lay.C].transpose(2, 3),
                    D=torch.ones(dirs, E, device=device), z=xz[:, E:],
                    delta_bias=rnd(dirs, E, scale=0.5, dt=torch.float32))
        if dt_proj:
            R = shape.dt_rank
            args["delta"] = x_dbl[..., lay.dt].transpose(2, 3)
            args["dt_proj"] = rnd(dirs, R, E, scale=R ** -0.5, dt=dtype).transpose(1, 2)
            args["delta_bias"] = rnd(dirs, E, scale=0.5, shift=-4.0, dt=torch.float32)
        if dirs == 1:
            args = {k: (v if k == "z" else v[0]) for k, v in args.items()}
        if halves:
            args["combine"] = False
        return args

    return build


def _scan_args(dtype: str, mode: str, shape: OpShape, bc_dtype: str = "fp32") -> dict[str, Any]:
    """`_scan_kernel`'s non-constexpr arguments as the Vim mixer passes them (`_scan_spec` says the layouts);
    the chunked kernels take subsets of them."""
    from vimbench.layout import XDblLayout

    B_, E, L, N = shape.batch, shape.channels, shape.length, shape.d_state
    width = XDblLayout(dt_rank=shape.dt_rank, d_state=N).width
    dirs = 1 if mode == "single" else 2
    d0, b0, l0, e0 = contiguous_strides(dirs, B_, L, E)
    u_st = (d0, b0, e0, l0)
    xd0, xb0, xl0, xn0 = contiguous_strides(dirs, B_, L, width)
    x_dbl_st = (xd0, xb0, xn0, xl0)
    if mode == "halves":
        out_b, out_l, out_dir, out_e = contiguous_strides(B_, L, 2, E)
    else:
        out_dir, (out_b, out_l, out_e) = 0, contiguous_strides(B_, L, E)
    return {
        "u_ptr": Ptr(dtype), "delta_ptr": Ptr(dtype), "A_ptr": Ptr("fp32"), "B_ptr": Ptr(bc_dtype),
        "C_ptr": Ptr(bc_dtype), "D_ptr": Ptr("fp32"), "z_ptr": Ptr(dtype), "bias_ptr": Ptr("fp32"),
        "out_ptr": Ptr("fp32" if mode == "combined" else dtype), "ckpt_ptr": Ptr("fp32"),
        "E": E, "L": L, "dir_first": 0, "out_scale": 1.0 if mode == "single" else 0.5,
        **dict(zip(("stride_u_dir", "stride_u_b", "stride_u_e", "stride_u_l"), u_st)),
        **dict(zip(("stride_dt_dir", "stride_dt_b", "stride_dt_e", "stride_dt_l"), u_st)),
        **dict(zip(("stride_A_dir", "stride_A_e", "stride_A_n"), contiguous_strides(dirs, E, N))),
        **dict(zip(("stride_B_dir", "stride_B_b", "stride_B_n", "stride_B_l"), x_dbl_st)),
        **dict(zip(("stride_C_dir", "stride_C_b", "stride_C_n", "stride_C_l"), x_dbl_st)),
        "stride_D_dir": E, "stride_bias_dir": E,
        "stride_z_b": L * 2 * E, "stride_z_e": 1, "stride_z_l": 2 * E,
        "stride_out_dir": out_dir, "stride_out_b": out_b, "stride_out_e": out_e, "stride_out_l": out_l,
    }


def _scan_spec(dtype: str, mode: str, shape: OpShape = STATIC_SHAPE, bc_dtype: str = "fp32", dt_proj: bool = False,
               label: str = "", cfg: Any = None, module: str = "kernels.selective_scan.fwd",
               extra_constexprs: dict[str, Any] | None = None) -> KernelSpec:
    """kernels/selective_scan/fwd.py `_scan_kernel` with the Vim mixer's layouts: u, delta (2, B, E, L) views of
    (2, B, L, E) buffers; B, C views of x_dbl (2, B, L, width) in XDblLayout order (rows 16-element aligned;
    bc_dtype: fp32, as x_proj writes it on CUDA); z a view of xz (B, L, 2E); A (2, E, N).

    mode "halves": bimamba_scan(combine=False), what the bf16 model launches: out (2, B, E, L) in u's dtype, a
    view of (B, L, 2, E). "combined": bimamba_scan(combine=True): fp32 atomics into (B, E, L). "single":
    selective_scan, one direction. dt_proj: the fused form, delta the dt columns of x_dbl (bc_dtype) and the
    (2, E, R) weight a view of a contiguous (2, R, E) stack in dtype; named scan/<mode>_dtproj/<dtype><label>
    (scan/<mode>/<dtype><label> without). A small-batch shape gets the small-grid block (`one_pass_block_c`).
    cfg: another launch config of the same arguments (e.g. `fwd.staged_launch_config`), its kernel in `module`,
    with extra_constexprs added."""
    from kernels.selective_scan.fwd import scan_launch_config

    dirs = 1 if mode == "single" else 2
    E, rank = shape.channels, shape.dt_rank if dt_proj else 0
    if cfg is None:
        cfg = scan_launch_config(shape.batch, shape.channels, dirs, interpreted=False, dt_rank=rank)
    args = _scan_args(dtype, mode, shape, bc_dtype)
    # (2, E, R) view of (2, R, E): what the mixer passes (MixerWeights.dt_proj_t transposed); unused without
    args.update(dtw_ptr=Ptr(dtype if dt_proj else "fp32"), stride_dtw_dir=rank * E,
                stride_dtw_e=1 if dt_proj else 0, stride_dtw_r=E if dt_proj else 0)
    if dt_proj:  # delta is the low-rank dt: x_dbl's dt columns, laid out like B and C
        args.update(delta_ptr=Ptr(bc_dtype), **{f"stride_dt_{k}": args[f"stride_B_{k}"] for k in ("dir", "b", "l")},
                    stride_dt_e=args["stride_B_n"])
    constexprs = dict(N_STATE=shape.d_state, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True,
                      ATOMIC=mode == "combined", SAVE_EVERY=0, DT_RANK=rank, **cfg.constexprs,
                      **(extra_constexprs or {}))
    # The binary holds the walk once per direction, each with the loop trip in the main loop (twice with
    # UNROLL_TRIPS, plus the odd last main trip), and in the masked last trips: 2 x 4 (or 2 x 2) copies of
    # 2 tokens x N states x (BLOCK_C / threads) channels per thread.
    # The token-block kernel (small grids): one copy of its block of TOKEN_BLOCK tokens, both directions.
    # The staged kernel: per direction one trip of TRIP tokens in its loop and the one-token loop of the last steps.
    if "TOKEN_BLOCK" in cfg.constexprs:
        trips, tokens_per_trip = 1, cfg.constexprs["TOKEN_BLOCK"]
    elif "TRIP" in cfg.constexprs:
        trips, tokens_per_trip = 2, cfg.constexprs["TRIP"] + 1
    else:
        trips, tokens_per_trip = 2 * (4 if cfg.constexprs["UNROLL_TRIPS"] else 2), 2
    state_elements = trips * tokens_per_trip * shape.d_state * cfg.constexprs["BLOCK_C"] // (32 * cfg.num_warps)
    name = f"scan/{mode}{'_dtproj' if dt_proj else ''}/{dtype}{label}"
    return spec_from_args(name, module, cfg.kernel, args, constexprs,
                          do_not_specialize=("L",), num_warps=cfg.num_warps, state_elements=state_elements,
                          maxnreg=cfg.maxnreg)


def _staged_scan_spec() -> KernelSpec:
    """kernels/selective_scan/staged.py `_scan_staged_kernel` (the experiment behind fwd.STAGED_SCAN, off by
    default) at `_scan_spec("bf16", "halves")`'s shape with 3 stages and the module's knobs, the variant that
    measured fastest (H100, session ac: kernels/NOTES.md): trips of 2 tokens, u/delta/z one trip ahead in registers
    and prefetched to L1 6 steps ahead; B and C joined (x_dbl's rows)."""
    from kernels.selective_scan import fwd

    shape = STATIC_SHAPE
    cfg = fwd.staged_launch_config(shape.batch, shape.channels, 2, False, stages=3, carry=fwd.STAGED_CARRY,
                                   trip=fwd.STAGED_TRIP, l1_ahead=fwd.STAGED_L1_AHEAD)
    return _scan_spec("bf16", "halves", label="/staged", cfg=cfg, module="kernels.selective_scan.staged",
                      extra_constexprs=dict(BC_JOINED=True))


# Vim-Ti at 1248 px, batch 8 (the training shape): the one-pass grid has 192 programs, so the forward runs
# chunk-parallel on the H200 (132 SMs).
CHUNKED_STATIC_SHAPE = OpShape(batch=8, channels=384, length=6085)
H200_SMS = 132


def _chunked_scan_specs(dtype: str, mode: str, save_every: int = 0, passes: tuple[str, ...] = ("outputs",),
                        shape: OpShape = CHUNKED_STATIC_SHAPE) -> list[KernelSpec]:
    """kernels/selective_scan/chunked.py's passes as `bimamba_scan(..., combine=mode == "combined")` (and
    `bimamba_scan_fwd_save(chunk=save_every)` when save_every > 0) launches them at `shape`, layouts as
    `_scan_spec`. passes: any of "states" (pass 1), "combine", "outputs" (pass 3). With save_every = 64 the
    automatic T is 128: pass 3 stores the checkpoints inside its loop; the training forward's own interval
    (CHECKPOINT_CHUNK = 128 = T) takes the entry states as checkpoints and runs the inference pass 3."""
    from kernels.selective_scan import chunked

    B_, E, L, N = shape.batch, shape.channels, shape.length, shape.d_state
    cfg = chunked.chunked_scan_launch_config(B_, E, L, 2, N, interpreted=False, sm_count=H200_SMS,
                                             save_every=save_every)
    if cfg is None:
        raise VimbenchError(f"static spec chunked scan: the dispatch keeps batch {B_} at L = {L} one-pass")
    row_slots = cfg.n_chunks if cfg.entries_are_checkpoints else cfg.n_chunks - 1
    args = dict(_scan_args(dtype, mode, shape), T=cfg.chunk, batch=B_, row_slots=row_slots)
    module = "kernels.selective_scan.chunked"
    # Per loop trip as in `_scan_spec`, 2 tokens x N states per thread. Passes 1 and 3 hold their walk once per
    # direction, each with the trip in the main loop (twice with UNROLL_TRIPS, plus the odd last main trip) and
    # in the masked last trips.
    trip_elements = 2 * N * cfg.outputs.constexprs["BLOCK_C"] // (32 * cfg.outputs.num_warps)

    def copies(launch_cfg):
        return 2 * (4 if launch_cfg.constexprs["UNROLL_TRIPS"] else 2)
    specs = []
    if "states" in passes:
        states_args = {k: v for k, v in args.items() if k in chunked._chunk_states_kernel.arg_names}
        specs.append(spec_from_args(f"scan_chunked/states/{dtype}", module, cfg.states.kernel,
                                    dict(states_args, hloc_ptr=Ptr("fp32"), dsum_ptr=Ptr("fp32")),
                                    dict(N_STATE=N, HAS_BIAS=True, SOFTPLUS=True, **cfg.states.constexprs),
                                    do_not_specialize=("L", "T", "row_slots"), num_warps=cfg.states.num_warps,
                                    state_elements=copies(cfg.states) * trip_elements))
    if "combine" in passes:
        combine_args = {"A_ptr": Ptr("fp32"), "hloc_ptr": Ptr("fp32"), "dsum_ptr": Ptr("fp32"), "E": E,
                        "n_links": cfg.n_chunks - 1, "batch": B_, "row_slots": row_slots,
                        **{k: args[k] for k in ("stride_A_dir", "stride_A_e", "stride_A_n")}}
        block = cfg.combine.constexprs["BLOCK"]
        # 4 chunks per loop trip x the elements per thread.
        specs.append(spec_from_args("scan_chunked/combine", module, cfg.combine.kernel, combine_args,
                                    dict(N_STATE=N, **cfg.combine.constexprs),
                                    do_not_specialize=("n_links", "row_slots"),
                                    num_warps=cfg.combine.num_warps,
                                    state_elements=4 * block // (32 * cfg.combine.num_warps)))
    if "outputs" in passes:
        name = f"scan_chunked/{mode}{'_save' if save_every else ''}/{dtype}"
        # Uncapped, pass 3 (`fwd._walk` on a chunk) takes 168 registers and no spill under triton 3.6 (the H200's
        # compiler, where it measured 659 -> 506 us: kernels/NOTES.md, "The chunk-parallel passes' addressing");
        # triton 3.8 also stops at 168 and spills 24 B in the gated bf16 halves. Accepted; unmeasured under 3.8.
        accepted = 24 if cfg.outputs.maxnreg is None else 0
        specs.append(spec_from_args(name, module, cfg.outputs.kernel, dict(args, entry_ptr=Ptr("fp32")),
                                    dict(N_STATE=N, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True,
                                         ATOMIC=mode == "combined",
                                         SAVE_EVERY=0 if cfg.entries_are_checkpoints else save_every,
                                         **cfg.outputs.constexprs),
                                    do_not_specialize=("L", "T", "row_slots"), num_warps=cfg.outputs.num_warps,
                                    state_elements=copies(cfg.outputs) * trip_elements, maxnreg=cfg.outputs.maxnreg,
                                    accepted_spill_bytes=accepted))
    return specs


def _mamba_scan() -> Callable[..., Any]:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        raise Unavailable("mamba_ssm is not importable here") from exc
    return selective_scan_fn


def _official_bidir(a: dict[str, Any]) -> Callable[[], Any]:
    """The official path: flipped copies for the backward direction, two launches."""
    scan_fn = _mamba_scan()

    def official():
        y_f = scan_fn(a["u"][0], a["delta"][0], a["A"][0], a["B"][0], a["C"][0], a["D"][0], a["z"],
                      a["delta_bias"][0], delta_softplus=True)
        y_b = scan_fn(a["u"][1].flip(-1), a["delta"][1].flip(-1), a["A"][1], a["B"][1].flip(-1),
                      a["C"][1].flip(-1), a["D"][1], a["z"].flip(-1), a["delta_bias"][1], delta_softplus=True)
        return 0.5 * (y_f + y_b.flip(-1))

    return official


def _official_single(a: dict[str, Any]) -> Callable[[], Any]:
    scan_fn = _mamba_scan()
    return lambda: scan_fn(**a, delta_softplus=True)


def _both_dtypes(*shapes: tuple[int, int, int]) -> tuple[RegressionShape, ...]:
    return tuple(RegressionShape(b, e, l, d) for d in ("bf16", "fp32") for b, e, l in shapes)


def _scan_op(name: str, public: str, summary: str, **fields: Any) -> KernelOp:
    """A scan op: `public` names the function in kernels/selective_scan/op.py and its `*_ref` twin; all launch
    `_scan_kernel`, or the chunk-parallel passes when its grid would underfill the GPU."""
    chunked = tuple(f"kernels.selective_scan.chunked:{k}" for k in
                    ("_chunk_states_kernel", "_chunk_combine_kernel", "_chunk_outputs_kernel"))
    return KernelOp(name=name, summary=summary, category="scan", forward=f"kernels.selective_scan.op:{public}",
                    reference=f"kernels.selective_scan.reference:{public}_ref",
                    kernels=("kernels.selective_scan.fwd:_scan_kernel", *chunked), **fields)


register(_scan_op(
    "bimamba_scan", "bimamba_scan",
    "both scan directions, gated and combined in one launch (the fp32 model's scan)",
    inputs=_scan_inputs(dirs=2),
    work=lambda s, dtype: rl.bimamba_scan_work(s.batch, s.channels, s.length, s.d_state, dtype=dtype),
    static_specs=lambda: [_scan_spec("fp32", "combined"), _scan_spec("bf16", "combined"),
                          *_chunked_scan_specs("fp32", "combined", passes=("states", "combine", "outputs")),
                          *_chunked_scan_specs("fp32", "combined", save_every=64)],
    regression=_both_dtypes((64, 384, VIM_TI_1248), (8, 384, VIM_TI_1248), (64, 384, VIM_TI_224)),
    official=_official_bidir,
    backward="kernels.selective_scan.bwd:bimamba_scan_bwd",
))

register(_scan_op(
    "bimamba_scan_halves", "bimamba_scan",
    "both scan directions in one launch, the two gated halves (the bf16/fp16 model's scan)",
    inputs=_scan_inputs(dirs=2, halves=True),
    work=lambda s, dtype: rl.bimamba_scan_work(s.batch, s.channels, s.length, s.d_state, dtype=dtype,
                                               halves=True),
    static_specs=lambda: [_scan_spec("bf16", "halves"),
                          # the small-grid blocks: 2 channels per warp at batch 1, 8 at batch 8 (224 px)
                          _scan_spec("bf16", "halves", OpShape(batch=1, channels=384, length=VIM_TI_224), label="/b1"),
                          _scan_spec("bf16", "halves", OpShape(batch=8, channels=384, length=VIM_TI_224), label="/b8"),
                          *_chunked_scan_specs("bf16", "halves", passes=("states", "outputs")),
                          *_chunked_scan_specs("bf16", "halves", save_every=64),
                          _staged_scan_spec()],
    regression=(RegressionShape(64, 384, VIM_TI_1248, "bf16"), RegressionShape(64, 384, VIM_TI_224, "bf16")),
    official="the official code has no halves variant; compare bimamba_scan",
    backward="kernels.selective_scan.bwd:bimamba_scan_bwd",
))

# The fused form's widest dt_proj: Vim-S (R = 24) and Vim-B (R = 48) at 1248 px, batch 64, as well as Vim-Ti.
_VIM_S_1248, _VIM_B_1248 = OpShape(64, 768, VIM_TI_1248), OpShape(64, 1536, VIM_TI_1248)

register(_scan_op(
    "bimamba_scan_dtproj", "bimamba_scan",
    "both scan directions with dt_proj fused: delta computed per token from x_dbl's dt columns (model inference)",
    inputs=_scan_inputs(dirs=2, halves=True, dt_proj=True),
    work=lambda s, dtype: rl.bimamba_scan_work(s.batch, s.channels, s.length, s.d_state, dtype=dtype,
                                               halves=True, dt_rank=s.dt_rank),
    static_specs=lambda: [_scan_spec("bf16", "halves", dt_proj=True), _scan_spec("fp32", "combined", dt_proj=True),
                          _scan_spec("bf16", "halves", _VIM_S_1248, dt_proj=True, label="/vim_s"),
                          _scan_spec("bf16", "halves", _VIM_B_1248, dt_proj=True, label="/vim_b"),
                          # small grids (224 px): the token-block kernel (rank tiles of 16 and 32); Vim-B's rank
                          # (48) takes the token walk (fwd.TOKEN_BLOCK_MAX_DT_RANK)
                          _scan_spec("bf16", "halves", OpShape(1, 384, VIM_TI_224), dt_proj=True, label="/b1"),
                          _scan_spec("bf16", "halves", OpShape(8, 384, VIM_TI_224), dt_proj=True, label="/b8"),
                          _scan_spec("bf16", "halves", OpShape(1, 768, VIM_TI_224), dt_proj=True, label="/vim_s/b1"),
                          _scan_spec("bf16", "halves", OpShape(1, 1536, VIM_TI_224), dt_proj=True,
                                     label="/vim_b/b1")],
    # no regression cases until the H200 baseline (results/baselines/h200.json) has timings for them
    official="the official code has no fused dt_proj; compare bimamba_scan_halves plus its dt_proj GEMM",
))

register(_scan_op(
    "selective_scan", "selective_scan", "one scan direction",
    inputs=_scan_inputs(dirs=1),
    work=lambda s, dtype: rl.scan_work(s.batch, s.channels, s.length, s.d_state, dtype=dtype),
    static_specs=lambda: [_scan_spec("bf16", "single")],
    official=_official_single,
))


def _scan_bwd_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """The backward's arguments as training passes them: the forward's inputs (model layouts), the checkpoints
    from the training forward (`bimamba_scan_fwd_save`, chunk CHECKPOINT_CHUNK) and grad_out like the forward's
    output: bf16/fp16 the gated halves (2, B, E, L) (the bf16 model's scan), fp32 the combined (B, E, L)."""
    import torch

    from kernels.selective_scan.fwd import bimamba_scan_fwd_save
    from kernels.selective_scan.op import CHECKPOINT_CHUNK

    combine = dtype == torch.float32
    args = _scan_inputs(dirs=2)(shape, dtype, device)
    out, checkpoints = bimamba_scan_fwd_save(**args, combine=combine, chunk=CHECKPOINT_CHUNK)
    grad_out = _random(shape, device)(*out.shape, scale=0.1, dt=dtype)
    return dict(grad_out=grad_out, **args, checkpoints=checkpoints, delta_softplus=True, combine=combine,
                chunk=CHECKPOINT_CHUNK)


def _scan_bwd_specs(dtype: str, shape: OpShape = OpShape(batch=8, channels=384, length=VIM_TI_1248),
                    block_c: int | None = None, prefetch: bool | None = None,
                    maxnreg: int | None = None, combined: bool | None = None,
                    pairs: bool | None = None) -> list[KernelSpec]:
    """kernels/selective_scan/bwd.py `_scan_bwd_kernel` and `_scan_bwd_group_carry_kernel` at Vim-Ti, 1248 px,
    batch 8 (a shape that splits L into chunk groups, so both kernels run): by default bf16 the gated halves
    (grad_out, du, ddelta channel-last (2, B, L, E) memory), fp32 the combined output (grad_out (B, L, E)
    memory); `combined` forces the form (the training step, kernels.bimamba_inner, runs bf16 combined); B, C views
    of fp32 x_dbl; z a view of xz; dz like u[0] (fp32 atomics), or for the combined form as the training op takes
    it, the two directions' terms laid out like u (DZ_HALVES, in the dtype); checkpoint chunk 64."""
    from kernels.selective_scan.bwd import scan_bwd_launch_config
    from kernels.selective_scan.op import CHECKPOINT_CHUNK
    from vimbench.layout import XDblLayout

    B_, E, L, N = shape.batch, shape.channels, shape.length, shape.d_state
    halves = dtype != "fp32" if combined is None else not combined
    cfg = scan_bwd_launch_config(B_, E, L, CHECKPOINT_CHUNK, interpreted=False, block_c=block_c, prefetch=prefetch,
                                 maxnreg=maxnreg, fp32=dtype == "fp32", pairs=pairs, combine=not halves)
    if cfg.carry is None:
        raise VimbenchError(f"static spec scan bwd: expected several chunk groups at {shape.label()}")
    width = XDblLayout(dt_rank=shape.dt_rank, d_state=N).width
    d0, b0, l0, e0 = contiguous_strides(2, B_, L, E)
    u_st = (d0, b0, e0, l0)
    xd0, xb0, xl0, xn0 = contiguous_strides(2, B_, L, width)
    x_dbl_st = (xd0, xb0, xn0, xl0)
    g_st = u_st if halves else (0, L * E, 1, E)
    z_st = (L * 2 * E, 1, 2 * E)
    common = {
        "E": E, "L": L, "g_scale": 0.5, "chunks_per_program": cfg.chunks_per_program,
        **dict(zip(("stride_g_dir", "stride_g_b", "stride_g_e", "stride_g_l"), g_st)),
        **dict(zip(("stride_dt_dir", "stride_dt_b", "stride_dt_e", "stride_dt_l"), u_st)),
        **dict(zip(("stride_A_dir", "stride_A_e", "stride_A_n"), contiguous_strides(2, E, N))),
        **dict(zip(("stride_C_dir", "stride_C_b", "stride_C_n", "stride_C_l"), x_dbl_st)),
        "stride_bias_dir": E, **dict(zip(("stride_z_b", "stride_z_e", "stride_z_l"), z_st)),
    }
    flags = dict(N_STATE=N, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    carry_args = {"g_ptr": Ptr(dtype), "delta_ptr": Ptr(dtype), "A_ptr": Ptr("fp32"), "C_ptr": Ptr("fp32"),
                  "z_ptr": Ptr(dtype), "bias_ptr": Ptr("fp32"), "mu_ptr": Ptr("fp32"), "dsum_ptr": Ptr("fp32"),
                  **common}
    walk_args = {
        "g_ptr": Ptr(dtype), "u_ptr": Ptr(dtype), "delta_ptr": Ptr(dtype), "A_ptr": Ptr("fp32"),
        "B_ptr": Ptr("fp32"), "C_ptr": Ptr("fp32"), "D_ptr": Ptr("fp32"), "z_ptr": Ptr(dtype),
        "bias_ptr": Ptr("fp32"), "ckpt_ptr": Ptr("fp32"),
        "scratch_ptr": Ptr("bf16" if str(cfg.scratch_dtype) == "torch.bfloat16" else "fp32"), "mu_ptr": Ptr("fp32"),
        "dsum_ptr": Ptr("fp32"), "du_ptr": Ptr(dtype), "ddelta_ptr": Ptr(dtype),
        "dz_ptr": Ptr("fp32" if halves else dtype),
        "dB_ptr": Ptr("fp32"), "dC_ptr": Ptr("fp32"), "dA_ptr": Ptr("fp32"), "dD_ptr": Ptr("fp32"),
        "dbias_ptr": Ptr("fp32"), **common, "c_block0": 0,
        **dict(zip(("stride_u_dir", "stride_u_b", "stride_u_e", "stride_u_l"), u_st)),
        **dict(zip(("stride_B_dir", "stride_B_b", "stride_B_n", "stride_B_l"), x_dbl_st)),
        "stride_D_dir": E,
        **dict(zip(("stride_du_dir", "stride_du_b", "stride_du_e", "stride_du_l"), u_st)),
        **dict(zip(("stride_ddt_dir", "stride_ddt_b", "stride_ddt_e", "stride_ddt_l"), u_st)),
        **dict(zip(("stride_dz_dir", "stride_dz_b", "stride_dz_e", "stride_dz_l"),
                   (0, L * E, 1, E) if halves else u_st)),
    }
    walk_flags = dict(HAS_D=True, **flags, DZ_HALVES=not halves)
    mode = "halves" if halves else "combined"
    # One pass over each loop body: one token x N states x (BLOCK_C / 32) channels per thread, in each of the two
    # direction copies of the walk; two tokens where the walk takes two steps per trip (PAIR_TRIPS).
    per_token = 2 * N * cfg.walk.constexprs["BLOCK_C"] // 32
    per_trip = per_token * (2 if cfg.walk.constexprs["PAIR_TRIPS"] else 1)
    # The capped walk from every other stored state spills 48 B at 168 registers (triton 3.6 and 3.8) and was
    # measured faster than the walk without it that does not spill (kernel 2.57 -> 2.41 ms here, captured training
    # steps +6%: results/history/bwdpairs-h200-2026-12-03f.json, pairsab-h200-2026-12-03f.json); at 184 registers
    # it still spilled and was slower. With its L1 prefetches (input lines 2 steps on, the scratch tile 4 steps on)
    # it spills 72 B and measured faster again (kernel 2.46 -> 2.41 ms, captured training steps +2.8% / +3.5%:
    # results/history/scratchpf-h200-2026-12-03h.json). With 32-bit token indices (loop body 919 -> 741 SASS
    # instructions) it spills 88 B: see kernels/NOTES.md, "32-bit token indices in the scan backward". Compiled once
    # per direction with constexpr token strides: 104 B under triton 3.8, 56 B under 3.6 (the H200's compiler,
    # where it measured 6.6% faster: "The scan backward's walk per direction"). (Without channel masks, bwd's
    # UNMASKED_WALK, it spills 144 B under 3.8 and measured slower in session m: not shipped, not accepted.)
    # With the carried leaving state (bwd.DEFAULT_CARRY_H, session o) the combined walk (the training op's) does not
    # spill under either compiler, and the gated-halves walk spills less: 8 B under 3.8, 56 B under 3.6 (the
    # carried walk measured 0.8-1.3% faster; two steps per trip, bwd.DEFAULT_PAIR_TRIPS, measured slower: off).
    # The combined walk from the XOR state order with vector scratch tiles (bwd.DEFAULT_SCATTER_XOR, session r)
    # spills 16 B (triton 3.6) / 24 B (3.8) outside its step loops, reloaded once per segment, and measured 1.4%
    # faster than the natural order without spill (results/history/statexor-h100-2026-12-05r.json). With its scratch
    # in bf16 (session x): 32 B under 3.8, and 8-byte state-tile loads instead of 16-byte ones.
    walk_ce = cfg.walk.constexprs
    prefetching = walk_ce["L1_AHEAD"] > 0 or walk_ce["SCRATCH_AHEAD"] > 0
    accepted_spill = 0
    if walk_ce["PAIRS"] and cfg.walk.maxnreg == 168:
        accepted_spill = (56 if halves else 0) if walk_ce["CARRY_H"] else 104 if prefetching else 48
        if walk_ce["SCATTER_SUMS"] == 2 and walk_ce["VEC_SCRATCH"]:
            accepted_spill = 24
            if str(cfg.scratch_dtype) == "torch.bfloat16":
                # the bf16 scratch (bwd.DEFAULT_SCRATCH_BF16, session x): 32 B under triton 3.8 (8 STL / 8 LDL, none
                # in the step loops; 4 B under 3.6), and the walk alone measured 7.8-9.4% faster (H100)
                accepted_spill = 32
    if block_c is not None or prefetch is not None or maxnreg is not None or pairs is not None:
        # the walk alone in another launch (registers, occupancy): a forced channel block, the prefetch on or off
        # (the default at this shape, more than one wave of programs: off, capped at 168 registers), a register cap
        label = (f"/c{block_c}" if block_c is not None else "") \
            + ({True: "/prefetch", False: "/noprefetch", None: ""}[prefetch]) \
            + (f"/r{maxnreg}" if maxnreg is not None else "") + ("/pairs" if pairs else "")
        return [spec_from_args(f"scan_bwd/{mode}/{dtype}{label}", "kernels.selective_scan.bwd", cfg.walk.kernel,
                               walk_args, dict(**walk_flags, **cfg.walk.constexprs),
                               do_not_specialize=("L", "chunks_per_program", "c_block0"),
                               num_warps=cfg.walk.num_warps,
                               state_elements=per_trip, maxnreg=cfg.walk.maxnreg,
                               accepted_spill_bytes=accepted_spill)]
    return [
        spec_from_args(f"scan_bwd/{mode}/{dtype}", "kernels.selective_scan.bwd", cfg.walk.kernel, walk_args,
                       dict(**walk_flags, **cfg.walk.constexprs),
                       do_not_specialize=("L", "chunks_per_program", "c_block0"), num_warps=cfg.walk.num_warps,
                       state_elements=per_trip, maxnreg=cfg.walk.maxnreg, accepted_spill_bytes=accepted_spill),
        spec_from_args(f"scan_bwd_carry/{mode}/{dtype}", "kernels.selective_scan.bwd", cfg.carry.kernel,
                       carry_args, dict(**flags, **cfg.carry.constexprs),
                       do_not_specialize=("L", "chunks_per_program"), num_warps=cfg.carry.num_warps,
                       state_elements=per_token),
    ]


register(KernelOp(
    name="bimamba_scan_bwd",
    summary="backward of both scan directions from the training forward's checkpoints, chunk-parallel over L",
    category="scan",
    forward="kernels.selective_scan.bwd:bimamba_scan_bwd",
    reference="kernels.selective_scan.reference:bimamba_scan_bwd_ref",
    inputs=_scan_bwd_inputs,
    work=lambda s, dtype: rl.bimamba_scan_bwd_work(s.batch, s.channels, s.length, s.d_state, dtype=dtype,
                                                   halves=dtype != "fp32"),
    kernels=("kernels.selective_scan.bwd:_scan_bwd_kernel", "kernels.selective_scan.bwd:_scan_bwd_group_carry_kernel",
             "kernels.selective_scan.bwd:_bc_rows_kernel"),
    static_specs=lambda: [*_scan_bwd_specs("bf16"), *_scan_bwd_specs("fp32"),
                          *_scan_bwd_specs("bf16", block_c=16),
                          *_scan_bwd_specs("bf16", prefetch=True), *_scan_bwd_specs("bf16", combined=True)],
    regression=_both_dtypes((8, 384, VIM_TI_1248), (128, 384, VIM_TI_224)),  # the training shapes
    official="the official selective_scan backward is not benchmarked",
))


# ---------------------------------------------------------------------------------------------- conv1d

def _conv_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    import torch

    B_, E, L = shape.batch, shape.channels, shape.length
    rnd = _random(shape, device)
    xz = rnd(B_, L, 2 * E, dt=dtype).transpose(1, 2)
    return dict(x=xz[:, :E], weight=rnd(2, E, shape.d_conv, scale=0.5, dt=torch.float32),
                bias=rnd(2, E, scale=0.1, dt=torch.float32))


def _conv_spec(dtype: str, shape: OpShape = STATIC_SHAPE, label: str = "") -> KernelSpec:
    """kernels/conv1d/fwd.py as the Vim mixer launches it (K = 4, channel-last): x a view of xz (B, L, 2E);
    weight (2, E, 4) and bias (2, E) fp32 stacks; out (2, B, E, L) a view of (B, L, 2, E). Named
    conv1d/bidir/<dtype><label>; a small grid gets the small tiles (`conv1d_launch_config`)."""
    from kernels.conv1d.fwd import conv1d_launch_config

    B_, E, L, K = shape.batch, shape.channels, shape.length, shape.d_conv
    cfg = conv1d_launch_config(B_, E, L, K, channel_last=True, interpreted=False)
    if cfg.kernel != "_conv1d_silu_bidir_rows_kernel":
        raise VimbenchError(f"static spec conv1d: expected the token-walking kernel at K = {K}, got {cfg.kernel}")
    o_b, o_l, o_dir, _ = contiguous_strides(B_, L, 2, E)
    args = {
        "x_ptr": Ptr(dtype), "w_ptr": Ptr("fp32"), "bias_ptr": Ptr("fp32"), "out_ptr": Ptr(dtype),
        "E": E, "L": L, "stride_x_b": L * 2 * E, "stride_x_l": 2 * E,
        **dict(zip(("stride_w_dir", "stride_w_e", "stride_w_k"), contiguous_strides(2, E, K))),
        "stride_bias_dir": E, "stride_bias_e": 1,
        "stride_out_dir": o_dir, "stride_out_b": o_b, "stride_out_l": o_l,
    }
    return spec_from_args(f"conv1d/bidir/{dtype}{label}", "kernels.conv1d.fwd", cfg.kernel, args,
                          dict(HAS_BIAS=True, **cfg.constexprs), do_not_specialize=("L",), num_warps=cfg.num_warps)


def _official_conv(a: dict[str, Any]) -> Callable[[], Any]:
    import torch

    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as exc:  # noqa: BLE001
        raise Unavailable("causal_conv1d is not importable here") from exc
    x, w, b = a["x"], a["weight"], a["bias"]
    return lambda: torch.stack([causal_conv1d_fn(x, w[0], b[0], activation="silu"),
                                causal_conv1d_fn(x.flip(-1), w[1], b[1], activation="silu").flip(-1)])


register(KernelOp(
    name="conv1d_silu_bidir",
    summary="depthwise conv1d + SiLU for both scan directions, one launch",
    category="conv",
    forward="kernels.conv1d.op:conv1d_silu_bidir",
    reference="kernels.conv1d.reference:conv1d_silu_bidir_ref",
    inputs=_conv_inputs,
    work=lambda s, dtype: rl.conv1d_bidir_work(s.batch, s.channels, s.length, s.d_conv, dtype=dtype),
    kernels=("kernels.conv1d.fwd:_conv1d_silu_bidir_rows_kernel", "kernels.conv1d.fwd:_conv1d_silu_bidir_kernel"),
    static_specs=lambda: [_conv_spec("bf16"), _conv_spec("fp32"),
                          _conv_spec("bf16", OpShape(batch=1, channels=384, length=VIM_TI_224), label="/b1")],
    regression=_both_dtypes((64, 384, VIM_TI_1248), (64, 384, VIM_TI_224)),
    official=_official_conv,
    backward="kernels.conv1d.bwd:conv1d_silu_bidir_bwd",
))


def _x_proj_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """x_proj_t (2, E, W) in the activation dtype (Vim-Ti's W = 48: [B | C | dt | pad]) and x_dbl's dtype, fp32, as
    inference writes it for 16-bit activations on CUDA: what conv_xproj and x_proj_rows take besides their input."""
    import torch

    from vimbench.layout import XDblLayout

    width = XDblLayout(shape.dt_rank, shape.d_state).width
    rnd = _random(shape, device)
    return dict(x_proj_t=rnd(2, shape.channels, width, scale=shape.channels ** -0.5, dt=dtype),
                out_dtype=torch.float32)


def _x_proj_spec_args(dtype: str, shape: OpShape) -> dict[str, Any]:
    """The arguments conv_xproj's and x_proj_rows' kernels share, as the mixer lays them out: u (2, B, E, L) a view
    of (B, L, 2, E), x_proj_t (2, E, W) contiguous, x_dbl (2, B * L, W) fp32, the row and width counts."""
    from vimbench.layout import XDblLayout

    B_, E, L = shape.batch, shape.channels, shape.length
    W = XDblLayout(shape.dt_rank, shape.d_state).width
    u_b, u_l, u_dir, _ = contiguous_strides(B_, L, 2, E)
    return {"p_ptr": Ptr(dtype), "u_ptr": Ptr(dtype), "xdbl_ptr": Ptr("fp32"), "M": B_ * L, "L": L, "E": E, "W": W,
            **dict(zip(("stride_p_dir", "stride_p_e", "stride_p_w"), contiguous_strides(2, E, W))),
            "stride_u_dir": u_dir, "stride_u_b": u_b, "stride_u_l": u_l,
            "stride_o_dir": B_ * L * W, "stride_o_m": W}


def _conv_xproj_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """The conv's inputs and x_proj's (`_x_proj_inputs`)."""
    return dict(**_conv_inputs(shape, dtype, device), **_x_proj_inputs(shape, dtype, device))


def _conv_xproj_spec(dtype: str, shape: OpShape = STATIC_SHAPE, label: str = "") -> KernelSpec:
    """kernels/conv1d/xproj.py `_conv_xproj_kernel` as the mixer launches it (FUSE_CONV_XPROJ): x a view of xz
    (B, L, 2E), the conv's fp32 weight and bias stacks, x_proj_t (2, E, W) contiguous, u (2, B, E, L) a view of
    (B, L, 2, E), x_dbl (2, B * L, W) fp32. Named conv_xproj/<dtype><label>."""
    from kernels.conv1d.xproj import conv_xproj_launch_config
    from vimbench.layout import XDblLayout
    from vimbench.precision import torch_dtype

    B_, E, L, K = shape.batch, shape.channels, shape.length, shape.d_conv
    W = XDblLayout(shape.dt_rank, shape.d_state).width
    cfg = conv_xproj_launch_config(B_ * L, E, W, torch_dtype(dtype), interpreted=False)
    args = {
        "x_ptr": Ptr(dtype), "w_ptr": Ptr("fp32"), "bias_ptr": Ptr("fp32"),
        "stride_x_b": L * 2 * E, "stride_x_l": 2 * E,
        **dict(zip(("stride_w_dir", "stride_w_e", "stride_w_k"), contiguous_strides(2, E, K))),
        "stride_bias_dir": E, "stride_bias_e": 1, **_x_proj_spec_args(dtype, shape),
    }
    return spec_from_args(f"conv_xproj/{dtype}{label}", "kernels.conv1d.xproj", cfg.kernel, args,
                          dict(K=K, HAS_BIAS=True, IEEE=dtype == "fp32", UPCAST=False, **cfg.constexprs),
                          do_not_specialize=("M", "L"), num_warps=cfg.num_warps, num_stages=cfg.num_stages)


register(KernelOp(
    name="conv_xproj",
    summary="conv1d + SiLU of both directions with the x_proj GEMM on each u tile: u and x_dbl from one launch",
    category="conv",
    forward="kernels.conv1d.op:conv_xproj",
    reference="kernels.conv1d.reference:conv_xproj_ref",
    inputs=_conv_xproj_inputs,
    work=lambda s, dtype: rl.conv_xproj_work(s.batch, s.channels, s.length, s.dt_rank, s.d_conv, dtype=dtype),
    kernels=("kernels.conv1d.xproj:_conv_xproj_kernel",),
    static_specs=lambda: [_conv_xproj_spec("bf16"), _conv_xproj_spec("fp32"),
                          _conv_xproj_spec("bf16", OpShape(batch=1, channels=384, length=VIM_TI_224), label="/b1")],
    official="the official code runs the conv (causal_conv1d) and x_proj (a GEMM) separately",
))


def _x_proj_rows_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """u as the conv op writes it from the mixer's channel-last x ((2, B, E, L) laid out (B, L, 2, E)) and x_proj's
    inputs (`_x_proj_inputs`)."""
    u = _random(shape, device)(shape.batch, shape.length, 2, shape.channels, dt=dtype).permute(2, 0, 3, 1)
    return dict(u=u, **_x_proj_inputs(shape, dtype, device))


def _x_proj_rows_spec(dtype: str, shape: OpShape = OpShape(batch=1, channels=384, length=VIM_TI_224)) -> KernelSpec:
    """kernels/conv1d/xproj.py `_x_proj_rows_kernel` as the front path launches it (Vim-Ti, 224 px, batch 1): u
    (2, B, E, L) a view of (B, L, 2, E), x_proj_t (2, E, W) contiguous, x_dbl (2, B * L, W) fp32. Named
    x_proj_rows/<dtype>/b1."""
    from kernels.conv1d.xproj import x_proj_rows_launch_config

    args = _x_proj_spec_args(dtype, shape)
    cfg = x_proj_rows_launch_config(args["M"], args["E"], args["W"], interpreted=False)
    return spec_from_args(f"x_proj_rows/{dtype}/b1", "kernels.conv1d.xproj", cfg.kernel, args,
                          dict(IEEE=dtype == "fp32", UPCAST=False, **cfg.constexprs),
                          do_not_specialize=("M", "L"), num_warps=cfg.num_warps, num_stages=cfg.num_stages)


register(KernelOp(
    name="x_proj_rows",
    summary="x_proj on the conv's output, one program per block of token rows and direction (the front path's)",
    category="conv",
    forward="kernels.conv1d.op:x_proj_rows",
    reference="kernels.conv1d.reference:x_proj_rows_ref",
    inputs=_x_proj_rows_inputs,
    work=lambda s, dtype: rl.x_proj_rows_work(s.batch, s.channels, s.length, s.dt_rank, dtype=dtype),
    kernels=("kernels.conv1d.xproj:_x_proj_rows_kernel",),
    static_specs=lambda: [_x_proj_rows_spec("bf16")],
    official="the official code runs x_proj as a cuBLAS GEMM (F.linear)",
))


def _norm_in_proj_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """As the front path passes them (vimbench.models.vim `_forward_front`, 16-bit activations): the previous scan's
    halves (B, L, 2E) (a view of (B, L, 2, E)) with out_proj's weight doubled along K (D, 2E), the fp32 residual
    (B, L, D), the norm weight and in_proj's weight (2E, D) in the activation dtype."""
    import torch

    B_, E, L, D = shape.batch, shape.channels, shape.length, shape.d_model
    rnd = _random(shape, device)
    out_w = rnd(D, E, scale=E ** -0.5, dt=dtype)
    return dict(y=rnd(B_, L, 2 * E, dt=dtype), out_w=torch.cat([out_w, out_w], 1),
                residual=rnd(B_, L, D, dt=torch.float32), norm_w=rnd(D, scale=0.1, shift=1.0, dt=torch.float32),
                eps=1e-5, in_w=rnd(2 * E, D, scale=D ** -0.5, dt=dtype))


def _norm_in_proj_spec(dtype: str, shape: OpShape = OpShape(batch=1, channels=384, length=VIM_TI_224)) -> KernelSpec:
    """kernels/norm_in_proj/fwd.py `_norm_in_proj_kernel` as the front path launches it (Vim-Ti, 224 px, batch 1,
    or another batch: from batch 8 a program makes two or more in_proj tiles on an H100's or H200's 132 SMs):
    the halves (B, L, 2E) with out_proj's doubled weight, the fp32 residual, in_proj's weight, xz and r
    contiguous. Named norm_in_proj/<dtype>/b<batch>."""
    from kernels.norm_in_proj.fwd import norm_in_proj_launch_config
    from vimbench.precision import torch_dtype

    B_, E, L, D = shape.batch, shape.channels, shape.length, shape.d_model
    cfg = norm_in_proj_launch_config(B_ * L, D, 2 * E, torch_dtype(dtype), interpreted=False)
    args = {"y_ptr": Ptr(dtype), "ow_ptr": Ptr(dtype), "res_ptr": Ptr("fp32"), "nw_ptr": Ptr("fp32"),
            "iw_ptr": Ptr(dtype), "xz_ptr": Ptr(dtype), "r_ptr": Ptr("fp32"),
            "M": B_ * L, "L": L, "K": 2 * E, "D": D, "N": 2 * E, "eps": 1e-5,
            "stride_y_b": L * 2 * E, "stride_y_l": 2 * E, "stride_y_k": 1, "stride_ow_d": 2 * E, "stride_ow_k": 1,
            "stride_res_b": L * D, "stride_res_l": D, "stride_res_d": 1, "stride_iw_n": D, "stride_iw_d": 1,
            "stride_xz_b": L * 2 * E, "stride_xz_l": 2 * E, "stride_r_b": L * D, "stride_r_l": D}
    return spec_from_args(f"norm_in_proj/{dtype}/b{B_}", "kernels.norm_in_proj.fwd", cfg.kernel, args,
                          dict(HAS_OUT=True, HAS_RES=True, IEEE=dtype == "fp32", UPCAST=False, **cfg.constexprs),
                          do_not_specialize=("M", "L"), num_warps=cfg.num_warps, num_stages=cfg.num_stages)


register(KernelOp(
    name="norm_in_proj",
    summary="a block's entry in one launch: the previous out_proj, residual add + RMSNorm, in_proj (small eager "
            "inference)",
    category="gemm",
    forward="kernels.norm_in_proj.op:norm_in_proj",
    reference="kernels.norm_in_proj.reference:norm_in_proj_ref",
    inputs=_norm_in_proj_inputs,
    work=lambda s, dtype: rl.norm_in_proj_work(s.batch, s.channels, s.length, s.d_model, dtype=dtype),
    kernels=("kernels.norm_in_proj.fwd:_norm_in_proj_kernel",),
    # bf16 only: the model runs the front path for 16-bit activations (fp32 spills: FRONT_DTYPES)
    static_specs=lambda: [_norm_in_proj_spec("bf16"),
                          _norm_in_proj_spec("bf16", OpShape(batch=8, channels=384, length=VIM_TI_224))],
    official="the official code runs out_proj, the add + RMSNorm and in_proj as three launches",
))


def _conv_bwd_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """The forward's inputs and dout laid out like the forward's output ((B, L, 2, E) memory)."""
    args = _conv_inputs(shape, dtype, device)
    rnd = _random(shape, device)
    dout = rnd(shape.batch, shape.length, 2, shape.channels, scale=0.1, dt=dtype).permute(2, 0, 3, 1)
    return dict(dout=dout, **args)


def _conv_bwd_spec(dtype: str, shape: OpShape = STATIC_SHAPE) -> KernelSpec:
    """kernels/conv1d/bwd.py as training launches it (K = 4, channel-last: the token-walking rows kernel): x a view
    of xz (B, L, 2E), dout and dx channel-last ((B, L, 2, E) and (B, L, E) memory), fp32 weight and bias stacks."""
    from kernels.conv1d.bwd import conv1d_bwd_launch_config

    B_, E, L, K = shape.batch, shape.channels, shape.length, shape.d_conv
    cfg = conv1d_bwd_launch_config(B_, E, L, K, channel_last=True, interpreted=False)
    if cfg.kernel != "_conv1d_silu_bidir_bwd_rows_kernel":
        raise VimbenchError(f"static spec conv1d bwd: expected the token-walking kernel at K = {K}, got {cfg.kernel}")
    o_b, o_l, o_dir, _ = contiguous_strides(B_, L, 2, E)
    args = {
        "x_ptr": Ptr(dtype), "w_ptr": Ptr("fp32"), "bias_ptr": Ptr("fp32"), "dout_ptr": Ptr(dtype),
        "dx_ptr": Ptr(dtype), "dw_part_ptr": Ptr("fp32"), "db_part_ptr": Ptr("fp32"), "E": E, "L": L,
        "stride_x_b": L * 2 * E, "stride_x_l": 2 * E,
        **dict(zip(("stride_w_dir", "stride_w_e", "stride_w_k"), contiguous_strides(2, E, K))),
        "stride_bias_dir": E, "stride_bias_e": 1,
        "stride_dout_dir": o_dir, "stride_dout_b": o_b, "stride_dout_l": o_l,
        "stride_dx_b": L * E, "stride_dx_l": E,
    }
    return spec_from_args(f"conv1d/bidir_bwd/{dtype}", "kernels.conv1d.bwd", cfg.kernel, args,
                          dict(HAS_BIAS=True, **cfg.constexprs), do_not_specialize=("L",), num_warps=cfg.num_warps)


register(KernelOp(
    name="conv1d_silu_bidir_bwd",
    summary="backward of conv1d + SiLU, both directions (dx, dweight, dbias), one launch",
    category="conv",
    forward="kernels.conv1d.bwd:conv1d_silu_bidir_bwd",
    reference="kernels.conv1d.reference:conv1d_silu_bidir_bwd_ref",
    inputs=_conv_bwd_inputs,
    work=lambda s, dtype: rl.conv1d_bidir_bwd_work(s.batch, s.channels, s.length, s.d_conv, dtype=dtype),
    kernels=("kernels.conv1d.bwd:_conv1d_silu_bidir_bwd_rows_kernel",
             "kernels.conv1d.bwd:_conv1d_silu_bidir_bwd_kernel"),
    static_specs=lambda: [_conv_bwd_spec("bf16"), _conv_bwd_spec("fp32")],
    # the training shapes: Vim-Ti at 1248 px, batch 8, and 224 px, batch 128
    regression=_both_dtypes((8, 384, VIM_TI_1248), (128, 384, VIM_TI_224)),
    official="the official causal_conv1d backward is not benchmarked",
))


# ---------------------------------------------------------------------------------------------- add + RMSNorm

def _norm_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    import torch

    B_, L, D = shape.batch, shape.length, shape.d_model
    rnd = _random(shape, device)
    return dict(x=rnd(B_, L, D, dt=dtype), residual=rnd(B_, L, D, dt=torch.float32),
                weight=torch.ones(D, device=device), eps=1e-5, out_dtype=dtype)


def _norm_spec(dtype: str, residual: bool = True, shape: OpShape = STATIC_SHAPE) -> KernelSpec:
    """kernels/rmsnorm/fwd.py `_add_rmsnorm_kernel` as the Vim blocks launch it: x (B*L, D) in the activation
    dtype, fp32 residual and weight, y in the activation dtype, r fp32."""
    from kernels.rmsnorm.fwd import rmsnorm_launch_config

    rows, dim = shape.rows, shape.d_model
    cfg = rmsnorm_launch_config(rows, dim, interpreted=False)
    args = {"x_ptr": Ptr(dtype), "res_ptr": Ptr("fp32" if residual else dtype), "w_ptr": Ptr("fp32"),
            "y_ptr": Ptr(dtype), "r_ptr": Ptr("fp32"), "rows": rows, "D": dim, "eps": 1e-5,
            "stride_x": dim, "stride_res": dim, "stride_y": dim, "stride_r": dim}
    return spec_from_args(f"rmsnorm/{'add' if residual else 'first'}/{dtype}", "kernels.rmsnorm.fwd", cfg.kernel,
                          args, dict(HAS_RES=residual, **cfg.constexprs), num_warps=cfg.num_warps)


register(KernelOp(
    name="add_rmsnorm",
    summary="residual add + RMSNorm over the model width (fp32 residual stream)",
    category="norm",
    forward="kernels.rmsnorm.op:add_rmsnorm",
    reference="kernels.rmsnorm.reference:add_rmsnorm_ref",
    inputs=_norm_inputs,
    work=lambda s, dtype: rl.add_rmsnorm_work(s.rows, s.d_model, dtype=dtype),
    kernels=("kernels.rmsnorm.fwd:_add_rmsnorm_kernel",),
    static_specs=lambda: [_norm_spec("bf16"), _norm_spec("fp32"), _norm_spec("bf16", residual=False)],
    regression=_both_dtypes((64, 384, VIM_TI_1248)),
    case_label=lambda s: f"r{s.rows}_d{s.d_model}",
    official="no official CUDA op for add_rmsnorm is benchmarked",
    backward="kernels.rmsnorm.bwd:add_rmsnorm_bwd",
))


def _norm_bwd_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """dy in the activation dtype, dr and the saved r fp32, as the Vim blocks' backward passes them."""
    import torch

    B_, L, D = shape.batch, shape.length, shape.d_model
    rnd = _random(shape, device)
    return dict(dy=rnd(B_, L, D, dt=dtype), dr=rnd(B_, L, D, dt=torch.float32), r=rnd(B_, L, D, dt=torch.float32),
                weight=torch.ones(D, device=device), eps=1e-5, x_dtype=dtype, has_residual=True)


def _norm_bwd_spec(dtype: str, shape: OpShape = STATIC_SHAPE) -> KernelSpec:
    """kernels/rmsnorm/bwd.py `_add_rmsnorm_bwd_kernel` as the Vim blocks' backward launches it: dy and dx in the
    activation dtype, dr, r, dresidual and weight fp32."""
    from kernels.rmsnorm.bwd import rmsnorm_bwd_launch_config

    rows, dim = shape.rows, shape.d_model
    cfg = rmsnorm_bwd_launch_config(rows, dim, interpreted=False)
    args = {"dy_ptr": Ptr(dtype), "dr_ptr": Ptr("fp32"), "r_ptr": Ptr("fp32"), "w_ptr": Ptr("fp32"),
            "dx_ptr": Ptr(dtype), "dres_ptr": Ptr("fp32"), "dw_part_ptr": Ptr("fp32"), "rows": rows, "D": dim,
            "eps": 1e-5, "stride_dy": dim, "stride_dr": dim, "stride_r": dim, "stride_dx": dim, "stride_dres": dim}
    return spec_from_args(f"rmsnorm/add_bwd/{dtype}", "kernels.rmsnorm.bwd", cfg.kernel, args,
                          dict(HAS_DR=True, HAS_RES=True, **cfg.constexprs), num_warps=cfg.num_warps)


register(KernelOp(
    name="add_rmsnorm_bwd",
    summary="backward of residual add + RMSNorm (dx, fp32 dresidual, dweight from per-program partials)",
    category="norm",
    forward="kernels.rmsnorm.bwd:add_rmsnorm_bwd",
    reference="kernels.rmsnorm.reference:add_rmsnorm_bwd_ref",
    inputs=_norm_bwd_inputs,
    work=lambda s, dtype: rl.add_rmsnorm_bwd_work(s.rows, s.d_model, dtype=dtype),
    kernels=("kernels.rmsnorm.bwd:_add_rmsnorm_bwd_kernel",),
    static_specs=lambda: [_norm_bwd_spec("bf16"), _norm_bwd_spec("fp32")],
    regression=_both_dtypes((8, 384, VIM_TI_1248)),
    case_label=lambda s: f"r{s.rows}_d{s.d_model}",
    official="no official CUDA op for add_rmsnorm is benchmarked",
))


# ---------------------------------------------------------------------------------------------- z gate

def _zgate_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """The scan's ungated halves (2, B, E, L) as a view of (B, L, 2, E) (written over u), the mixer input h
    (B, L, D) and in_proj's z rows (E, D), as the mixer passes them in memory mode lean-gated."""
    B_, E, L, D = shape.batch, shape.channels, shape.length, shape.d_model
    rnd = _random(shape, device)
    in_proj = rnd(2 * E, D, scale=D ** -0.5, dt=dtype)
    return dict(y=rnd(B_, L, 2, E, dt=dtype).permute(2, 0, 3, 1), h=rnd(B_, L, D, dt=dtype), z_weight=in_proj[E:])


def _zgate_spec(dtype: str, shape: OpShape = STATIC_SHAPE) -> KernelSpec:
    """kernels/zgate/fwd.py `_zgate_kernel` as the mixer launches it in mode lean-gated: the halves laid out
    (B, L, 2, E), h (B, L, D) and out (B, L, E) contiguous, z_weight a row slice of in_proj (stride D)."""
    from kernels.zgate.fwd import zgate_launch_config
    from vimbench.precision import torch_dtype

    B_, E, L, D = shape.batch, shape.channels, shape.length, shape.d_model
    cfg = zgate_launch_config(B_ * L, E, D, torch_dtype(dtype), interpreted=False)
    args = {"y_ptr": Ptr(dtype), "h_ptr": Ptr(dtype), "w_ptr": Ptr(dtype), "out_ptr": Ptr(dtype),
            "M": B_ * L, "L": L, "E": E, "D": D,
            "stride_y_dir": E, "stride_y_b": L * 2 * E, "stride_y_e": 1, "stride_y_l": 2 * E,
            "stride_h_b": L * D, "stride_h_l": D, "stride_h_d": 1, "stride_w_e": D, "stride_w_d": 1,
            "stride_o_b": L * E, "stride_o_l": E, "stride_o_e": 1}
    return spec_from_args(f"zgate/halves/{dtype}", "kernels.zgate.fwd", cfg.kernel, args,
                          dict(TWO=True, IEEE=dtype == "fp32", UPCAST=False, EARLY_Y=dtype != "fp32",
                               **cfg.constexprs),
                          do_not_specialize=("M", "L"), num_warps=cfg.num_warps)


register(KernelOp(
    name="zgate",
    summary="z = h @ W_z^T made tile by tile and applied as the gate, the halves summed: (y_f + y_b) * SiLU(z)",
    category="gemm",
    forward="kernels.zgate.op:zgate",
    reference="kernels.zgate.reference:zgate_ref",
    inputs=_zgate_inputs,
    work=lambda s, dtype: rl.zgate_work(s.batch, s.channels, s.length, s.d_model, dtype=dtype),
    kernels=("kernels.zgate.fwd:_zgate_kernel",),
    static_specs=lambda: [_zgate_spec("bf16"), _zgate_spec("fp32")],
    regression=_both_dtypes((64, 384, VIM_TI_1248)),
    official="the official code has no fused z gate (z is in_proj's output, gated inside the scan)",
))


# ---------------------------------------------------------------------------------------------- dt_proj + softplus

def _dt_softplus_inputs(shape: OpShape, dtype, device: str) -> dict[str, Any]:
    """The low-rank dt rows as the mixer passes them at inference (a (2, B * L, R) view of x_dbl's dt columns, fp32
    for 16-bit models as the model's x_proj writes it), dt_proj's weights (2, R, E) in the activation dtype, the
    fp32 bias, and the output dtype the model asks for (fp16 for 16-bit activations)."""
    import torch

    from vimbench.layout import XDblLayout
    from kernels.dt_softplus.fwd import delta_dtype

    lay = XDblLayout(shape.dt_rank, shape.d_state)
    rnd = _random(shape, device)
    x_dbl = rnd(2, shape.batch * shape.length, lay.width, dt=torch.float32)
    return dict(dt=x_dbl[..., lay.dt], weight=rnd(2, shape.dt_rank, shape.channels, scale=shape.dt_rank ** -0.5,
                                                    dt=dtype),
                bias=rnd(2, shape.channels, shift=-3.0, dt=torch.float32), out_dtype=delta_dtype(dtype))


def _dt_softplus_spec(dtype: str, shape: OpShape = STATIC_SHAPE) -> KernelSpec:
    """kernels/dt_softplus/fwd.py `_dt_softplus_kernel` as the mixer launches it at Vim-Ti 1248 px, batch 64: dt a
    column slice of the fp32 x_dbl (2, B * L, W), dt_proj_t (2, R, E) and the output (2, B * L, E) contiguous."""
    import torch

    from kernels.dt_softplus.fwd import dt_softplus_launch_config, short_log1p
    from vimbench.layout import XDblLayout

    lay = XDblLayout(shape.dt_rank, shape.d_state)
    rows, E, R = shape.batch * shape.length, shape.channels, shape.dt_rank
    cfg = dt_softplus_launch_config(rows, E, R, interpreted=False, fp32=dtype == "fp32")
    out = "fp16" if dtype != "fp32" else "fp32"
    args = {"dt_ptr": Ptr("fp32"), "w_ptr": Ptr(dtype), "bias_ptr": Ptr("fp32"), "out_ptr": Ptr(out),
            "M": rows, "E": E, "R": R,
            "stride_dt_dir": rows * lay.width, "stride_dt_m": lay.width, "stride_dt_r": 1,
            **dict(zip(("stride_w_dir", "stride_w_r", "stride_w_e"), contiguous_strides(2, R, E))),
            "stride_b_dir": E, "stride_b_e": 1,
            **dict(zip(("stride_o_dir", "stride_o_m", "stride_o_e"), contiguous_strides(2, rows, E)))}
    return spec_from_args(f"dt_softplus/{dtype}", "kernels.dt_softplus.fwd", cfg.kernel, args,
                          dict(IEEE=dtype == "fp32", UPCAST=False, USE_ASM=True, APPROX=dtype != "fp32",
                               SHORT=short_log1p(torch.float16 if out == "fp16" else torch.float32),
                               **cfg.constexprs),
                          do_not_specialize=("M",), num_warps=cfg.num_warps)


register(KernelOp(
    name="dt_softplus",
    summary="delta = softplus(dt @ dt_proj + bias) for both directions: the delta GEMM with the scan's bias and "
            "softplus in its epilogue (inference)",
    category="gemm",
    forward="kernels.dt_softplus.op:dt_softplus",
    reference="kernels.dt_softplus.reference:dt_softplus_ref",
    inputs=_dt_softplus_inputs,
    work=lambda s, dtype: rl.dt_softplus_work(s.batch, s.channels, s.length, s.dt_rank, dtype=dtype),
    kernels=("kernels.dt_softplus.fwd:_dt_softplus_kernel",),
    static_specs=lambda: [_dt_softplus_spec("bf16"), _dt_softplus_spec("fp32")],
    regression=_both_dtypes((64, 384, VIM_TI_1248)),
    official="the official code runs dt_proj as a cuBLAS GEMM and the bias and softplus inside its scan",
))
