"""Synthetic, head-like Gaussian scenes for benchmarks (and a few tests).

N Gaussians spread over and just inside an ellipsoid of head size (about 18 x 24 x 20 cm)
half a metre in front of an OpenCV camera whose focal length makes the head fill most
of the image. Footprints follow "a head of ~10k Gaussians filling a 512 image":
projected sigma log-uniform in `sigma_px` pixels for 10,000 Gaussians at 512 px,
scaled with the resolution and by sqrt(10000 / N) so that coverage stays the same
when N changes (sigma 1.5-12 px gives 3-sigma footprints of ~10-70 px at 512).
`sigma_at="render"` instead takes `sigma_px` at the rendered resolution as is (a
stress test with far more overlap). Anisotropy is like trained splats (one flat
axis); opacities uniform in [0.1, 1]; colours SH of degree `sh_degree` with a random
DC term and small higher bands.
"""
from __future__ import annotations

import math

import torch


def head_scene(n: int, size: int, sh_degree: int = 3, sigma_px=(1.5, 12.0), sigma_at="head512",
               seed: int = 0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z_cam = 0.5
    f = 1.75 * size
    # points: mostly near the surface of the ellipsoid, some inside
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True)
    shell = 1.0 - 0.25 * torch.rand(n, 1, generator=g) ** 2
    means = d * shell * torch.tensor([0.09, 0.12, 0.10])
    means[:, 2] += z_cam
    if sigma_at == "head512":
        k = size / 512 * math.sqrt(10000 / max(n, 1))
        sigma_px = (sigma_px[0] * k, sigma_px[1] * k)
    lo, hi = math.log(sigma_px[0]), math.log(sigma_px[1])
    s_px = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
    s = s_px * z_cam / f
    aniso = torch.stack([torch.ones(n), 0.3 + 0.7 * torch.rand(n, generator=g),
                         0.05 + 0.25 * torch.rand(n, generator=g)], dim=1)
    scales = s[:, None] * aniso
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.1 + 0.9 * torch.rand(n, generator=g)
    K = (sh_degree + 1) ** 2
    colors = 0.2 * torch.randn(n, K, 3, generator=g)
    colors[:, 0] = (torch.rand(n, 3, generator=g) - 0.5) / 0.2820948
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])[None]
    out = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
               viewmats=viewmats, Ks=Ks)
    return {k: v.to(device=device, dtype=dtype) for k, v in out.items()}
