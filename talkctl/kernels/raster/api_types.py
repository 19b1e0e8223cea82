"""The rasteriser contract shared by every backend: output type, input checks, final compositing."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RasterOutput:
    """What `rasterize` returns (C cameras, N Gaussians, H x W images).

    rgb:     (C, H, W, 3) colour composited over the background.
    alpha:   (C, H, W, 1) accumulated opacity 1 - T_final.
    depth:   (C, H, W, 1) expected camera z, Σ w_i z_i / alpha (0 where alpha is 0).
    means2d: (C, N, 2) projected centres in pixels (pixel (i, j) has its centre at
             (i + 0.5, j + 0.5)). When the inputs require grad, call
             `out.means2d.retain_grad()` before `backward()`; `out.means2d.grad` is then
             dL/d(means2d), the screen-space gradient densification uses. (For some
             adapters means2d is a leaf filled by hooks: retain_grad() is then a no-op
             and .grad is populated all the same.) Values of culled Gaussians are
             unspecified.
    radii:   (C, N) int32 footprint radius in pixels, 0 = culled.
    backend: name of the backend that produced it.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor
    backend: str = ""


def _shape(t: Tensor) -> str:
    return "(" + ",".join(str(s) for s in t.shape) + ")"


def validate_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                    background, sh_degree):
    """Check shapes/devices/dtypes and resolve the SH degree and background form.

    Returns (sh_degree or None, background as None | (C, 3) | (C, H, W, 3)).
    Raises ValueError with the offending argument and shape (a programming error).
    """
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be (C,4,4), got {_shape(viewmats)}")
    C = viewmats.shape[0]
    if Ks.shape != (C, 3, 3):
        raise ValueError(f"Ks must be ({C},3,3) to match viewmats, got {_shape(Ks)}")
    if means.dim() not in (2, 3) or means.shape[-1] != 3 or (means.dim() == 3 and means.shape[0] != C):
        raise ValueError(f"means must be (N,3) or ({C},N,3), got {_shape(means)}")
    N = means.shape[-2]
    for name, t, k in (("quats", quats, 4), ("scales", scales, 3)):
        if t.shape[-2:] != (N, k) or t.dim() not in (2, 3) or (t.dim() == 3 and t.shape[0] != C):
            raise ValueError(f"{name} must be ({N},{k}) or ({C},{N},{k}), got {_shape(t)}")
    if opacities.shape not in ((N,), (C, N)):
        raise ValueError(f"opacities must be ({N},) (or ({C},{N})), got {_shape(opacities)}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width and height must be positive ints, got {width!r}, {height!r}")
    tensors = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                   viewmats=viewmats, Ks=Ks)
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != means.device:
            raise ValueError(f"{name} is on {t.device} but means is on {means.device}")
        if t.dtype != means.dtype:
            raise ValueError(f"{name} is {t.dtype} but means is {means.dtype}; use one dtype")

    if colors.dim() == 2:
        if colors.shape != (N, 3):
            raise ValueError(f"colors must be ({N},3) RGB or ({N},K,3) SH, got {_shape(colors)}")
        if sh_degree is not None:
            raise ValueError("sh_degree is set but colors is (N,3): pass SH coefficients as (N,K,3)")
    elif colors.dim() == 3 and colors.shape[0] == N and colors.shape[2] == 3:
        K = colors.shape[1]
        if sh_degree is None:
            d = math.isqrt(K) - 1
            if (d + 1) ** 2 != K or d > 3:
                raise ValueError(f"colors has K={K} SH coefficients; K must be 1, 4, 9 or 16")
            sh_degree = d
        if not 0 <= sh_degree <= 3 or (sh_degree + 1) ** 2 > K:
            raise ValueError(f"sh_degree={sh_degree} needs 0..3 and (sh_degree+1)^2 <= K={K}")
    else:
        raise ValueError(f"colors must be ({N},3) RGB or ({N},K,3) SH, got {_shape(colors)}")

    if background is not None:
        if background.shape == (3,):
            background = background.expand(C, 3)
        elif background.shape not in ((C, 3), (C, height, width, 3)):
            raise ValueError(
                f"background must be (3,), ({C},3) or ({C},{height},{width},3), got {_shape(background)}")
        if background.device != means.device:
            raise ValueError(f"background is on {background.device} but means is on {means.device}")
    return sh_degree, background


def finish_output(rgb_acc: Tensor, depth_acc: Tensor, alpha: Tensor, background, means2d: Tensor,
                  radii: Tensor, backend: str) -> RasterOutput:
    """Composite over the background and normalise depth: shared by all backends."""
    rgb = rgb_acc
    if background is not None:
        bg = background[:, None, None, :] if background.dim() == 2 else background
        rgb = rgb + (1.0 - alpha) * bg.to(rgb.dtype)
    depth = depth_acc / alpha.clamp(min=1e-10)
    return RasterOutput(rgb, alpha, depth, means2d, radii.to(torch.int32), backend)


def to_float32(*tensors):
    """The CUDA libraries (gsplat, diff-gaussian-rasterization) are float32-only and fail deep
    inside on other dtypes: cast on the way in (differentiable, so gradients flow back in the
    caller's dtype). None passes through."""
    return tuple(t if t is None or t.dtype == torch.float32 else t.float() for t in tensors)


def empty_output(means, viewmats, width, height, background, backend: str) -> RasterOutput:
    """Output for N = 0: background only. Outputs stay connected to `means` (with zero
    gradient) so that `loss.backward()` still works on an empty scene."""
    C = viewmats.shape[0]
    zero = means.sum() * 0.0
    z = means.new_zeros(C, height, width, 1) + zero
    rgb = means.new_zeros(C, height, width, 3) + zero
    means2d = means.new_zeros(C, 0, 2) + zero
    return finish_output(rgb, z, z, background, means2d,
                         torch.zeros(C, 0, dtype=torch.int32, device=means.device), backend)
