"""Adapter from our contract to `gsplat.rasterization` (CUDA).

Mapping:
- RGB colours or SH coefficients pass straight through (gsplat uses the same SH
  convention: directions from the camera centre, +0.5, clamp at 0).
- render_mode "RGB+D" gives Σ w z as the last channel; we divide by alpha and
  composite the background ourselves (finish_output), so every backend shares one
  definition of depth and background.
- Shared means (N,3): one call for all cameras; meta["means2d"] (C,N,2) is the tensor
  gsplat rasterises from, returned as is, so `retain_grad()` on it works.
- Per-camera means (C,N,3): one call per camera. The returned means2d is then a leaf
  whose .grad is filled by hooks on gsplat's per-camera means2d (see _grad_tap).
- gsplat >= 1.5 returns radii (C,N,2) per axis: we report the larger one.
gsplat's visibility rules are its own (e.g. newer versions size footprints by opacity),
so results match the torch backend closely but not bit for bit.
"""
from __future__ import annotations

import importlib.util
import logging
import time

import torch
from torch import Tensor

from ...errors import MissingToolError
from .api_types import RasterOutput, finish_output

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


def _grad_tap(parts: list[Tensor]) -> Tensor:
    """A leaf (C, N, 2) holding the values of per-camera (1, N, 2) tensors; after backward
    its .grad holds their gradients (stacked), filled by tensor hooks."""
    leaf = torch.cat([p.detach() for p in parts], dim=0)
    if not any(p.requires_grad for p in parts):
        return leaf
    leaf.requires_grad_(True)

    def make_hook(c: int):
        def hook(grad: Tensor):
            full = torch.zeros_like(leaf)
            full[c] = grad[0]
            leaf.grad = full if leaf.grad is None else leaf.grad + full

        return hook

    for c, p in enumerate(parts):
        if p.requires_grad:
            p.register_hook(make_hook(c))
    return leaf


def _radii(r: Tensor) -> Tensor:
    return r.amax(dim=-1) if r.dim() == 3 else r


def rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     background, sh_degree, near, far) -> RasterOutput:
    from gsplat import rasterization

    C = viewmats.shape[0]
    kw = dict(width=width, height=height, near_plane=near, far_plane=far, sh_degree=sh_degree,
              packed=False, render_mode="RGB+D", rasterize_mode="classic", eps2d=0.3, tile_size=16)
    per_cam = means.dim() == 3 or quats.dim() == 3 or scales.dim() == 3 or opacities.dim() == 2
    if not per_cam:
        img, alpha, meta = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, **kw)
        means2d, radii = meta["means2d"], _radii(meta["radii"])
    else:
        def cam(x, c, tail):
            return x[c] if x.dim() == tail + 2 else x

        imgs, alphas, m2ds, rads = [], [], [], []
        for c in range(C):
            img_c, alpha_c, meta = rasterization(
                cam(means, c, 1), cam(quats, c, 1), cam(scales, c, 1), cam(opacities, c, 0), colors,
                viewmats[c:c + 1], Ks[c:c + 1], **kw)
            imgs.append(img_c)
            alphas.append(alpha_c)
            m2ds.append(meta["means2d"])
            rads.append(_radii(meta["radii"]))
        img, alpha = torch.cat(imgs), torch.cat(alphas)
        means2d, radii = _grad_tap(m2ds), torch.cat(rads)
    return finish_output(img[..., :3], img[..., 3:4], alpha, background, means2d, radii, "gsplat")
