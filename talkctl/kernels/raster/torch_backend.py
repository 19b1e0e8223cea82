"""Pure-PyTorch tiled rasteriser: the reference implementation and the CPU path.

projection (autograd) -> colours (RGB or SH, autograd) -> tile binning (no grad)
-> compositing (custom autograd.Function with a hand-written backward).
Runs on any device torch supports; on CUDA it is correct but far slower than gsplat.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .api_types import RasterOutput, finish_output
from .composite import composite
from .projection import camera_centers, per_camera, project
from .sh import sh_to_rgb
from .tiles import bin_gaussians

SUB_TILE = 8  # unit side (px) for CPU work batching; visibility still uses 16 px tiles
SEGMENT = 64  # list slots per compositing step; fully terminated units stop early


def gaussian_colors(colors: Tensor, sh_degree, means: Tensor, viewmats: Tensor) -> Tensor:
    """(C, N, 3) colours per camera: given RGB, or SH evaluated along the viewing direction."""
    C = viewmats.shape[0]
    if sh_degree is None:
        return per_camera(colors, C, 1)
    dirs = per_camera(means, C, 1) - camera_centers(viewmats)[:, None, :]
    return sh_to_rgb(sh_degree, per_camera(colors, C, 2), dirs)


def rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                    background, sh_degree, near, far, sub: int = SUB_TILE,
                    chunk_elems: int | None = None, segment: int = SEGMENT) -> RasterOutput:
    """Backend entry point; `rasterize()` validates the inputs and resolves sh_degree first.
    sub / chunk_elems / segment only change how work is batched, never the result."""
    C = viewmats.shape[0]
    N = means.shape[-2]
    proj = project(means, quats, scales, opacities, viewmats, Ks, width, height, near, far)
    rgb_g = gaussian_colors(colors, sh_degree, means, viewmats)
    opac = per_camera(opacities, C, 0)
    if chunk_elems is None:
        # CPU: blocks of ~0.5 MB per tensor stay in L2 (measured best of 2^16..2^18)
        chunk_elems = (1 << 17) if means.device.type == "cpu" else (1 << 25)
    binning = bin_gaussians(proj.means2d.detach(), proj.cov2d.detach(), proj.conics.detach(),
                            proj.depths.detach(), proj.radii, opac.detach(), width, height,
                            sub, chunk_elems, segment)
    feats = torch.cat([rgb_g, proj.depths.unsqueeze(-1)], dim=-1)
    img, alpha = composite(
        proj.means2d.reshape(C * N, 2), proj.conics.reshape(C * N, 3),
        opac.reshape(C * N), feats.reshape(C * N, -1), binning,
    )
    return finish_output(img[..., :3], img[..., 3:4], alpha, background, proj.means2d, proj.radii,
                         "torch")
