"""Random float32 scenes for the CUDA adapter tests (gsplat, diff-gaussian-rasterization on CPU)."""
from __future__ import annotations

import math

import torch

PARAMS = ("means", "quats", "scales", "opacities", "colors")


def scene(seed, n=50, w=40, h=36, cams=2, per_cam=False, sh_k=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.35 + torch.tensor([0.0, 0.0, 3.0])
    if per_cam:
        means = means + 0.04 * torch.randn(cams, n, 3, generator=g)
    lead = (cams,) if per_cam else ()
    view = torch.eye(4).repeat(cams, 1, 1)
    for c in range(cams):
        a = 0.12 * c
        view[c, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0],
                                        [-math.sin(a), 0, math.cos(a)]])
        view[c, 1, 3] = 0.05 * c
    f = 1.2 * w
    K = torch.tensor([[f, 0, w / 2 + 0.4], [0, f * 0.97, h / 2 - 0.3], [0, 0, 1]])
    sc = dict(means=means, quats=torch.randn(*lead, n, 4, generator=g) * 2,  # any norm
              scales=0.02 + 0.12 * torch.rand(*lead, n, 3, generator=g),
              opacities=0.03 + 0.97 * torch.rand(n, generator=g),
              colors=(torch.rand(n, 3, generator=g) if sh_k is None
                      else 0.4 * torch.randn(n, sh_k, 3, generator=g)),
              viewmats=view, Ks=K.repeat(cams, 1, 1))
    sc = {k: v.to(dtype) for k, v in sc.items()}
    return dict(sc, width=w, height=h)
