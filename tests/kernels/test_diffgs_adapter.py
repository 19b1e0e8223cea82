"""The diff-gaussian-rasterization adapter against a stand-in library on CPU.

The stand-in takes exactly what graphdeco's GaussianRasterizer takes (settings with the
transposed view and full projection matrices, tan(fov), per-call kwargs), recovers the
pinhole camera from those matrices and renders with our torch backend. If the adapter
builds the matrices, routes colours/SH, casts to float32 and normalises quaternions as
the real library needs, its output equals the torch backend's.
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest
import torch

from talkctl.kernels.raster.api_types import validate_inputs
from talkctl.kernels.raster.diffgs_backend import rasterize_diffgs
from talkctl.kernels.raster.torch_backend import rasterize_torch

from adapter_scene import PARAMS, scene as _scene


@dataclass
class Settings:
    image_height: int
    image_width: int
    tanfovx: float
    tanfovy: float
    bg: torch.Tensor
    scale_modifier: float
    viewmatrix: torch.Tensor
    projmatrix: torch.Tensor
    sh_degree: int
    campos: torch.Tensor
    prefiltered: bool
    debug: bool


class Rasterizer:
    seen: list = []

    def __init__(self, raster_settings):
        self.s = raster_settings

    def __call__(self, means3D, means2D, shs, colors_precomp, opacities, scales, rotations,
                 cov3D_precomp):
        s, W, H = self.s, self.s.image_width, self.s.image_height
        tensors = (means3D, means2D, opacities, scales, rotations, s.viewmatrix, s.projmatrix)
        Rasterizer.seen.append(([t.dtype for t in tensors], rotations.norm(dim=-1)))
        V = s.viewmatrix.t()
        P = s.projmatrix.t() @ torch.linalg.inv(V)
        K = torch.zeros(3, 3, dtype=V.dtype)
        K[0, 0], K[1, 1] = P[0, 0] * W / 2, P[1, 1] * H / 2
        K[0, 2], K[1, 2], K[2, 2] = (P[0, 2] + 1) * W / 2, (P[1, 2] + 1) * H / 2, 1
        assert abs(s.tanfovx - W / (2 * K[0, 0].item())) < 1e-5
        colors = colors_precomp if shs is None else shs
        out = rasterize_torch(means3D, rotations, scales, opacities[:, 0], colors, V[None], K[None],
                              W, H, None, None if shs is None else s.sh_degree, 0.2, 1e4)
        return out.rgb[0].permute(2, 0, 1), out.radii[0]


@pytest.fixture
def fake_diffgs(monkeypatch):
    mod = types.ModuleType("diff_gaussian_rasterization")
    mod.GaussianRasterizationSettings, mod.GaussianRasterizer = Settings, Rasterizer
    monkeypatch.setitem(sys.modules, "diff_gaussian_rasterization", mod)
    Rasterizer.seen = []
    return Rasterizer.seen


def _render(fn, sc):
    leaves = {k: sc[k].clone().requires_grad_(True) for k in PARAMS}
    args = [leaves[k] for k in PARAMS] + [sc["viewmats"], sc["Ks"], sc["width"], sc["height"]]
    sh_degree, bg = validate_inputs(*args, None, None)
    out = fn(*args, bg, sh_degree, 0.01, 1e4)
    (out.rgb.sum() + 2 * out.alpha.sum() + 0.1 * out.depth.sum()).backward()
    return out, {k: leaves[k].grad for k in PARAMS}


@pytest.mark.parametrize("per_cam,sh_k", [(False, None), (True, 4)])
def test_diffgs_adapter_conventions(fake_diffgs, per_cam, sh_k):
    sc = _scene(5, per_cam=per_cam, sh_k=sh_k, dtype=torch.float64)
    a, ga = _render(rasterize_diffgs, sc)
    b, gb = _render(rasterize_torch, {k: (v.float() if torch.is_tensor(v) else v) for k, v in sc.items()})
    assert len(fake_diffgs) == 2 * 2  # two cameras, a colour pass and an alpha/depth pass each
    for dtypes, norms in fake_diffgs:
        assert all(d == torch.float32 for d in dtypes)  # the library is float32-only
        torch.testing.assert_close(norms, torch.ones_like(norms))  # and wants unit quaternions
    assert a.rgb.dtype == torch.float64 and ga["means"].dtype == torch.float64
    for k in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(a, k).float(), getattr(b, k), atol=1e-4, rtol=1e-4)
    for k in PARAMS:
        torch.testing.assert_close(ga[k].float(), gb[k], atol=1e-3, rtol=1e-3)
