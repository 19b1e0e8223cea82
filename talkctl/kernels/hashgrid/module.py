"""TriplaneHashGrid: three 2D multi-resolution hash grids (xy, yz, xz) over a 3D box."""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from ...backends import select
from .levels import make_levels, per_level_scale
from .torch_impl import LevelTensors, encode

log = logging.getLogger(__name__)

PLANES = ((0, 1), (1, 2), (0, 2))  # xy, yz, xz


class TriplaneHashGrid(nn.Module):
    """Tri-plane hash-grid encoder (as in ER-NeRF / GSTalker).

    feat = enc(x): x (N, 3) -> (N, 3 * n_levels * features_per_level), ordered
    [plane xy | plane yz | plane xz], each plane level-major, features last.

    Each plane is a 2D multi-resolution grid with tiny-cuda-nn's "HashGrid" layout
    (see levels.py): resolutions grow geometrically from base_resolution to
    max_resolution; levels whose dense grid fits the 2^log2_hashmap_size table are
    stored densely, finer ones are hashed. Interpolation is bilinear.

    bounds: (low, high) as scalars (a cube) or as two 3-vectors (a box).
    Out-of-bounds rule: each coordinate is clamped to `bounds` first, so a point
    outside the box gets the features of the nearest point on the box, and zero
    gradient along the clamped axes.

    backend: "auto" | "torch" | "tcnn". The parameter table `self.table`
    (3, total_slots, F) is the same for both backends, so checkpoints move freely
    between them. compile=True wraps the torch lookup in torch.compile; off by default:
    it costs a ~40 s compile on first call and was slower on CPU here (10k points,
    fwd+bwd: 43 ms CPU compiled vs 28 ms eager; the eager path already has a fused
    hand-written backward). It may pay off on CUDA when tinycudann is not available.
    """

    def __init__(self, n_levels: int = 14, features_per_level: int = 1, base_resolution: int = 64,
                 max_resolution: int = 512, log2_hashmap_size: int = 16,
                 bounds: tuple[float, float] = (-1.0, 1.0), backend: str = "auto",
                 compile: bool = False, device=None):
        super().__init__()
        if features_per_level < 1:
            raise ValueError("features_per_level must be >= 1")
        lo, hi = (tuple(float(v) for v in (b if isinstance(b, (tuple, list)) else (b, b, b)))
                  for b in bounds)
        if len(lo) != 3 or len(hi) != 3 or not all(h > low for low, h in zip(lo, hi)):
            raise ValueError(f"bounds must be (low, high), scalars or 3-vectors, low < high: {bounds}")
        self.n_levels, self.features_per_level = n_levels, features_per_level
        self.base_resolution, self.max_resolution = base_resolution, max_resolution
        self.log2_hashmap_size = log2_hashmap_size
        self.bounds = (lo, hi)
        self.levels = make_levels(n_levels, base_resolution, max_resolution, log2_hashmap_size)
        self.per_level_scale = per_level_scale(n_levels, base_resolution, max_resolution)
        total = self.levels[-1].offset + self.levels[-1].size
        # tcnn's initialisation: uniform in ±1e-4
        self.table = nn.Parameter(torch.empty(3, total, features_per_level, device=device)
                                  .uniform_(-1e-4, 1e-4))
        self.backend_name = backend
        self.compile = compile
        self._impl = None
        self._lt = None
        self._box = None  # ((device, dtype), bounds tensor (2, 3)) of the last call

    def __getstate__(self):  # deepcopy / pickle: drop the cached backend closure
        state = self.__dict__.copy()
        state["_impl"], state["_lt"], state["_box"] = None, None, None
        return state

    @property
    def out_dim(self) -> int:
        return 3 * self.n_levels * self.features_per_level

    def extra_repr(self) -> str:
        return (f"levels={self.n_levels}, F={self.features_per_level}, res={self.base_resolution}.."
                f"{self.max_resolution}, log2_T={self.log2_hashmap_size}, bounds={self.bounds}, "
                f"slots/plane={self.table.shape[1]}")

    def plane_coords(self, x: Tensor) -> Tensor:
        """x (N, 3) -> (N, 3, 2) coordinates in [0, 1] on the xy, yz and xz planes."""
        key = (x.device, x.dtype)
        if self._box is None or self._box[0] != key:  # made once per device: no copy per call
            self._box = (key, torch.tensor(self.bounds, device=x.device, dtype=x.dtype))
        lo, hi = self._box[1]
        u = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        # basic indexing (a list index would be copied to the device on every call)
        return torch.stack([torch.stack([u[:, a], u[:, b]], -1) for a, b in PLANES], dim=1)

    def _level_tensors(self) -> LevelTensors:
        dev = self.table.device
        if self._lt is None or self._lt.scale.device != dev:
            self._lt = LevelTensors(self.levels, dev, self.table.dtype)
        return self._lt

    def _resolve(self, device: torch.device):
        """Pick the backend for this device once (explicit unusable choice -> MissingToolError)."""
        if self._impl is None or self._impl[0] != device.type:
            chosen = select("hashgrid", self.backend_name, device=device.type)
            fn = chosen.get()(self) if chosen.name != "torch" else self._torch_forward
            if chosen.name == "torch" and self.compile:
                fn = torch.compile(self._torch_forward, dynamic=True)
            self._impl = (device.type, fn, chosen.name)
            log.debug("hashgrid backend %s on %s", chosen.name, device.type)
        return self._impl

    @property
    def backend(self) -> str | None:
        """Name of the backend used by the last forward (None before the first call)."""
        return self._impl[2] if self._impl else None

    def _torch_forward(self, u: Tensor, table: Tensor) -> Tensor:
        return encode(u, table, self._level_tensors())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != 3:
            raise ValueError(f"TriplaneHashGrid expects points (N,3), got {tuple(x.shape)}")
        _, fn, _ = self._resolve(x.device)
        return fn(self.plane_coords(x), self.table)
