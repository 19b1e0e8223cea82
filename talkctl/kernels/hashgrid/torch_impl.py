"""Pure-torch tri-plane hash-grid lookup (CPU and CUDA), differentiable in table and points."""
from __future__ import annotations

import torch
from torch import Tensor

from .levels import PRIME_Y, Level


class LevelTensors:
    """Per-level constants, plus cached per-device tensors."""

    def __init__(self, levels: tuple[Level, ...], device, dtype):
        self.levels = levels
        self.scale = torch.tensor([lv.scale for lv in levels], device=device, dtype=torch.float32)
        self.device, self.dtype = device, dtype


def slot_indices(u: Tensor, lt: LevelTensors) -> tuple[Tensor, Tensor]:
    """u (M, 2) in [0, 1] -> table rows (M, L, 4) (level offset included) and bilinear
    weights (M, L, 4) in u's dtype. Corner order: (i, j), (i+1, j), (i, j+1), (i+1, j+1).

    A loop over levels with scalar constants: per-level broadcasting of full-size int64
    tensors is several times slower in torch on CPU."""
    u32 = u.detach().float()
    slots, weights = [], []
    for lv, scale32 in zip(lt.levels, lt.scale):
        # Cell positions in float32 like tcnn, whatever the input dtype; the weights
        # keep the input dtype so float64 gradchecks stay exact.
        cell = torch.floor(u32 * scale32 + 0.5)
        frac = u * scale32.to(u.dtype) + 0.5 - cell.to(u.dtype)
        i = cell.long()
        ix, iy = i[:, 0], i[:, 1]
        if lv.dense:
            b = ix + iy * lv.resolution
            s = torch.stack([b, b + 1, b + lv.resolution, b + lv.resolution + 1], 1)
            s = torch.remainder(s, lv.size)  # only the upper boundary cell wraps (as tcnn)
        else:
            hy0 = iy * PRIME_Y
            hy1 = hy0 + PRIME_Y
            ix1 = ix + 1
            s = torch.stack([ix ^ hy0, ix1 ^ hy0, ix ^ hy1, ix1 ^ hy1], 1) & (lv.size - 1)
        slots.append(s + lv.offset)
        fx, fy = frac[:, 0], frac[:, 1]
        gx, gy = 1 - fx, 1 - fy
        weights.append(torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], 1))
    return torch.stack(slots, 1), torch.stack(weights, 1)


class _Lookup(torch.autograd.Function):
    """vals = table_flat[rows] with a 1D index_add backward (2D row gathers are slower)."""

    @staticmethod
    def forward(ctx, table_flat: Tensor, rows: Tensor):
        ctx.save_for_backward(rows)
        ctx.n = table_flat.shape[0]
        return table_flat.index_select(0, rows)

    @staticmethod
    def backward(ctx, g):
        (rows,) = ctx.saved_tensors
        grad = g.new_zeros(ctx.n).index_add_(0, rows, g)
        return grad, None


def encode(u: Tensor, table: Tensor, lt: LevelTensors) -> Tensor:
    """u (N, P, 2) plane coordinates in [0, 1]; table (P, total, F) -> (N, P * L * F)."""
    N, P, _ = u.shape
    total, F = table.shape[1], table.shape[2]
    slots, w = slot_indices(u.reshape(N * P, 2), lt)  # (N*P, L, 4)
    L = slots.shape[1]
    plane = (torch.arange(P, device=u.device) * total).repeat(N)  # row offset of each plane
    rows = (slots + plane[:, None, None]).reshape(-1)
    if F == 1:
        vals = _Lookup.apply(table.reshape(-1), rows)
    else:
        elems = (rows[:, None] * F + torch.arange(F, device=u.device)).reshape(-1)
        vals = _Lookup.apply(table.reshape(-1), elems)
    vals = vals.reshape(N * P, L, 4, F)
    out = (vals * w.unsqueeze(-1).to(vals.dtype)).sum(2)  # (N*P, L, F)
    return out.reshape(N, P * L * F)
