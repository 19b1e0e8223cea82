"""Tri-plane multi-resolution hash-grid encoder: `TriplaneHashGrid` (an nn.Module).

Backends (kind "hashgrid"): tcnn (tinycudann, CUDA, priority 20) and torch (CPU/CUDA,
priority 10). Importing this package is cheap; the module class loads on first access.
"""
from __future__ import annotations

from ...backends import Backend, cuda_reason, installed, register


def _probe_tcnn(device: str) -> str | None:
    if not installed("tinycudann"):
        return "tinycudann is not installed (build it from NVlabs/tiny-cuda-nn, bindings/torch)"
    return cuda_reason()


def _load_tcnn():
    from .tcnn_backend import load

    return load()


def _load_torch():
    from .torch_impl import encode

    return encode


register(Backend(
    kind="hashgrid", name="tcnn", probe=_probe_tcnn, load=_load_tcnn, devices=("cuda",),
    priority=20, description="tiny-cuda-nn HashGrid kernels (same parameter layout as torch)",
    capabilities={"features_per_level": (1, 2, 4, 8)},
))
register(Backend(
    kind="hashgrid", name="torch", probe=lambda device: None, load=_load_torch,
    devices=("cpu", "cuda"), priority=10, description="pure-PyTorch tri-plane hash grid",
    capabilities={"features_per_level": "any"},
))


def __getattr__(name):
    if name == "TriplaneHashGrid":
        from .module import TriplaneHashGrid

        return TriplaneHashGrid
    raise AttributeError(name)


__all__ = ["TriplaneHashGrid"]
