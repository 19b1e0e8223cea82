"""Rendering Gaussians through the selected rasteriser backend (talkctl.kernels.raster).

Rendering is over black (premultiplied colour + alpha); `over` composites layers.
"""
from __future__ import annotations

import functools

import torch


def resolve_rasterizer(choice: str | None, device: str, ctx=None):
    """The rasterize function for `choice` (auto | torch | gsplat | ...); records the choice on ctx."""
    from talkctl import backends

    b = backends.select("raster", choice or "auto", device)
    if ctx is not None:
        ctx.use_backend("raster", b.name)
    from talkctl.kernels.raster import rasterize

    return functools.partial(rasterize, backend=b.name)


def inference_rasterizer(choice: str | None, device: str) -> str:
    """The rasteriser name for rendering a trained model: "auto" on the CPU takes the compiled
    forward-only numba backend when it is usable (several times faster than the torch reference,
    same images); otherwise the usual choice (TALKCTL_RASTER, then the best usable)."""
    from talkctl import backends

    if choice in (None, "", "auto") and not backends.env_choice("raster") and device.split(":")[0] == "cpu":
        numba = next(b for b in backends.available("raster") if b.name == "numba")
        if numba.why_unusable(device) is None:
            return "numba"
    return backends.select("raster", choice or "auto", device).name


def render(rasterize, means, quats, scales, opacities, colors, world_to_cam, K, size: int, sh_degree=None):
    """Render C cameras. means/quats/scales (N,·) or (C,N,·); colors (N,3) RGB or (N,K,3) SH
    with sh_degree; world_to_cam (C,4,4); K (3,3) or (C,3,3). Returns the RasterOutput (over black)."""
    C = world_to_cam.shape[0]
    Ks = K.expand(C, 3, 3) if K.dim() == 2 else K
    return rasterize(means, quats, scales, opacities, colors, world_to_cam, Ks.contiguous(), size, size,
                     background=None, sh_degree=sh_degree)


def over(top_rgb: torch.Tensor, top_alpha: torch.Tensor, under: torch.Tensor) -> torch.Tensor:
    """Premultiplied `top` over `under` (…,H,W,3)."""
    return top_rgb + (1.0 - top_alpha) * under
