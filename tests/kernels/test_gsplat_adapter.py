"""The gsplat adapter driven through the real `gsplat.rasterization()` on CPU.

gsplat's wheel is pure Python, but every path to pixels calls its CUDA extension. Here
the CUDA wrappers that `gsplat.rendering` imports are replaced by gsplat's own pure-torch
versions (gsplat/cuda/_torch_impl.py, wrapped for their signature differences) and, for
`rasterize_to_pixels`, a small dense compositor written to gsplat's CUDA kernel rules.
Everything else (argument checks, batch dimensions, SH, render modes, meta) is gsplat's
code, so this checks every argument and return convention of our adapter without a GPU.
"""
from __future__ import annotations

import math

import pytest
import torch

from talkctl.kernels.raster.api_types import validate_inputs
from talkctl.kernels.raster.torch_backend import rasterize_torch

from adapter_scene import PARAMS, scene as _scene

gsplat = pytest.importorskip("gsplat", reason="gsplat is not installed (pip install -e '.[dev]')")
import gsplat.rendering  # noqa: E402
from gsplat.cuda import _torch_impl as ti  # noqa: E402

from talkctl.kernels.raster.gsplat_backend import rasterize_gsplat  # noqa: E402

ALPHA_THRESHOLD = torch.tensor(1.0 / 255.0, dtype=torch.float32).item()  # gsplat's 1.f/255.f


def _projection(means, covars, quats, scales, viewmats, Ks, width, height, eps2d=0.3,
                near_plane=0.01, far_plane=1e10, radius_clip=0.0, packed=False,
                sparse_grad=False, calc_compensations=False, camera_model="pinhole",
                opacities=None):
    """fully_fused_projection: gsplat's torch version, with the CUDA kernel's opacity-aware
    per-axis radii (ProjectionEWA3DGSFused.cu), which the torch version does not have."""
    assert covars is None and not packed and camera_model == "pinhole" and opacities is not None
    _projection.calls.append(means.dtype)
    covars, _ = ti._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    _, means2d, depths, conics, comp = ti._fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
        calc_compensations, camera_model)
    with torch.no_grad():
        a, b, c = conics.unbind(-1)
        det = a * c - b * b
        cov = torch.stack([c / det, a / det], dim=-1)  # diagonal of the blurred 2D covariance
        o = torch.broadcast_to(opacities[..., None, :], depths.shape)
        extend = torch.sqrt(2 * torch.log((o / ALPHA_THRESHOLD).clamp(min=1))).clamp(max=3.33)
        r = torch.ceil(extend[..., None] * torch.sqrt(cov))
        inside = ((means2d + r > 0) & (means2d - r < torch.tensor([width, height]))).all(-1)
        keep = ((depths > near_plane) & (depths < far_plane) & (det > 0) & (o >= ALPHA_THRESHOLD)
                & inside & (r > radius_clip).any(-1))
        radii = torch.where(keep[..., None], r, torch.zeros_like(r)).int()
    return radii, means2d, depths, conics, comp


def _isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort=True,
                 segmented=False, packed=False, n_images=None, image_ids=None, gaussian_ids=None):
    assert not packed
    return ti._isect_tiles(means2d, radii, depths, tile_size, tile_width, tile_height, sort)


def _spherical_harmonics(degrees_to_use, dirs, coeffs, masks=None):
    out = ti._spherical_harmonics(degrees_to_use, dirs, coeffs)
    return out if masks is None else out * masks[..., None]


def _rasterize_to_pixels(means2d, conics, colors, opacities, image_width, image_height, tile_size,
                         isect_offsets, flatten_ids, backgrounds=None, masks=None, packed=False,
                         absgrad=False):
    """Dense per-tile compositing with RasterizeToPixels3DGSFwd.cu's rules: pixel centres at
    +0.5, alpha = min(0.999, o exp(-sigma)), skipped when sigma < 0 or alpha < 1/255, a pixel
    stops before T would fall to 1e-4; render alpha = 1 - T."""
    assert not packed and masks is None and not absgrad
    dims, N, D = means2d.shape[:-2], means2d.shape[-2], colors.shape[-1]
    I = math.prod(dims)
    m, con = means2d.reshape(I * N, 2), conics.reshape(I * N, 3)
    col, op = colors.reshape(I * N, D), opacities.reshape(I * N)
    th, tw = isect_offsets.shape[-2:]
    starts = isect_offsets.reshape(-1).tolist() + [flatten_ids.numel()]
    img = means2d.new_zeros(I, image_height, image_width, D)
    acc = means2d.new_zeros(I, image_height, image_width, 1)
    for k in range(I * th * tw):
        i, t = divmod(k, th * tw)
        y0, x0 = (t // tw) * tile_size, (t % tw) * tile_size
        y1, x1 = min(y0 + tile_size, image_height), min(x0 + tile_size, image_width)
        ids = flatten_ids[starts[k]:starts[k + 1]].long()
        ys, xs = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
        dx = m[ids, 0] - (xs.reshape(-1, 1) + 0.5)
        dy = m[ids, 1] - (ys.reshape(-1, 1) + 0.5)
        a, b, c = con[ids].unbind(-1)
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(op[ids] * torch.exp(-sigma), max=0.999)
        alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
        T_after = torch.cumprod(1 - alpha, dim=1)
        T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], dim=1)
        w = alpha * T_before * (T_after > 1e-4)
        shape = (y1 - y0, x1 - x0)
        img[i, y0:y1, x0:x1] = (w @ col[ids]).reshape(shape + (D,))
        acc[i, y0:y1, x0:x1] = w.sum(1).reshape(shape + (1,))
    if backgrounds is not None:
        img = img + (1 - acc) * backgrounds.reshape(I, 1, 1, D)
    return img.reshape(dims + img.shape[1:]), acc.reshape(dims + acc.shape[1:])


