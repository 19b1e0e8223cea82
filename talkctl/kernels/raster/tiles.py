"""Tile binning: which Gaussians may touch which pixels, in depth order.

Two grids are involved:
- The 16x16 *tile* grid decides visibility, exactly as gsplat does: a Gaussian may
  colour a pixel only if the pixel's tile lies in the Gaussian's tile rectangle
  (its footprint radius box, see projection.py, rounded out to whole tiles).
- Work is done per *unit*, a `sub` x `sub` block inside a tile (sub divides 16).
  A unit's list keeps only Gaussians whose 1/255 footprint (the ellipse where
  opacity * exp(-sigma) >= 1/255) overlaps the unit. This drops pairs that would
  be skipped anyway, so results are identical to per-tile lists, with less work.

Each unit's list is sorted front to back (by camera depth, ties by index). Lists
are stored flat (`gids`, `offsets`, `counts`); `chunks` groups units of similar
list length so the compositing kernel works on dense (units, pixels, list) blocks
with little padding. Memory is proportional to the number of Gaussian-unit pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .projection import ALPHA_MIN, opacity_extent

TILE = 16


@dataclass
class Binning:
    C: int
    N: int
    H: int
    W: int
    sub: int  # unit side in pixels
    Uh: int  # units per column / row of one padded image
    Uw: int
    gids: Tensor  # (P + 1,) int64 flat ids c*N + n, depth-sorted within each unit; last = null
    offsets: Tensor  # (n_units,) start of each unit's list in gids
    counts: Tensor  # (n_units,) list lengths
    segment: int = 64  # list slots processed per step (early termination between steps)
    chunks: list = field(default_factory=list)  # [(units (U,) int64, L int)]

    @property
    def n_units(self) -> int:
        return self.C * self.Uh * self.Uw

    @property
    def n_pairs(self) -> int:
        return self.gids.numel() - 1


def _unit_range(centre: Tensor, half: Tensor, radius: Tensor, n_tiles: int, sub: int):
    """Units [lo, hi) along one axis: tile box of `radius` ∩ pixels within `half` of centre."""
    t_lo = torch.floor((centre - radius) / TILE).clamp(0, n_tiles)
    t_hi = torch.ceil((centre + radius) / TILE).clamp(0, n_tiles)
    per = TILE // sub
    # pixel i (centre i + 0.5) can be reached when |i + 0.5 - centre| <= half
    p_lo = torch.ceil(centre - half - 0.5)
    p_hi = torch.floor(centre + half - 0.5)
    lo = torch.maximum(t_lo * per, torch.floor(p_lo / sub))
    hi = torch.minimum(t_hi * per, torch.floor(p_hi / sub) + 1)
    return lo.long(), hi.long()


@torch.no_grad()
def bin_gaussians(
    means2d: Tensor,  # (C, N, 2)
    cov2d: Tensor,  # (C, N, 3) dilated covariance (xx, xy, yy)
    conics: Tensor,  # (C, N, 3) its inverse (a, b, c)
    depths: Tensor,  # (C, N)
    radii: Tensor,  # (C, N) int, 0 = culled
    opacities: Tensor,  # (C, N)
    width: int,
    height: int,
    sub: int = 8,
    chunk_elems: int = 1 << 18,
    segment: int = 64,
) -> Binning:
    if TILE % sub:
        raise ValueError(f"sub-tile size {sub} must divide {TILE}")
    C, N = radii.shape
    dev = means2d.device
    tw, th = -(-width // TILE), -(-height // TILE)
    Uw, Uh = tw * TILE // sub, th * TILE // sub
    S = sub * sub

    vis = radii > 0
    # Half-extent of the 1/255 footprint along x and y (widened a hair so rounding never
    # drops a pixel that the exact test would keep).
    t = opacity_extent(opacities).clamp(min=0)
    half_x = torch.sqrt(2 * t * cov2d[..., 0]) * (1 + 1e-4) + 1e-3
    half_y = torch.sqrt(2 * t * cov2d[..., 2]) * (1 + 1e-4) + 1e-3
    r = radii.to(means2d.dtype)
    x0, x1 = _unit_range(means2d[..., 0], half_x, r, tw, sub)
    y0, y1 = _unit_range(means2d[..., 1], half_y, r, th, sub)
    nx, ny = (x1 - x0).clamp(min=0), (y1 - y0).clamp(min=0)
    cnt = torch.where(vis, nx * ny, torch.zeros_like(nx)).flatten()

    # Depth rank within each camera (stable: ties keep index order).
    order = torch.sort(depths, dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(N, device=dev).expand(C, N))

    sel = torch.nonzero(cnt).squeeze(1)  # flat ids with at least one candidate unit
    cnt_sel = cnt.index_select(0, sel)
    P = int(cnt_sel.sum().item()) if sel.numel() else 0
    rep = torch.repeat_interleave(torch.arange(sel.numel(), device=dev), cnt_sel)
    # One gather per dtype for everything a candidate needs (gathers dominate here).
    start = torch.cumsum(cnt_sel, 0) - cnt_sel
    ints = torch.stack([x0.flatten(), y0.flatten(), nx.flatten()], 1).index_select(0, sel)
    ints = torch.cat([ints, start[:, None]], 1).index_select(0, rep)
    con = conics.reshape(-1, 3)
    limit = torch.sqrt(2 * t.reshape(-1, 1)) * (1 + 1e-4) + 1e-4
    flts = torch.cat([means2d.reshape(-1, 2), con, limit], 1).index_select(0, sel).index_select(0, rep)
    j = torch.arange(P, device=dev) - ints[:, 3]
    oy = torch.div(j, ints[:, 2], rounding_mode="floor")
    ux = ints[:, 0] + (j - oy * ints[:, 2])
    uy = ints[:, 1] + oy

    # Drop candidate units that the footprint ellipse misses (its bounding box is much
    # larger for thin, rotated splats). Conservative test in the metric ||d||_A with
    # sigma = ½||d||²_A: for pixel centres within h of the unit centre uc,
    # ||p - m||_A >= ||uc - m||_A - max_corner ||δ||_A = ||uc - m||_A - h sqrt(a + c + 2|b|).
    mx, my, a, b, c, lim = flts.unbind(1)
    h = sub / 2 - 0.5
    dx = (ux.to(flts.dtype) + 0.5) * sub - mx
    dy = (uy.to(flts.dtype) + 0.5) * sub - my
    dist = torch.sqrt((a * dx * dx + 2 * b * dx * dy + c * dy * dy).clamp(min=0))
    reach = h * torch.sqrt((a + c + 2 * b.abs()).clamp(min=0))
    hit = torch.nonzero(dist - reach <= lim).squeeze(1)
    g = sel.index_select(0, rep.index_select(0, hit))
    ux, uy = ux.index_select(0, hit), uy.index_select(0, hit)

    cam = torch.div(g, N, rounding_mode="floor")
    unit = (cam * Uh + uy) * Uw + ux
    key = unit * max(N, 1) + rank.flatten().index_select(0, g)
    key, perm = torch.sort(key)
    gids = g.index_select(0, perm)
    unit_sorted = torch.div(key, max(N, 1), rounding_mode="floor")

    n_units = C * Uh * Uw
    counts = torch.bincount(unit_sorted, minlength=n_units)
    offsets = torch.cumsum(counts, 0) - counts
    null = torch.full((1,), C * N, dtype=torch.long, device=dev)
    b = Binning(C, N, height, width, sub, Uh, Uw, torch.cat([gids, null]), offsets, counts, segment)

    # Chunks: units sorted by list length, cut where one segment step of the chunk
    # (units x pixels x min(length, segment)) reaches chunk_elems.
    nonempty = torch.nonzero(counts).squeeze(1)
    if nonempty.numel():
        lens, idx = torch.sort(counts[nonempty])
        units = nonempty[idx]
        step = torch.cumsum(lens.clamp(max=segment), 0) * S
        chunk_id = torch.div(step, chunk_elems, rounding_mode="floor")
        _, sizes = torch.unique_consecutive(chunk_id, return_counts=True)
        ends = torch.cumsum(sizes, 0)
        Ls = lens[ends - 1].tolist()
        start_i = 0
        for end, L in zip(ends.tolist(), Ls):
            b.chunks.append((units[start_i:end], int(L)))
            start_i = end
    return b


__all__ = ["ALPHA_MIN", "Binning", "TILE", "bin_gaussians"]
