"""Real spherical harmonics up to degree 3, in the convention of 3DGS and gsplat.

rgb = Σ_k Y_k(d) · coeffs_k + 0.5, clamped at 0, where d is the unit vector from
the camera centre to the Gaussian mean. Coefficient k = 0 is the DC term; the basis
is orthonormal on the sphere (tests check this by quadrature).
"""
from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """(..., 3) unit directions -> (..., (degree+1)²) basis values."""
    if not 0 <= degree <= 3:
        raise ValueError(f"sh_degree must be 0..3, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """coeffs (..., K, 3) with K >= (degree+1)², dirs (..., 3) any length -> rgb (..., 3) >= 0.

    Only the first (degree+1)² coefficients are used, so training can raise the
    degree progressively with one coefficient tensor.
    """
    n = (degree + 1) ** 2
    if coeffs.shape[-2] < n:
        raise ValueError(f"sh_degree {degree} needs {n} coefficients, colors has {coeffs.shape[-2]}")
    basis = sh_basis(degree, torch.nn.functional.normalize(dirs, dim=-1))
    rgb = (basis.unsqueeze(-1) * coeffs[..., :n, :]).sum(-2)
    return (rgb + 0.5).clamp(min=0.0)
