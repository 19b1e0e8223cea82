"""Backend registries: one per kind (raster, hashgrid, landmarks, parsing, audio-features).

Each backend has a cheap `probe()` that returns why it is unusable here (or None),
a lazy `load()` that imports heavy modules only when chosen, and capabilities.
Selection order: explicit name (CLI flag / config / TALKCTL_<KIND> env var) then
"auto" = the usable backend with the highest priority for the device. An explicit
choice that is unusable raises MissingToolError with the probe's reason: never a
silent fallback.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from talkctl.errors import MissingToolError, UsageError

KINDS = ("raster", "hashgrid", "landmarks", "parsing", "audio-features")


@dataclass
class Backend:
    kind: str
    name: str
    probe: Callable[[str], str | None]  # probe(device) -> reason it is unusable, or None
    load: Callable[[], Any]  # imports and returns the implementation (module, class or callable)
    description: str = ""
    devices: tuple[str, ...] = ("cpu", "cuda")
    priority: int = 0  # higher wins in "auto"
    capabilities: dict = field(default_factory=dict)
    # why the weights a run with default settings loads are not here (None: here, or none needed);
    # apart from `probe` because a run can name its own weights (`--model DIR`)
    weights: Callable[[], str | None] | None = None
    _loaded: Any = field(default=None, repr=False)

    def why_unusable(self, device: str = "cpu") -> str | None:
        dev = device.split(":")[0]
        if dev not in self.devices:
            return f"runs on {', '.join(self.devices)} only, not on {dev}"
        try:
            return self.probe(dev)
        except Exception as exc:  # a probe must never crash doctor
            return f"probe failed: {exc}"

    def why_no_weights(self) -> str | None:
        try:
            return self.weights() if self.weights else None
        except Exception as exc:  # like a probe: never crash doctor
            return f"weights check failed: {exc}"

    def get(self) -> Any:
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded


_REGISTRY: dict[str, dict[str, Backend]] = {k: {} for k in KINDS}


@functools.lru_cache(maxsize=None)  # probes run on every "auto" choice: look on disk once
def installed(module: str) -> bool:
    """Whether `module` can be imported here (found on the path; not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def cuda_reason() -> str | None:
    """Why a CUDA-only backend cannot run here, or None."""
    import torch

    return None if torch.cuda.is_available() else "torch sees no CUDA device"


def register(backend: Backend) -> Backend:
    if backend.kind not in _REGISTRY:
        raise ValueError(f"unknown backend kind {backend.kind!r}")
    _REGISTRY[backend.kind][backend.name] = backend
    return backend


def _ensure_registered(kind: str) -> None:
    # Registration happens on import of the module that owns each kind.
    from talkctl import backend_catalog  # noqa: F401  (imports every owner module lazily-cheap)


def available(kind: str) -> list[Backend]:
    _ensure_registered(kind)
    return sorted(_REGISTRY[kind].values(), key=lambda b: -b.priority)


def env_choice(kind: str) -> str | None:
    return os.environ.get("TALKCTL_" + kind.upper().replace("-", "_")) or None


def select(kind: str, name: str | None = "auto", device: str = "cpu") -> Backend:
    """Pick a backend: explicit name (or env var) must be usable; 'auto' takes the best usable."""
    _ensure_registered(kind)
    table = _REGISTRY[kind]
    if name in (None, "", "auto"):
        name = env_choice(kind) or "auto"
    if name != "auto":
        if name not in table:
            raise UsageError(f"unknown {kind} backend {name!r}; choose one of: {', '.join(sorted(table))}")
        reason = table[name].why_unusable(device)
        if reason:
            raise MissingToolError(f"{kind} backend {name!r} is unusable on {device}: {reason}")
        return table[name]
    reasons = []
    for b in available(kind):
        reason = b.why_unusable(device)
        if reason is None:
            return b
        reasons.append(f"{b.name}: {reason}")
    raise MissingToolError(f"no usable {kind} backend on {device} ({'; '.join(reasons) or 'none registered'})")
