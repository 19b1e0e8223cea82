"""Adapter from our contract to `gsplat.rasterization` (CUDA), gsplat 1.5.x.

Mapping:
- RGB colours or SH coefficients pass straight through (gsplat uses the same SH
  convention: directions from the camera centre, +0.5, clamp at 0).
- render_mode "RGB+D" gives Σ w z as the last channel; we divide by alpha and
  composite the background ourselves (finish_output), so every backend shares one
  definition of depth and background.
- Shared means (N,3): one call for all cameras; meta["means2d"] (C,N,2) is the tensor
  gsplat rasterises from, returned as is, so `retain_grad()` on it works.
- Per-camera means (C,N,3): still one call, with the camera as gsplat's leading batch
  dimension (gsplat >= 1.5: means (C,N,3), viewmats (C,1,4,4), Ks (C,1,3,3)); its
  meta["means2d"] is then (C,1,N,2), so we return a (C,N,2) leaf whose .grad a hook
  fills with that tensor's gradient (see _grad_tap).
- gsplat returns radii (C,N,2) per axis: we report the larger one (as the torch backend).
- gsplat is float32-only: inputs are cast (to_float32); rgb/alpha/depth come back in the
  caller's dtype, means2d stays float32.
The torch backend follows gsplat 1.5's rules (footprint radius, alpha clamp 0.999, 1/255
threshold, T > 1e-4 termination), so results agree up to float rounding; gsplat's own
CUDA code uses fast-math exp/log, which can flip a 1/255 decision at a pixel.
"""
from __future__ import annotations

import importlib.util
import logging
import time

from torch import Tensor

from ...errors import MissingToolError
from .api_types import RasterOutput, finish_output, to_float32
from .projection import per_camera

log = logging.getLogger(__name__)


def load():
    """Import gsplat and make sure its CUDA kernels exist, compiling them if needed (logged)."""
    import gsplat

    prebuilt = importlib.util.find_spec("gsplat.csrc") is not None
    if not prebuilt:
        log.warning(
            "gsplat %s has no prebuilt CUDA extension: compiling it now (first use only, "
            "can take several minutes; cached in torch_extensions)", getattr(gsplat, "__version__", "?"))
    t0 = time.perf_counter()
    try:
        from gsplat.cuda._backend import _C  # triggers the JIT build when not prebuilt
    except ImportError:  # a gsplat whose internals moved: it builds on first render instead
        log.warning("gsplat: could not trigger the kernel build up front; the first render "
                    "may pause while gsplat compiles")
        return rasterize_gsplat
    if _C is None:
        raise MissingToolError(
            "gsplat could not load or build its CUDA extension (no CUDA toolkit/nvcc found); "
            "install a prebuilt gsplat wheel matching your torch and CUDA")
    if not prebuilt:
        log.warning("gsplat CUDA extension ready after %.0f s", time.perf_counter() - t0)
    else:
        log.info("gsplat %s loaded (prebuilt CUDA extension)", getattr(gsplat, "__version__", "?"))
    return rasterize_gsplat


def _grad_tap(batched: Tensor) -> Tensor:
    """A leaf (C, N, 2) holding the values of gsplat's batched means2d (C, 1, N, 2); after
    backward its .grad holds that tensor's gradient, filled by a tensor hook."""
    leaf = batched.detach()[:, 0]
    if not batched.requires_grad:
        return leaf
    leaf.requires_grad_(True)

    def hook(grad: Tensor):
        g = grad[:, 0]
        leaf.grad = g.clone() if leaf.grad is None else leaf.grad + g

    batched.register_hook(hook)
    return leaf


def rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     background, sh_degree, near, far) -> RasterOutput:
    from gsplat import rasterization

    dtype = means.dtype
    means, quats, scales, opacities, colors, viewmats, Ks = to_float32(
        means, quats, scales, opacities, colors, viewmats, Ks)
    C = viewmats.shape[0]
    kw = dict(width=width, height=height, near_plane=near, far_plane=far, sh_degree=sh_degree,
              packed=False, render_mode="RGB+D", rasterize_mode="classic", eps2d=0.3, tile_size=16)
    per_cam = means.dim() == 3 or quats.dim() == 3 or scales.dim() == 3 or opacities.dim() == 2
    if not per_cam:
        img, alpha, meta = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, **kw)
        means2d, radii = meta["means2d"], meta["radii"]
    else:
        col = colors.expand((C,) + tuple(colors.shape))
        img, alpha, meta = rasterization(
            per_camera(means, C, 1), per_camera(quats, C, 1), per_camera(scales, C, 1),
            per_camera(opacities, C, 0), col, viewmats[:, None], Ks[:, None], **kw)
        img, alpha = img[:, 0], alpha[:, 0]
        means2d, radii = _grad_tap(meta["means2d"]), meta["radii"][:, 0]
    radii = radii.amax(dim=-1) if radii.dim() == 3 else radii
    img, alpha = img.to(dtype), alpha.to(dtype)
    return finish_output(img[..., :3], img[..., 3:4], alpha, background, means2d, radii, "gsplat")