@pytest.fixture
def cpu_gsplat(monkeypatch):
    """gsplat.rendering with its CUDA wrappers swapped for torch versions."""
    _projection.calls = []
    for name, fn in (("fully_fused_projection", _projection), ("isect_tiles", _isect_tiles),
                     ("isect_offset_encode", ti._isect_offset_encode),
                     ("spherical_harmonics", _spherical_harmonics),
                     ("rasterize_to_pixels", _rasterize_to_pixels)):
        assert hasattr(gsplat.rendering, name), f"gsplat.rendering no longer imports {name}"
        monkeypatch.setattr(gsplat.rendering, name, fn)
    return _projection.calls


def _render(fn, sc, background=None):
    """Render with `fn` and backprop a fixed random linear loss of rgb, alpha and depth."""
    leaves = {k: sc[k].clone().requires_grad_(True) for k in PARAMS}
    args = [leaves[k] for k in PARAMS] + [sc["viewmats"], sc["Ks"], sc["width"], sc["height"]]
    sh_degree, bg = validate_inputs(*args, background, None)
    out = fn(*args, bg, sh_degree, 0.01, 1e4)
    out.means2d.retain_grad()
    g = torch.Generator().manual_seed(7)
    loss = sum((getattr(out, k).double() * torch.randn(getattr(out, k).shape, generator=g,
                                                       dtype=torch.float64)).sum()
               for k in ("rgb", "alpha", "depth"))
    loss.backward()
    return out, {k: leaves[k].grad for k in PARAMS} | {"means2d": out.means2d.grad}


def _compare(sc, background=None):
    a, ga = _render(rasterize_gsplat, sc, background)
    b, gb = _render(rasterize_torch, sc, background)
    assert a.backend == "gsplat" and b.alpha.max() > 0.5  # a real scene, not an empty one
    for k in ("rgb", "alpha", "depth"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.shape == y.shape and x.dtype == y.dtype, k
        # float32 rounding may flip a 1/255 threshold decision at a rare pixel
        diff = (x.double() - y.double()).abs()
        assert diff.mean() < 2e-6 and (diff > 1e-4).float().mean() < 0.002, (k, diff.max().item())
    assert a.means2d.shape == b.means2d.shape and a.radii.dtype == torch.int32
    assert torch.equal(a.radii > 0, b.radii > 0)
    assert (a.radii != b.radii).float().mean() < 0.01  # ceil() may round a hair differently
    vis = b.radii > 0
    torch.testing.assert_close(a.means2d[vis].double(), b.means2d[vis].double(), atol=1e-3, rtol=1e-5)
    assert gb["means2d"] is not None and ga["means2d"] is not None
    for k, y in gb.items():
        x = ga[k]
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if k == "means2d":
            x, y = x[vis], y[vis]
        err = (x.double() - y.double()).norm() / y.double().norm().clamp(min=1e-12)
        assert err < 1e-3, (k, err.item())
    return a, b


@pytest.mark.parametrize("seed", [0, 1])
def test_shared_means_match_torch_backend(cpu_gsplat, seed):
    _compare(_scene(seed))
    assert len(cpu_gsplat) == 1  # one gsplat call for all cameras


def test_per_camera_means_one_batched_call(cpu_gsplat):
    a, _ = _compare(_scene(2, cams=3, per_cam=True))
    assert len(cpu_gsplat) == 1  # cameras are gsplat's batch dimension, not a loop
    assert a.means2d.is_leaf and a.means2d.shape == (3, 50, 2)


def test_sh_colours_and_background(cpu_gsplat):
    sc = _scene(3, sh_k=9)
    _compare(sc, background=torch.tensor([0.2, 0.5, 0.9]))


def test_float64_inputs_are_cast_for_gsplat(cpu_gsplat):
    """gsplat is float32-only: the adapter casts, outputs and gradients keep the caller's dtype."""
    sc = _scene(4, per_cam=True, dtype=torch.float64)
    out, grads = _render(rasterize_gsplat, sc)
    assert cpu_gsplat == [torch.float32]
    assert out.rgb.dtype == torch.float64 and out.means2d.dtype == torch.float32
    assert all(grads[k].dtype == torch.float64 for k in PARAMS)
    assert grads["means"].abs().sum() > 0 and grads["means2d"].abs().sum() > 0
