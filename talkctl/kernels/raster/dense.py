"""Dense reference rasteriser for tests: every pixel against every Gaussian, plain autograd.

Memory is O(C·H·W·N): only for tiny scenes. It shares projection and colour code with
the torch backend (those are checked separately) but composites independently, with
the textbook formulas and no tiling tricks, applying the same visibility rules:
a pixel sees a Gaussian only inside the Gaussian's 16-px tile rectangle, alpha below
1/255 is skipped, alpha is clamped to 0.999, and compositing stops before T <= 1e-4.
"""
from __future__ import annotations

import torch

from .api_types import RasterOutput, finish_output, validate_inputs
from .projection import ALPHA_MAX, ALPHA_MIN, T_MIN, per_camera, project
from .tiles import TILE
from .torch_backend import gaussian_colors


def rasterize_dense(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                    background=None, sh_degree=None, near=0.01, far=1e4) -> RasterOutput:
    sh_degree, background = validate_inputs(means, quats, scales, opacities, colors, viewmats, Ks,
                                             width, height, background, sh_degree)
    C = viewmats.shape[0]
    proj = project(means, quats, scales, opacities, viewmats, Ks, width, height, near, far)
    rgb_g = gaussian_colors(colors, sh_degree, means, viewmats)
    opac = per_camera(opacities, C, 0)
    dev, dt = means.device, means.dtype
    jj, ii = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev),
                            indexing="ij")
    px = (ii.reshape(-1, 1) + 0.5).to(dt)  # (P, 1) pixel centres
    py = (jj.reshape(-1, 1) + 0.5).to(dt)
    tile_x, tile_y = ii.reshape(-1, 1) // TILE, jj.reshape(-1, 1) // TILE
    rgbs, depths, alphas = [], [], []
    for c in range(C):
        m, con, r = proj.means2d[c], proj.conics[c], proj.radii[c].to(dt)
        dx, dy = px - m[:, 0], py - m[:, 1]  # (P, N)
        sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
        alpha = torch.clamp(opac[c] * torch.exp(-sigma), max=ALPHA_MAX)
        with torch.no_grad():
            md = m.detach()
            tx0, tx1 = torch.floor((md[:, 0] - r) / TILE), torch.ceil((md[:, 0] + r) / TILE)
            ty0, ty1 = torch.floor((md[:, 1] - r) / TILE), torch.ceil((md[:, 1] + r) / TILE)
            seen = ((r > 0) & (tile_x >= tx0) & (tile_x < tx1) & (tile_y >= ty0) & (tile_y < ty1)
                    & (alpha >= ALPHA_MIN))
        alpha = torch.where(seen, alpha, torch.zeros_like(alpha))
        order = torch.sort(proj.depths[c].detach(), stable=True).indices
        alpha = alpha[:, order]
        T_after = torch.cumprod(1 - alpha, dim=1)
        T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=1)
        used = (T_after > T_MIN).to(dt)
        w = alpha * T_before * used  # (P, N)
        rgbs.append(w @ rgb_g[c][order])
        depths.append(w @ proj.depths[c][order].unsqueeze(-1))
        alphas.append(w.sum(1, keepdim=True))
    shape = (C, height, width, -1)
    rgb = torch.stack(rgbs).reshape(shape)
    depth = torch.stack(depths).reshape(shape)
    alpha = torch.stack(alphas).reshape(shape)
    return finish_output(rgb, depth, alpha, background, proj.means2d, proj.radii, "dense")
