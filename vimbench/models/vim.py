"""Vision Mamba (Vim, bimamba v2, middle class token), exactly as ../shared/spec/vim_model.md describes it.

Parameter and buffer names equal the official checkpoints' state-dict keys, so
`model.load_state_dict(torch.load(path)["model"])` loads a released checkpoint. The heavy per-token work goes
through an op table (`vimbench.models.ops`); this module holds only the architecture and the GEMMs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vimbench.models.ops import VimOps, get_ops

PATCH = 16
D_STATE = 16
D_CONV = 4
EXPAND = 2
NORM_EPS = 1e-5


class RMSNorm(nn.Module):
    """Weight-only RMSNorm; the computation lives in the op table (fused with the residual add)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer ("bimamba v2", outputs averaged). Input and output (B, L, D)."""

    def __init__(self, d_model: int, depth: int, ops: VimOps):
        super().__init__()
        self.ops = ops
        inner = EXPAND * d_model
        self.d_inner, self.dt_rank = inner, math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * inner, bias=False)
        self.out_proj = nn.Linear(inner, d_model, bias=False)
        for suffix in ("", "_b"):
            self.add_module("conv1d" + suffix, nn.Conv1d(inner, inner, D_CONV, groups=inner, padding=D_CONV - 1))
            self.add_module("x_proj" + suffix, nn.Linear(inner, self.dt_rank + 2 * D_STATE, bias=False))
            self.add_module("dt_proj" + suffix, nn.Linear(self.dt_rank, inner, bias=True))
        a_init = torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(inner, 1)
        self.A_log = nn.Parameter(torch.log(a_init))
        self.A_b_log = nn.Parameter(torch.log(a_init.clone()))
        self.D = nn.Parameter(torch.ones(inner))
        self.D_b = nn.Parameter(torch.ones(inner))
        self._init_weights(depth)

    @torch.no_grad()
    def _init_weights(self, depth: int) -> None:
        std = self.dt_rank ** -0.5
        for proj, zero_bias in ((self.dt_proj, False), (self.dt_proj_b, True)):
            nn.init.uniform_(proj.weight, -std, std)
            if zero_bias:  # the official init pass leaves the backward bias at zero
                proj.bias.zero_()
                continue
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt = dt.clamp_min(1e-4)
            proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.out_proj.weight.div_(math.sqrt(depth))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        inner, rank = self.d_inner, self.dt_rank
        # Channel-last throughout: per-token channel runs are contiguous, so the scan kernel's per-token loads
        # coalesce. Ops see (B, E, L) / (2, B, N, L) shaped views of these (B, L, ...) tensors.
        xz = F.linear(h, self.in_proj.weight)  # (B, L, 2E)
        x = xz[..., :inner].transpose(1, 2)  # (B, E, L) view, channel stride 1
        z = xz[..., inner:].transpose(1, 2)
        conv_w = torch.stack([self.conv1d.weight[:, 0], self.conv1d_b.weight[:, 0]])  # (2, E, K)
        conv_b = torch.stack([self.conv1d.bias, self.conv1d_b.bias])  # (2, E)
        u = self.ops.conv1d_silu_bidir(x, conv_w, conv_b)  # (2, B, E, L)
        u_tokens = u.transpose(2, 3)  # (2, B, L, E)
        w_x = torch.stack([self.x_proj.weight, self.x_proj_b.weight]).unsqueeze(1)  # (2, 1, R+2N, E)
        x_dbl = torch.matmul(u_tokens, w_x.transpose(2, 3).to(u.dtype))  # (2, B, L, R+2N)
        w_dt = torch.stack([self.dt_proj.weight, self.dt_proj_b.weight]).unsqueeze(1)  # (2, 1, E, R)
        # (2, B, L, E) -> (2, B, E, L) view; the dt bias is added inside the scan
        delta = torch.matmul(x_dbl[..., :rank], w_dt.transpose(2, 3).to(x_dbl.dtype)).transpose(2, 3)
        B = x_dbl[..., rank:rank + D_STATE].transpose(2, 3)  # (2, B, N, L) view
        C = x_dbl[..., rank + D_STATE:].transpose(2, 3)
        A = -torch.exp(torch.stack([self.A_log, self.A_b_log]).float())  # (2, E, N)
        D = torch.stack([self.D, self.D_b]).float()
        dt_bias = torch.stack([self.dt_proj.bias, self.dt_proj_b.bias]).float()
        y = self.ops.bimamba_scan(u, delta, A, B, C, D, z, dt_bias)  # (B, E, L) = mean of directions * silu(z)
        return F.linear(y.transpose(1, 2), self.out_proj.weight)


class VimBlock(nn.Module):
    def __init__(self, d_model: int, depth: int, ops: VimOps):
        super().__init__()
        self.mixer = BiMambaMixer(d_model, depth, ops)
        self.norm = RMSNorm(d_model)


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, embed_dim: int):
        super().__init__()
        self.grid = img_size // PATCH
        self.num_patches = self.grid * self.grid
        self.proj = nn.Conv2d(3, embed_dim, PATCH, PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, M, D), row-major patches


class VisionMamba(nn.Module):
    """Vim with the class token in the middle of the patch sequence and the head on that token.

    img_size fixes the number of patches (and the position embedding's length); inputs must be that size."""

    def __init__(self, img_size: int = 224, embed_dim: int = 192, depth: int = 24, num_classes: int = 1000,
                 backend: str = "torch"):
        super().__init__()
        if img_size < PATCH:
            raise ValueError(f"img_size {img_size} is smaller than one {PATCH}px patch")
        self.ops = get_ops(backend)
        self.backend = backend
        self.img_size, self.embed_dim, self.depth = img_size, embed_dim, depth
        self.patch_embed = PatchEmbed(img_size, embed_dim)
        self.num_tokens = self.patch_embed.num_patches + 1
        self.cls_position = self.patch_embed.num_patches // 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        self.layers = nn.ModuleList(VimBlock(embed_dim, depth, self.ops) for _ in range(depth))
        self.norm_f = RMSNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _activation_dtype(self) -> torch.dtype:
        if torch.is_autocast_enabled():
            return torch.get_autocast_dtype(self.pos_embed.device.type)
        return self.pos_embed.dtype

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)  # (B, M, D)
        batch, mid = x.shape[0], self.cls_position
        cls = self.cls_token.expand(batch, -1, -1).to(x.dtype)
        x = torch.cat([x[:, :mid], cls, x[:, mid:]], dim=1) + self.pos_embed  # (B, L, D)
        act_dtype = self._activation_dtype()
        hidden, residual = x, None
        for block in self.layers:
            # Residual stream kept in fp32; the normalized input to the mixer in the activation dtype.
            normed, residual = self.ops.add_rmsnorm(hidden, residual, block.norm.weight, NORM_EPS, act_dtype)
            hidden = block.mixer(normed)
        normed, _ = self.ops.add_rmsnorm(hidden, residual, self.norm_f.weight, NORM_EPS, act_dtype)
        return normed[:, mid]  # (B, D): the normalized middle (class) token

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))
