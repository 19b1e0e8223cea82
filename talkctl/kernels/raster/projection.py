"""EWA projection of 3D Gaussians to image-space 2D Gaussians (pure torch, autograd).

Conventions (the same as gsplat's "classic" mode, so the backends agree):
- OpenCV camera: x right, y down, z forward; `viewmats` are world-to-camera.
- A pixel (i, j) has its centre at (i + 0.5, j + 0.5) in the coordinates that
  `K @ x_cam / z` produces, so a principal point cx = W / 2 is the image centre.
- The 2D covariance is J W Σ Wᵀ Jᵀ + 0.3·I: the 0.3 px² low-pass dilation of 3DGS
  keeps every splat at least about a pixel wide.
- The Jacobian is evaluated at x/z, y/z clamped to 1.3× the field of view, as in
  3DGS and gsplat, so Gaussians far outside the view do not blow up.
- Footprint radius (used for tile visibility and reported as `radii`): gsplat 1.5's
  per-axis rule, the bounding box of the alpha >= 1/255 ellipse, so the tile rule never
  hides a pixel that the alpha threshold would keep.
- Culled Gaussians (radius 0): depth outside [near, far], non-positive 2D
  determinant, footprint entirely outside the image, or an opacity too small to
  ever reach the 1/255 alpha threshold (this includes zero opacity).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

EPS2D = 0.3  # low-pass dilation (px²) added to every projected covariance
ALPHA_MIN = 1.0 / 255.0  # a Gaussian whose alpha at a pixel is below this is skipped there
# Per-Gaussian alpha is clamped to this: gsplat 1.5.x's value (RasterizeToPixels3DGSFwd.cu).
# gsplat's main branch after 1.5.3 (issue 18's audit) and graphdeco's diff-gaussian-rasterization
# use 0.99; the `cuda` extra pins gsplat to 1.5.x so that the CUDA path matches this reference.
ALPHA_MAX = 0.999
T_MIN = 1e-4  # compositing stops before transmittance would fall to this
RADIUS_SIGMAS = 3.33  # gsplat's cap on the footprint radius, in standard deviations per axis


@dataclass
class Projected:
    means2d: Tensor  # (C, N, 2) pixel coordinates, differentiable
    conics: Tensor  # (C, N, 3) inverse 2D covariance (a, b, c): sigma = ½(a dx² + c dy²) + b dx dy
    depths: Tensor  # (C, N) camera z, differentiable
    cov2d: Tensor  # (C, N, 3) dilated 2D covariance (xx, xy, yy), differentiable
    radii: Tensor  # (C, N) int32, 0 = culled


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """(..., 4) wxyz quaternions, any norm -> (..., 3, 3) rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariance R S Sᵀ Rᵀ from wxyz quaternions and linear scales."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def per_camera(x: Tensor, C: int, tail: int) -> Tensor:
    """(N, *t) shared or (C, N, *t) per-camera -> (C, N, *t) (a broadcast view when shared)."""
    if x.dim() == tail + 1:
        return x.unsqueeze(0).expand((C,) + tuple(x.shape))
    return x


def project(
    means: Tensor,  # (N, 3) or (C, N, 3)
    quats: Tensor,  # (N, 4) or (C, N, 4)
    scales: Tensor,  # (N, 3) or (C, N, 3)
    opacities: Tensor,  # (N,) or (C, N)
    viewmats: Tensor,  # (C, 4, 4)
    Ks: Tensor,  # (C, 3, 3)
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 1e4,
    eps2d: float = EPS2D,
) -> Projected:
    C = viewmats.shape[0]
    means = per_camera(means, C, 1)
    R = viewmats[:, None, :3, :3]  # (C, 1, 3, 3)
    t = viewmats[:, None, :3, 3]  # (C, 1, 3)
    means_c = (R @ means.unsqueeze(-1)).squeeze(-1) + t  # (C, N, 3)
    x, y, z = means_c.unbind(-1)

    # Everything below divides by z: culled depths get z = 1 so that their (zero)
    # gradients stay finite instead of 0 * inf = nan.
    in_depth = (z >= near) & (z <= far)
    zs = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    u = fx * x / zs + cx
    v = fy * y / zs + cy
    means2d = torch.stack([u, v], dim=-1)

    # Jacobian of the pinhole map at the clamped direction (3DGS / gsplat rule).
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    xz = (x / zs).clamp(min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    yz = (y / zs).clamp(min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * xz / zs, zero, fy / zs, -fy * yz / zs], dim=-1
    ).reshape(zs.shape + (2, 3))
    # cov2d = (J Rv Rq S)(J Rv Rq S)ᵀ: one 2x3 factor per Gaussian and camera.
    M = quat_to_rotmat(per_camera(quats, C, 1)) * per_camera(scales, C, 1)[..., None, :]
    T = J @ R @ M  # (C, N, 2, 3)
    cxx = (T[..., 0, :] * T[..., 0, :]).sum(-1) + eps2d
    cxy = (T[..., 0, :] * T[..., 1, :]).sum(-1)
    cyy = (T[..., 1, :] * T[..., 1, :]).sum(-1) + eps2d
    det = cxx * cyy - cxy * cxy
    det_ok = det > 0
    dets = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([cyy / dets, -cxy / dets, cxx / dets], dim=-1)

    with torch.no_grad():
        # gsplat 1.5 footprint: per axis, ceil(min(3.33, sqrt(2 ln(255 o))) * sigma_axis), the
        # bounding box of the ellipse where alpha >= 1/255 (o <= 1 never reaches the 3.33 cap).
        # Culling tests each axis; `radii` reports the larger one.
        opac = per_camera(opacities, C, 0)
        extend = torch.sqrt(2 * opacity_extent(opac).clamp(min=0)).clamp(max=RADIUS_SIGMAS)
        # (clamped so that a Gaussian right in front of the lens cannot overflow int32)
        rx = torch.ceil(extend * torch.sqrt(cxx.clamp(min=0))).clamp(max=float(1 << 24))
        ry = torch.ceil(extend * torch.sqrt(cyy.clamp(min=0))).clamp(max=float(1 << 24))
        inside = (u + rx > 0) & (u - rx < width) & (v + ry > 0) & (v - ry < height)
        radius = torch.maximum(rx, ry)
        visible_alpha = opac >= ALPHA_MIN
        keep = (in_depth & det_ok & inside & visible_alpha & (radius > 0)
                & torch.isfinite(radius))
        radii = torch.where(keep, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d, conics, z, torch.stack([cxx, cxy, cyy], -1), radii)


def camera_centers(viewmats: Tensor) -> Tensor:
    """World-space camera centres -Rᵀ t of world-to-camera matrices: (C, 4, 4) -> (C, 3)."""
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3:]
    return -(R.transpose(-1, -2) @ t).squeeze(-1)


def opacity_extent(opacities: Tensor) -> Tensor:
    """sigma bound beyond which opacity * exp(-sigma) < 1/255: ln(255 * o) (negative = never visible)."""
    return torch.log(opacities.clamp(min=1e-30) / ALPHA_MIN)


__all__ = [
    "ALPHA_MAX", "ALPHA_MIN", "EPS2D", "RADIUS_SIGMAS", "T_MIN", "Projected", "camera_centers", "covariance_3d",
    "opacity_extent", "per_camera", "project", "quat_to_rotmat",
]
