"""A set of 3D Gaussians: parameters, activations, spherical harmonics, HDF5, PLY and .splat I/O.

Stored (optimised) parameters, the 3DGS convention:
  means (N,3)            positions
  quats (N,4)            rotations, wxyz, unnormalised (normalised on use)
  log_scales (N,3)       log of the per-axis standard deviations
  opacity_logits (N,)    sigmoid -> opacity
  sh_dc (N,3)            SH degree-0 coefficients (colour = SH_C0 * dc + 0.5)
  sh_rest (N,K-1,3)      higher SH coefficients, K = (degree+1)^2 (K-1 = 0 for degree 0)
The PLY export writes the names every 3DGS viewer reads (x,y,z,nx,ny,nz,f_dc_*,f_rest_*,
opacity,scale_*,rot_*), with f_rest in the reference code's channel-major order.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")
SH_C0 = 0.28209479177387814
# The canonical head cube of track.h5's head space: where random head Gaussians start.
HEAD_BOX = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def normalize_quat(q: torch.Tensor) -> torch.Tensor:
    return q / q.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of wxyz quaternions (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = normalize_quat(q).unbind(-1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).reshape(*q.shape[:-1], 3, 3)


class GaussianModel(nn.Module):
    """Parameters live in `self.params` (a ParameterDict keyed by PARAM_NAMES)."""

    def __init__(self, means, quats, log_scales, opacity_logits, sh_dc, sh_rest, sh_degree: int):
        super().__init__()
        self.sh_degree = int(sh_degree)
        self.params = nn.ParameterDict({
            "means": nn.Parameter(means), "quats": nn.Parameter(quats), "log_scales": nn.Parameter(log_scales),
            "opacity_logits": nn.Parameter(opacity_logits), "sh_dc": nn.Parameter(sh_dc),
            "sh_rest": nn.Parameter(sh_rest),
        })

    # ---- construction --------------------------------------------------------
    @classmethod
    def random(cls, n: int, lo, hi, sh_degree: int = 0, opacity: float = 0.1, generator: torch.Generator | None = None,
               colors: torch.Tensor | None = None) -> "GaussianModel":
        """n Gaussians uniformly in the box [lo, hi] (3-vectors), isotropic, sized to the mean spacing."""
        lo = torch.as_tensor(lo, dtype=torch.float32)
        hi = torch.as_tensor(hi, dtype=torch.float32)
        means = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
        volume = float(torch.prod(hi - lo))
        spacing = max((volume / max(n, 1)) ** (1 / 3), 1e-3)
        log_scales = torch.full((n, 3), math.log(0.5 * spacing))
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        rgb = colors if colors is not None else torch.rand(n, 3, generator=generator) * 0.2 + 0.4
        k = (sh_degree + 1) ** 2
        return cls(means, quats, log_scales, torch.full((n,), math.log(opacity / (1 - opacity))),
                   rgb_to_sh(rgb), torch.zeros(n, k - 1, 3), sh_degree)

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def num(self) -> int:
        return len(self)

    # ---- activations --------------------------------------------------------
    @property
    def means(self) -> torch.Tensor:
        return self.params["means"]

    @property
    def quats(self) -> torch.Tensor:
        return normalize_quat(self.params["quats"])

    @property
    def scales(self) -> torch.Tensor:
        return torch.exp(self.params["log_scales"])

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.params["opacity_logits"])

    def colors(self) -> torch.Tensor:
        """View-independent RGB (N,3) from the degree-0 coefficients."""
        return (SH_C0 * self.params["sh_dc"] + 0.5).clamp(min=0)

    def color_inputs(self, degree: int | None = None) -> tuple[torch.Tensor, int | None]:
        """(colors, sh_degree) for the rasteriser: RGB (N,3) at degree 0, else SH (N,K,3) that
        the rasteriser evaluates per camera (view direction from each camera to each mean)."""
        degree = self.sh_degree if degree is None else min(degree, self.sh_degree)
        if degree == 0:
            return self.colors(), None
        return torch.cat([self.params["sh_dc"][:, None], self.params["sh_rest"]], 1), degree

    # ---- I/O ------------------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.params.items()}

    def save_h5(self, group) -> None:
        for k, v in self.state_arrays().items():
            group.create_dataset(k, data=v.astype(np.float32), compression="gzip", compression_opts=1)
        group.attrs["sh_degree"] = self.sh_degree
        group.attrs["n_gaussians"] = self.num

    @classmethod
    def from_arrays(cls, arrays: dict, sh_degree: int, device="cpu") -> "GaussianModel":
        t = {k: torch.as_tensor(np.asarray(arrays[k]), dtype=torch.float32, device=device) for k in PARAM_NAMES}
        return cls(t["means"], t["quats"], t["log_scales"], t["opacity_logits"], t["sh_dc"], t["sh_rest"], sh_degree)

    @classmethod
    def load_h5(cls, group, device="cpu") -> "GaussianModel":
        return cls.from_arrays({k: group[k][()] for k in PARAM_NAMES}, int(group.attrs["sh_degree"]), device)

    def load_arrays_(self, arrays: dict) -> None:
        """Replace every parameter (the count may change, e.g. when resuming after densification)."""
        dev = self.params["means"].device
        for k in PARAM_NAMES:
            self.params[k] = nn.Parameter(torch.as_tensor(np.asarray(arrays[k]), dtype=torch.float32, device=dev))

    def write_ply(self, path: str | Path) -> Path:
        return write_ply(path, self.state_arrays())


# ---- PLY (binary little-endian, the 3DGS attribute names) ------------------------
def ply_fields(n_rest_coeffs: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * n_rest_coeffs)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_ply(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    path = Path(path)
    n = arrays["means"].shape[0]
    rest = arrays["sh_rest"].reshape(n, -1, 3)
    # reference layout: features_rest (N, 3, K-1) flattened -> all R coefficients, then G, then B
    rest_flat = np.transpose(rest, (0, 2, 1)).reshape(n, -1)
    data = np.concatenate([
        arrays["means"], np.zeros((n, 3), np.float32), arrays["sh_dc"], rest_flat,
        arrays["opacity_logits"].reshape(n, 1), arrays["log_scales"], arrays["quats"],
    ], axis=1).astype("<f4")
    names = ply_fields(rest.shape[1])
    assert data.shape[1] == len(names)
    header = "ply\nformat binary_little_endian 1.0\n"
    header += "comment talkctl canonical Gaussians (3DGS layout)\n"
    header += f"element vertex {n}\n" + "".join(f"property float {nm}\n" for nm in names) + "end_header\n"
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(np.ascontiguousarray(data).tobytes())
    tmp.replace(path)
    return path


def write_splat(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """The 32-byte-per-splat web format (.splat): position 3 x float32, linear scale 3 x float32,
    RGBA 4 x uint8 (degree-0 colour, sigmoid opacity), rotation wxyz 4 x uint8 (q * 128 + 128),
    biggest and most opaque splats first, as web viewers expect. View-dependent colour is dropped."""
    path = Path(path)
    n = arrays["means"].shape[0]
    log_scales = np.asarray(arrays["log_scales"], np.float64)
    opacity = 1.0 / (1.0 + np.exp(-np.asarray(arrays["opacity_logits"], np.float64).reshape(n)))
    order = np.argsort(-np.exp(log_scales.sum(1)) * opacity, kind="stable")
    q = np.asarray(arrays["quats"], np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    rgb = np.asarray(arrays["sh_dc"], np.float64) * SH_C0 + 0.5
    rgba = np.concatenate([rgb, opacity[:, None]], 1)
    rec = np.zeros(n, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rec["pos"] = np.asarray(arrays["means"])[order]
    rec["scale"] = np.exp(log_scales)[order]
    rec["rgba"] = np.clip(np.round(rgba[order] * 255), 0, 255)
    rec["rot"] = np.clip(np.round(q[order] * 128 + 128), 0, 255)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(rec.tobytes())
    tmp.replace(path)
    return path


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Read a binary little-endian PLY of float properties: {property name: (N,) array}."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    if lines[0] != "ply" or lines[1] != "format binary_little_endian 1.0":
        raise ValueError(f"{path}: not a binary little-endian PLY")
    n, names = 0, []
    for line in lines:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:2] == ["property", "float"]:
            names.append(parts[2])
    data = np.frombuffer(raw[end:], dtype="<f4", count=n * len(names)).reshape(n, len(names))
    return {nm: data[:, i] for i, nm in enumerate(names)}
