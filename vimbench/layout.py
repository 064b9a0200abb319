"""Memory layouts the Vim mixer and the kernels agree on. Importing this module does not import torch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class XDblLayout:
    """Column order of the x_proj output (x_dbl) as the mixer computes it: [B | C | dt | zero pad].

    The official weight's rows are [dt | B | C] (dt_rank + 2 * d_state = 44 for Vim-Ti). The mixer reorders them
    and pads the row to a multiple of 16 elements, so that every token's B and C rows start 16-element aligned
    and the scan kernel loads each with a few vector loads instead of 2 * d_state scalar ones."""
    dt_rank: int
    d_state: int

    @property
    def width(self) -> int:
        return -(-(2 * self.d_state + self.dt_rank) // 16) * 16

    @property
    def B(self) -> slice:
        return slice(0, self.d_state)

    @property
    def C(self) -> slice:
        return slice(self.d_state, 2 * self.d_state)

    @property
    def dt(self) -> slice:
        return slice(2 * self.d_state, 2 * self.d_state + self.dt_rank)

    def reorder(self, weight):
        """(..., dt_rank + 2N, E) official x_proj weight (a torch tensor; leading dims, e.g. stacked layers, are
        kept) -> (..., width, E) in this layout, pad rows zero."""
        import torch

        r, n = self.dt_rank, self.d_state
        # F.pad rather than a cat with a zeros tensor: inductor's freezing constant-folds a pad of a parameter,
        # not a cat with a `full` (which it keeps lazy), so a frozen compiled graph does no per-call reordering
        rows = torch.cat([weight[..., r:r + n, :], weight[..., r + n:r + 2 * n, :], weight[..., :r, :]], dim=-2)
        return torch.nn.functional.pad(rows, (0, 0, 0, self.width - r - 2 * n))
