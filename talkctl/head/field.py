"""Deformation fields: per-Gaussian features ⊕ per-frame condition code -> Δpos, Δrot, Δscale.

Pieces:
  position encoders   "hashgrid" (tri-plane hash grid, talkctl.kernels.hashgrid) or "raw"
                      (normalised coordinates: the ablation without the grid)
  conditions          what drives the deformation, one code per frame (head.conditions: audio,
                      pose; head.landmark_condition: landmarks); build_condition makes one from
                      the spec saved with the weights
  DeformField         MLP over [position features, code, eye feature] -> deltas; the last
                      layer starts at zero so training starts from the static Gaussians.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkctl.config import Range
from talkctl.errors import UsageError
from talkctl.gs.gaussians import normalize_quat, quat_multiply
from talkctl.head.conditions import AudioCondition, Condition, PoseCondition
from talkctl.head.landmark_condition import LandmarkCondition


# ---- position encoders ----------------------------------------------------------------
class RawEncoding(nn.Module):
    """Coordinates normalised to [-1,1] by the bounds: no learned features."""

    def __init__(self, bounds=(-1.0, 1.0)):
        super().__init__()
        lo, hi = bounds
        self.register_buffer("lo", torch.as_tensor(lo, dtype=torch.float32).expand(3).clone())
        self.register_buffer("hi", torch.as_tensor(hi, dtype=torch.float32).expand(3).clone())
        self.out_dim = 3

    def forward(self, x):
        return (x - self.lo) / (self.hi - self.lo) * 2 - 1


class BoundedHashGrid(nn.Module):
    """The tri-plane hash grid over an axis-aligned box (positions mapped to [-1,1]^3 first)."""

    def __init__(self, bounds, backend: str = "auto", **grid_kw):
        super().__init__()
        from talkctl.kernels.hashgrid import TriplaneHashGrid

        self.norm = RawEncoding(bounds)
        self.grid = TriplaneHashGrid(bounds=(-1.0, 1.0), backend=backend, **grid_kw)
        self.out_dim = self.grid.out_dim

    def forward(self, x):
        return self.grid(self.norm(x).clamp(-1, 1))


def make_encoder(kind: str, bounds, grid: dict, backend: str = "auto") -> nn.Module:
    if kind == "hashgrid":
        return BoundedHashGrid(bounds, backend=backend, **grid)
    if kind == "raw":
        return RawEncoding(bounds)
    raise UsageError(f"encoding must be hashgrid or raw, got {kind!r}")


def hashgrid_backend(cfg: dict, device: str, ctx=None) -> str:
    """The hash-grid backend name for cfg["hashgrid"] (auto | torch | tcnn) on device; recorded on ctx."""
    if cfg["encoding"] != "hashgrid":
        return "auto"
    from talkctl import backends

    name = backends.select("hashgrid", cfg["hashgrid"], device).name
    if ctx is not None:
        ctx.use_backend("hashgrid", name)
    return name


# The settings of a field's encoding, shared by every stage that trains one (the paper's tri-plane
# hash grid: 14 levels, 1 feature per level, resolutions 64 -> 512).
ENCODING_DEFAULTS = {
    "encoding": "hashgrid",      # hashgrid | raw (ablation: raw coordinates)
    "hashgrid": "auto",          # hash-grid backend: auto | torch | tcnn
    "grid_levels": 14,
    "grid_features": 1,
    "grid_base": 64,
    "grid_max": 512,
    "grid_log2_size": 16,
}
ENCODING_RANGES = {"grid_levels": Range(1, 32), "grid_features": Range(1, 8), "grid_base": Range(2, 1 << 16),
                   "grid_max": Range(2, 1 << 16), "grid_log2_size": Range(4, 24)}


def grid_kwargs(cfg: dict) -> dict:
    return {"n_levels": int(cfg["grid_levels"]), "features_per_level": int(cfg["grid_features"]),
            "base_resolution": int(cfg["grid_base"]), "max_resolution": int(cfg["grid_max"]),
            "log2_hashmap_size": int(cfg["grid_log2_size"])}


CONDITIONS = {"audio": AudioCondition, "pose": PoseCondition, "landmarks": LandmarkCondition}


def build_condition(spec: dict, state: dict | None = None) -> Condition:
    spec = dict(spec)
    name = spec.pop("name")
    if name in CONDITIONS:
        cls = CONDITIONS[name]
    else:
        raise UsageError(f"unknown condition {name!r}; choose one of: audio, landmarks")
    cond = cls(**spec)
    if state is not None:
        cond.load_state_dict(state)
    return cond


# ---- the field --------------------------------------------------------------------------
class DeformField(nn.Module):
    def __init__(self, encoder: nn.Module, cond_dim: int, eye_dim: int = 1, hidden: int = 64, n_layers: int = 3,
                 pg_dim: int = 0):
        super().__init__()
        self.encoder, self.cond_dim, self.eye_dim, self.pg_dim = encoder, cond_dim, eye_dim, pg_dim
        # first layer split by input so the per-Gaussian and per-frame parts are computed once each
        self.in_pos = nn.Linear(encoder.out_dim, hidden)
        self.in_cond = nn.Linear(cond_dim + eye_dim, hidden, bias=False)
        self.in_pg = nn.Linear(pg_dim, hidden, bias=False) if pg_dim else None
        layers = []
        for _ in range(n_layers - 1):
            layers += [nn.ReLU(), nn.Linear(hidden, hidden)]
        self.trunk = nn.Sequential(*layers, nn.ReLU())
        self.out = nn.Linear(hidden, 3 + 4 + 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def position_features(self, xyz: torch.Tensor) -> torch.Tensor:
        """(N,hidden) per-Gaussian part of the first layer (position encoding + in_pos). It depends
        on the canonical positions only, so a renderer computes it once for all frames."""
        return self.in_pos(self.encoder(xyz))

    def forward(self, xyz: torch.Tensor, code: torch.Tensor, eye: torch.Tensor | None = None, pg=None,
                pos: torch.Tensor | None = None):
        """xyz (N,3) canonical; code (C,Dc); eye (C,E) -> Δxyz (C,N,3), Δquat (C,N,4), Δlog-scale (C,N,3).
        pos: position_features(xyz) when already computed (rendering), else computed here."""
        parts = [code] + ([eye.reshape(len(code), -1)] if self.eye_dim else [])
        pos = self.position_features(xyz) if pos is None else pos
        h = pos[None] + self.in_cond(torch.cat(parts, -1))[:, None]
        if self.in_pg is not None and pg is not None:
            h = h + self.in_pg(pg)
        o = self.out(self.trunk(h))
        dq = torch.cat([o[..., 3:4] + 1.0, o[..., 4:7]], -1)  # around the identity (1, 0, 0, 0)
        return o[..., :3], dq, o[..., 7:]


def field_param_groups(field: DeformField, condition, lr_grid: float, lr_mlp: float) -> list[dict]:
    """Adam groups: the hash grid at lr_grid, the MLPs (and the condition's, unless None) at lr_mlp."""
    grid = [p for n, p in field.named_parameters() if n.startswith("encoder.")]
    rest = [p for n, p in field.named_parameters() if not n.startswith("encoder.")]
    rest += list(condition.parameters()) if condition is not None else []
    groups = [{"params": rest, "lr": lr_mlp, "name": "mlp"}]
    if grid:
        groups.insert(0, {"params": grid, "lr": lr_grid, "name": "grid"})
    return groups


def apply_deform(means, quats, log_scales, dxyz, dquat, dscale):
    """Deformed per-camera Gaussians (C,N,·); quats normalised, scales linear."""
    return (means[None] + dxyz, normalize_quat(quat_multiply(normalize_quat(quats)[None], normalize_quat(dquat))),
            torch.exp(log_scales[None] + dscale))


# ---- HDF5: network weights as named datasets ------------------------------------------------
HALF_SUFFIX = "grid.table"  # hash-grid tables: most of a model file's bytes


def save_state_dict(group, module: nn.Module) -> None:
    """Weights as named datasets. Hash-grid tables are stored at half precision, deflated: half
    their float32 size (6.1 -> 2.6-2.7 MB per field; a model is fixed-size, so this is most of a short
    clip's run directory besides its frames). The rounding (relative 2^-11) moves a render by far
    less than one grey level (tests/core/test_field_storage.py); checkpoints keep float32."""
    for k, v in module.state_dict().items():
        a = v.detach().cpu().numpy()
        if k.endswith(HALF_SUFFIX) and a.dtype == np.float32:
            group.create_dataset(k, data=a.astype(np.float16), chunks=True, compression="gzip",
                                 compression_opts=4, shuffle=True)
        else:
            group.create_dataset(k, data=a)


def read_state_dict(group) -> dict[str, torch.Tensor]:
    out = {}

    def visit(name, obj):
        if hasattr(obj, "shape"):
            a = obj[()]
            out[name.replace("/", ".")] = torch.as_tensor(a.astype(np.float32) if a.dtype == np.float16 else a)
    group.visititems(visit)
    return out
