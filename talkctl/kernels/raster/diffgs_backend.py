"""Adapter to graphdeco's `diff_gaussian_rasterization` (the reference 3DGS CUDA rasteriser).

It renders one camera per call from a symmetric-FOV model, so we build its full
projection matrix from K (off-centre principal points included: NDC x = 2u/W - 1 with
u = fx x/z + cx, which puts its integer pixel grid on our pixel centres).
Alpha and depth: a second pass with colours (z, 1, 0) on a black background gives
Σ w z and Σ w, whatever the installed fork returns.
means2d: the library takes a zero "means2D" tensor whose gradient is dL/d(NDC); we pass
(m - m.detach()) * 2/size so that the leaf m (pixel coordinates) receives dL/d(pixels).
Inputs: float32 only (cast here, gradients flow back in the caller's dtype); quaternions
are normalised here because the library uses them as given (our API accepts any norm).
Differences from gsplat/torch, all inside the library (documented, not patched):
- alpha is clamped at 0.99 (ours 0.999): a single near-opaque splat lets 1% through;
- `near` is ignored: it culls Gaussians with camera z <= 0.2 and keeps everything up to
  `far` (our near/far only shape the depth row of its projection matrix);
- its footprint radius is ceil(3 sqrt(largest eigenvalue)), isotropic, while ours follows
  gsplat 1.5 (per axis, opacity-aware): pixels at the rim of bright splats may differ.
Results agree closely, not bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .api_types import RasterOutput, finish_output, to_float32
from .projection import per_camera, project


def _projmatrix(K, width, height, near, far):
    """4x4 OpenCV camera -> clip matrix P (row-vector convention is applied by the caller)."""
    P = torch.zeros(4, 4, dtype=K.dtype, device=K.device)
    P[0, 0] = 2 * K[0, 0] / width
    P[0, 2] = 2 * K[0, 2] / width - 1
    P[1, 1] = 2 * K[1, 1] / height
    P[1, 2] = 2 * K[1, 2] / height - 1
    P[2, 2] = far / (far - near)
    P[2, 3] = -far * near / (far - near)
    P[3, 2] = 1.0
    return P


def rasterize_diffgs(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     background, sh_degree, near, far) -> RasterOutput:
    from diff_gaussian_rasterization import GaussianRasterizationSettings, GaussianRasterizer

    dtype = means.dtype
    means, quats, scales, opacities, colors, viewmats, Ks = to_float32(
        means, quats, scales, opacities, colors, viewmats, Ks)
    quats = F.normalize(quats, dim=-1)
    C = viewmats.shape[0]
    with torch.no_grad():
        proj = project(means, quats, scales, opacities, viewmats, Ks, width, height, near, far)
    needs_grad = any(t.requires_grad for t in (means, quats, scales, opacities, colors))
    m2d = proj.means2d.detach().clone().requires_grad_(needs_grad)
    ndc_scale = torch.tensor([2.0 / width, 2.0 / height], device=means.device, dtype=means.dtype)
    black = torch.zeros(3, device=means.device, dtype=means.dtype)

    rgbs, depths, alphas, radii_all = [], [], [], []
    for c in range(C):
        V = viewmats[c].float()
        P = _projmatrix(Ks[c].float(), width, height, near, far)
        view_t = V.t().contiguous()
        full_t = (P @ V).t().contiguous()
        campos = torch.linalg.inv(V)[:3, 3]
        settings = GaussianRasterizationSettings(
            image_height=height, image_width=width,
            tanfovx=float(width / (2 * Ks[c, 0, 0])), tanfovy=float(height / (2 * Ks[c, 1, 1])),
            bg=black.float(), scale_modifier=1.0, viewmatrix=view_t, projmatrix=full_t,
            sh_degree=sh_degree or 0, campos=campos, prefiltered=False, debug=False)
        raster = GaussianRasterizer(raster_settings=settings)
        mc = per_camera(means, C, 1)[c]
        qc = per_camera(quats, C, 1)[c]
        sc = per_camera(scales, C, 1)[c]
        oc = per_camera(opacities, C, 0)[c][:, None]
        dummy = (m2d[c] - m2d[c].detach()) * ndc_scale
        dummy = torch.cat([dummy, torch.zeros_like(dummy[:, :1])], dim=1)  # library wants (N, 3)
        if sh_degree is None:
            out = raster(means3D=mc, means2D=dummy, shs=None, colors_precomp=colors, opacities=oc,
                         scales=sc, rotations=qc, cov3D_precomp=None)
        else:
            out = raster(means3D=mc, means2D=dummy, shs=colors, colors_precomp=None, opacities=oc,
                         scales=sc, rotations=qc, cov3D_precomp=None)
        rgb, radii = out[0], out[1]
        z = proj.depths[c] if not needs_grad else (mc @ viewmats[c, 2, :3] + viewmats[c, 2, 3])
        zc = torch.stack([z, torch.ones_like(z), torch.zeros_like(z)], dim=1)
        out2 = raster(means3D=mc, means2D=dummy, shs=None, colors_precomp=zc, opacities=oc,
                      scales=sc, rotations=qc, cov3D_precomp=None)
        rgbs.append(rgb.permute(1, 2, 0))
        depths.append(out2[0][0][..., None])
        alphas.append(out2[0][1][..., None])
        radii_all.append(radii)
    return finish_output(torch.stack(rgbs).to(dtype), torch.stack(depths).to(dtype),
                         torch.stack(alphas).to(dtype), background, m2d, torch.stack(radii_all), "diffgs")
