"""`rasterize`: one call for every backend (torch reference, gsplat, diff-gaussian-rasterization)."""
from __future__ import annotations

from torch import Tensor

from ...backends import select
from .api_types import RasterOutput, empty_output, validate_inputs


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    sh_degree: int | None = None,
    backend: str = "auto",
    near: float = 0.01,
    far: float = 1e4,
) -> RasterOutput:
    """Render N 3D Gaussians into C pinhole cameras.

    means (N,3) or (C,N,3) per camera; quats (N,4)/(C,N,4) wxyz, any norm; scales
    (N,3)/(C,N,3) linear (not log); opacities (N,) in [0,1]; colors (N,3) RGB or
    (N,K,3) SH coefficients (degree inferred from K unless `sh_degree` is given, which
    then uses the first (sh_degree+1)² of them); viewmats (C,4,4) world-to-camera
    OpenCV; Ks (C,3,3); background None (black), (3,), (C,3) or (C,H,W,3).
    backend: "auto" (gsplat > diffgs > torch, the best one usable on the tensors'
    device; TALKCTL_RASTER overrides), or a name; an unusable name raises
    MissingToolError. See RasterOutput for the outputs and for means2d gradients.
    """
    sh_degree, background = validate_inputs(means, quats, scales, opacities, colors, viewmats, Ks,
                                             width, height, background, sh_degree)
    chosen = select("raster", backend, device=means.device.type)
    if means.shape[-2] == 0:
        return empty_output(means, viewmats, width, height, background, chosen.name)
    impl = chosen.get()
    return impl(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                background, sh_degree, near, far)
