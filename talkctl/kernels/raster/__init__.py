"""Gaussian-splatting rasteriser: `rasterize(...) -> RasterOutput` over registered backends.

Backends (kind "raster", "auto" takes the highest priority usable one):
  gsplat  (CUDA, priority 30)  the gsplat library; compiles its kernels on first use
  diffgs  (CUDA, priority 20)  the reference 3DGS diff-gaussian-rasterization, if importable
  torch   (CPU/CUDA, 10)       pure-PyTorch tiled reference, always usable
  numba   (CPU, 5)             compiled forward-only kernels for inference (no gradients), chosen
                               by name (render/serve), never by "auto"

Importing this package is cheap (no torch import); `rasterize` and `RasterOutput`
load on first access.
"""
from __future__ import annotations

import functools
import re

from ...backends import Backend, cuda_reason, installed, register


GSPLAT_MIN = (1, 5, 3)  # leading batch dimensions (one call for per-camera means)


@functools.lru_cache(maxsize=None)
def _gsplat_version_reason() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("gsplat")
    except PackageNotFoundError:  # a source checkout without metadata: let it try
        return None
    if tuple(int(x) for x in re.findall(r"\d+", v)[:3]) < GSPLAT_MIN:
        return f"gsplat {v} is too old; talkctl needs gsplat >= 1.5.3 (pip install 'talkctl[cuda]')"
    return None


def _probe_gsplat(device: str) -> str | None:
    if not installed("gsplat"):
        return "gsplat is not installed (pip install 'talkctl[cuda]' on a CUDA machine)"
    return _gsplat_version_reason() or cuda_reason()


def _probe_diffgs(device: str) -> str | None:
    if not installed("diff_gaussian_rasterization"):
        return ("diff_gaussian_rasterization is not installed (build it from "
                "graphdeco-inria/diff-gaussian-rasterization)")
    return cuda_reason()


def _probe_numba(device: str) -> str | None:
    return None if installed("numba") else "numba is not installed (pip install numba)"


def _load_numba():
    from .numba_backend import rasterize_numba

    return rasterize_numba


def _load_torch():
    from .torch_backend import rasterize_torch

    return rasterize_torch


def _load_gsplat():
    from .gsplat_backend import load

    return load()


def _load_diffgs():
    from .diffgs_backend import rasterize_diffgs

    return rasterize_diffgs


register(Backend(
    kind="raster", name="gsplat", probe=_probe_gsplat, load=_load_gsplat, devices=("cuda",),
    priority=30, description="gsplat CUDA rasteriser (JIT-compiles on first use when not prebuilt)",
    capabilities={"per_camera_means": True, "sh_degree": 3, "backward": True},
))
register(Backend(
    kind="raster", name="diffgs", probe=_probe_diffgs, load=_load_diffgs, devices=("cuda",),
    priority=20, description="graphdeco diff-gaussian-rasterization (one camera per call)",
    capabilities={"per_camera_means": True, "sh_degree": 3, "backward": True},
))
register(Backend(
    kind="raster", name="torch", probe=lambda device: None, load=_load_torch,
    devices=("cpu", "cuda"), priority=10,
    description="pure-PyTorch tiled rasteriser (reference, CPU path)",
    capabilities={"per_camera_means": True, "sh_degree": 3, "backward": True},
))
register(Backend(
    kind="raster", name="numba", probe=_probe_numba, load=_load_numba, devices=("cpu",), priority=5,
    description="compiled forward-only CPU rasteriser for rendering (numba; no gradients)",
    capabilities={"per_camera_means": True, "sh_degree": 3, "backward": False},
))


def __getattr__(name):  # lazy: keep `import talkctl.kernels.raster` free of torch
    if name == "rasterize":
        from .api import rasterize

        return rasterize
    if name == "RasterOutput":
        from .api_types import RasterOutput

        return RasterOutput
    raise AttributeError(name)


__all__ = ["RasterOutput", "rasterize"]
