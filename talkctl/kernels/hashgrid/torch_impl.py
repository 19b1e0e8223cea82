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


def _cells(u: Tensor, lt: LevelTensors) -> tuple[Tensor, Tensor]:
    """u (M, 2) in [0, 1] -> table rows (4, L, M) (level offset included) and fractional
    positions (2, L, M) in u's dtype. Corners: (i, j), (i+1, j), (i, j+1), (i+1, j+1).

    Corner- and level-major layouts keep every elementwise op contiguous, and the loop
    over levels uses scalar constants: both matter several-fold for torch on CPU."""
    M, L = u.shape[0], len(lt.levels)
    u32 = u.float().t().contiguous()  # (2, M)
    rows = torch.empty(4, L, M, dtype=torch.long, device=u.device)
    frac = torch.empty(2, L, M, dtype=u.dtype, device=u.device)
    ut = u.t()
    for k, (lv, scale32) in enumerate(zip(lt.levels, lt.scale)):
        # Cells in float32 like tcnn whatever the input dtype; fractions in u's dtype so
        # that float64 gradchecks stay exact.
        cell = torch.floor(u32 * scale32 + 0.5)
        torch.sub(ut * scale32.to(u.dtype) + 0.5, cell.to(u.dtype), out=frac[:, k])
        i = cell.long()
        ix, iy = i[0], i[1]
        r = rows[:, k]
        if lv.dense:
            b = iy * lv.resolution + ix
            torch.add(b, 1, out=r[1])
            torch.add(b, lv.resolution, out=r[2])
            torch.add(b, lv.resolution + 1, out=r[3])
            r[0] = b
            # (i + j*res) mod size: only the upper boundary cell can pass `size`, by less
            # than `size`, so one conditional subtraction (as clamp arithmetic) does it.
            r -= (r - (lv.size - 1)).clamp_(0, 1) * lv.size
        else:
            hy0 = iy * PRIME_Y
            hy1 = hy0 + PRIME_Y
            ix1 = ix + 1
            torch.bitwise_xor(ix, hy0, out=r[0])
            torch.bitwise_xor(ix1, hy0, out=r[1])
            torch.bitwise_xor(ix, hy1, out=r[2])
            torch.bitwise_xor(ix1, hy1, out=r[3])
            r &= lv.size - 1
        r += lv.offset
    return rows, frac


def _bilinear(frac: Tensor) -> Tensor:
    """(2, ...) fractions -> (4, ...) corner weights."""
    fx, fy = frac[0], frac[1]
    gx, gy = 1 - fx, 1 - fy
    return torch.stack([gx * gy, fx * gy, gx * fy, fx * fy])


def slot_indices(u: Tensor, lt: LevelTensors) -> tuple[Tensor, Tensor]:
    """u (M, 2) in [0, 1] -> table rows (M, L, 4) and bilinear weights (M, L, 4)."""
    rows, frac = _cells(u.detach(), lt)
    return rows.permute(2, 1, 0), _bilinear(frac).permute(2, 1, 0)


class _Encode(torch.autograd.Function):
    """Bilinear lookups at every level, with a hand-written backward to the table
    (one 1D index_add) and to the plane coordinates (weight derivatives)."""

    @staticmethod
    def forward(ctx, u: Tensor, table: Tensor, lt: LevelTensors):
        P, total, F = table.shape
        M = u.shape[0]
        rows, frac = _cells(u, lt)  # u is (N*P, 2), plane-minor
        rows += (torch.arange(P, device=u.device) * total).repeat(M // P)
        L = rows.shape[1]
        if F == 1:
            elems = rows.reshape(-1)
        else:
            elems = (rows.unsqueeze(-1) * F + torch.arange(F, device=u.device)).reshape(-1)
        vals = table.reshape(-1).index_select(0, elems).reshape(4, L, M, F)
        fx, fy = frac[0].unsqueeze(-1).to(vals.dtype), frac[1].unsqueeze(-1).to(vals.dtype)
        v0, v1, v2, v3 = vals
        lo = torch.lerp(v0, v1, fx)  # (1-fx) v0 + fx v1
        hi = torch.lerp(v2, v3, fx)
        out = torch.lerp(lo, hi, fy)  # (L, M, F)
        ctx.save_for_backward(elems, frac, vals if ctx.needs_input_grad[0] else None)
        ctx.lt, ctx.table_shape = lt, table.shape
        return out.permute(1, 0, 2)  # (M, L, F)

    @staticmethod
    def backward(ctx, g: Tensor):
        elems, frac, vals = ctx.saved_tensors
        g = g.permute(1, 0, 2).contiguous()  # (L, M, F)
        fx, fy = frac[0].unsqueeze(-1).to(g.dtype), frac[1].unsqueeze(-1).to(g.dtype)
        g_table = None
        if ctx.needs_input_grad[1]:
            gy1 = g * fy
            gy0 = g - gy1
            contrib = torch.stack([gy0 - gy0 * fx, gy0 * fx, gy1 - gy1 * fx, gy1 * fx])
            g_table = g.new_zeros(ctx.table_shape.numel()).index_add_(0, elems, contrib.reshape(-1))
            g_table = g_table.reshape(ctx.table_shape)
        g_u = None
        if ctx.needs_input_grad[0]:
            v0, v1, v2, v3 = vals
            d_fx = (torch.lerp(v1 - v0, v3 - v2, fy) * g).sum(-1)  # (L, M)
            d_fy = (torch.lerp(v2 - v0, v3 - v1, fx) * g).sum(-1)
            scale = ctx.lt.scale.to(g.dtype)
            g_u = torch.stack([scale @ d_fx, scale @ d_fy], -1)  # d frac / d u = scale
        return g_u, g_table, None


def encode(u: Tensor, table: Tensor, lt: LevelTensors) -> Tensor:
    """u (N, P, 2) plane coordinates in [0, 1]; table (P, total, F) -> (N, P * L * F)."""
    N, P, _ = u.shape
    out = _Encode.apply(u.reshape(N * P, 2), table, lt)
    return out.reshape(N, -1)
