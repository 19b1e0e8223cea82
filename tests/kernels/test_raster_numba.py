"""The forward-only numba rasteriser against the torch reference (and the dense one)."""
from __future__ import annotations

import sys
import threading

import pytest
import torch

from talkctl.errors import UsageError
from talkctl.kernels.raster import rasterize
from talkctl.kernels.raster.dense import rasterize_dense
from test_raster import scene
from repo import REPO

pytest.importorskip("numba", reason="numba is not installed")
sys.path.insert(0, str(REPO / "bench"))
from scenes import head_scene  # noqa: E402

F32 = torch.float32


def _both(sc, **kw):
    with torch.no_grad():
        return rasterize(**sc, backend="torch", **kw), rasterize(**sc, backend="numba", **kw)


def _psnr(a, b) -> float:
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean().clamp(min=1e-20)
    return float(-10 * torch.log10(mse))


def _assert_same(ref, out, atol=2e-5):
    assert out.backend == "numba"
    for k in ("rgb", "alpha", "depth"):
        a, b = getattr(ref, k), getattr(out, k)
        assert a.shape == b.shape and a.dtype == b.dtype, k
        tol = atol * max(1.0, float(a.abs().max()))  # depth is in scene units (~3 here)
        assert (a - b).abs().max() < tol, (k, float((a - b).abs().max()))
    # radius = ceil(3 sqrt(λ)): float32 (torch) vs float64 (numba) may round across an integer
    diff = (ref.radii - out.radii).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 5e-3
    assert torch.equal(ref.radii > 0, out.radii > 0)
    vis = ref.radii > 0
    if vis.any():
        assert (ref.means2d - out.means2d).abs()[vis].max() < 1e-3


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("sh_k", [None, 1, 4, 16])
def test_matches_torch_on_random_scenes(seed, sh_k):
    sc = scene(n=80, w=45, h=37, seed=seed, dtype=F32, sh_k=sh_k, cams=2)
    _assert_same(*_both(sc))


def test_matches_dense_reference_in_float64():
    sc = scene(n=50, w=33, h=30, seed=3)
    with torch.no_grad():
        ref = rasterize_dense(**sc)
        out = rasterize(**sc, backend="numba")
    assert out.rgb.dtype == torch.float64
    _assert_same(ref, out, atol=1e-5)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_head_scene_psnr(size):
    sc = head_scene(4000, size, sh_degree=3, seed=size)
    ref, out = _both(dict(sc, width=size, height=size))
    _assert_same(ref, out, atol=1e-4)
    assert _psnr(ref.rgb, out.rgb) > 80


def test_per_camera_means_background_and_opaque_stacks():
    sc = scene(n=120, w=40, h=40, cams=3, per_cam=True, dtype=F32, opacity=(0.9, 1.0), scale=(0.1, 0.3))
    bg = torch.rand(3, 40, 40, 3)
    ref, out = _both(sc, background=bg)
    _assert_same(ref, out)
    assert (ref.alpha > 0.9999 - 1e-6).any()  # early termination was exercised


def test_edge_cases_match():
    sc = scene(n=60, w=30, h=20, seed=5, dtype=F32, spread=1.5)
    sc["means"][:5, 2] = -1.0  # behind the camera
    sc["means"][5:8, 2] = 0.005  # in front of the near plane
    sc["opacities"][8:12] = 0.0
    sc["scales"][12:15] = 1e-8
    ref, out = _both(sc)
    _assert_same(ref, out)


def test_thread_count_and_concurrent_calls_do_not_change_results():
    from talkctl.kernels.raster.numba_backend import rasterize_numba

    sc = head_scene(2000, 96, sh_degree=1, seed=1)
    args = [sc[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    one = rasterize_numba(*args, 96, 96, None, 1, 0.01, 1e4, threads=1)
    three = rasterize_numba(*args, 96, 96, None, 1, 0.01, 1e4, threads=3)
    assert torch.equal(one.rgb, three.rgb) and torch.equal(one.alpha, three.alpha)
    outs = [None] * 4

    def work(i):
        outs[i] = rasterize_numba(*args, 96, 96, None, 1, 0.01, 1e4, threads=2).rgb

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(torch.equal(o, one.rgb) for o in outs)


def test_refuses_gradients_and_is_never_auto():
    sc = scene(n=10, dtype=F32)
    leaves = dict(sc, means=sc["means"].clone().requires_grad_(True))
    with pytest.raises(UsageError, match="forward-only"):
        rasterize(**leaves, backend="numba")
    with torch.no_grad():
        assert rasterize(**leaves, backend="numba").backend == "numba"
    assert rasterize(**sc).backend != "numba"


def test_empty_and_fully_culled_scenes():
    sc = scene(n=6, w=20, h=20, dtype=F32)
    sc["means"][:, 2] = -3.0
    ref, out = _both(sc)
    _assert_same(ref, out)
    assert out.alpha.abs().max() == 0
