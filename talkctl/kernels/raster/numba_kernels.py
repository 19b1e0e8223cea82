"""Compiled (numba) forward-only kernels: projection + colour, band binning, splat compositing.

The same rules as the torch reference (projection.py, tiles.py, composite.py), computed
Gaussian by Gaussian instead of as dense blocks:
- projection: EWA with the clamped Jacobian, 0.3 px² dilation, the reference's per-axis radius, culling;
  colours from SH along the camera-to-mean direction (or given RGB);
- visibility: a pixel sees a Gaussian only inside its 16-px tile rectangle and where
  alpha = min(0.999, o exp(-sigma)) >= 1/255;
- compositing front to back by camera depth (stable: ties keep index order), stopping
  before the transmittance would fall to 1e-4.
Work is split into horizontal bands of one tile row per camera; each band holds the
depth-ordered Gaussians whose tile rectangle covers it, and walks each Gaussian only over
the pixels of its 1/255 footprint ellipse (row by row, clipped to its tile rectangle and
the band), so the cost follows the splats' areas, not pixels x list length; along a row
o exp(-sigma) comes by recurrence (two exp() per row). Bands own their output rows: they
can run in parallel threads (the kernels release the GIL). (Measured on a trained head:
16 x 16 blocks with per-block early termination were slower than bands, the per-row set-up
outweighing the skipped pixels.)

Array conventions (all C-contiguous): per-camera inputs have a leading axis of 1 (shared)
or C; scalars are computed in float64 and stored as float32.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .projection import ALPHA_MAX, ALPHA_MIN, EPS2D, RADIUS_SIGMAS, T_MIN
from .sh import C0, C1, C2, C3
from .tiles import TILE

_EXTENT_PAD = 1e-3  # the footprint box is widened a hair: rounding must never drop a pixel
LN_ALPHA_MIN = math.log(ALPHA_MIN)
# float32 constants: a Python float in numba arithmetic would promote the pixel loop to float64
_ZERO, _HALF, _ONE = np.float32(0.0), np.float32(0.5), np.float32(1.0)
_ALPHA_MIN, _ALPHA_MAX, _T_MIN = np.float32(ALPHA_MIN), np.float32(ALPHA_MAX), np.float32(T_MIN)
# projection record columns
U, V, CA, CB, CC, Z, OP, R0, R1, R2, HX, HY = range(12)
N_REC = 12


@njit(cache=True, nogil=True)
def _sh_rgb(coeffs, n, degree, x, y, z, b, out):
    """out[0:3] = Σ_k Y_k(d) c_k + 0.5 clamped at 0 (degree >= 0), or the raw rgb (degree < 0)."""
    if degree < 0:
        for ch in range(3):
            out[ch] = coeffs[n, 0, ch]
        return
    norm = max(math.sqrt(x * x + y * y + z * z), 1e-12)
    x, y, z = x / norm, y / norm, z / norm
    b[0] = C0
    if degree >= 1:
        b[1], b[2], b[3] = -C1 * y, C1 * z, -C1 * x
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        b[4], b[5], b[6] = C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy)
        b[7], b[8] = C2[3] * xz, C2[4] * (xx - yy)
    if degree >= 3:
        b[9] = C3[0] * y * (3 * xx - yy)
        b[10] = C3[1] * xy * z
        b[11] = C3[2] * y * (4 * zz - xx - yy)
        b[12] = C3[3] * z * (2 * zz - 3 * xx - 3 * yy)
        b[13] = C3[4] * x * (4 * zz - xx - yy)
        b[14] = C3[5] * z * (xx - yy)
        b[15] = C3[6] * x * (xx - 3 * yy)
    K = (degree + 1) * (degree + 1)
    for ch in range(3):
        s = 0.0
        for k in range(K):
            s += b[k] * coeffs[n, k, ch]
        out[ch] = max(s + 0.5, 0.0)


@njit(cache=True, nogil=True)
def project_camera(c, means, quats, scales, opac, coeffs, degree, view, Ks, width, height,
                   near, far, rec, radii):
    """Camera c: rec[n] = [u, v, conic a, b, c, z, opacity, r, g, b, half-x, half-y]; radii[n].
    Scalar code throughout: no temporary arrays per Gaussian."""
    N = means.shape[1]
    cm, cq = (c if means.shape[0] > 1 else 0), (c if quats.shape[0] > 1 else 0)
    cs, co = (c if scales.shape[0] > 1 else 0), (c if opac.shape[0] > 1 else 0)
    P = view[c]
    centre = np.empty(3)
    for j in range(3):  # camera centre -Rᵀ t
        centre[j] = -(P[0, j] * P[0, 3] + P[1, j] * P[1, 3] + P[2, j] * P[2, 3])
    fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
    lim_x0, lim_x1 = -(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx
    lim_y0, lim_y1 = -(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy
    col = np.empty(3)
    basis = np.empty(16)
    for n in range(N):
        mx, my, mz = means[cm, n, 0], means[cm, n, 1], means[cm, n, 2]
        x = P[0, 0] * mx + P[0, 1] * my + P[0, 2] * mz + P[0, 3]
        y = P[1, 0] * mx + P[1, 1] * my + P[1, 2] * mz + P[1, 3]
        z = P[2, 0] * mx + P[2, 1] * my + P[2, 2] * mz + P[2, 3]
        radii[n] = 0
        in_depth = near <= z <= far
        zs = z if in_depth else 1.0
        u, v = fx * x / zs + cx, fy * y / zs + cy
        xz = min(max(x / zs, lim_x0), lim_x1)
        yz = min(max(y / zs, lim_y0), lim_y1)
        # rows of the 2x3 factor T = J Rv Rq S, J = [[fx/z, 0, -fx xz/z], [0, fy/z, -fy yz/z]]
        qw, qx, qy, qz = quats[cq, n, 0], quats[cq, n, 1], quats[cq, n, 2], quats[cq, n, 3]
        qn = max(math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)
        qw, qx, qy, qz = qw / qn, qx / qn, qy / qn, qz / qn
        sx, sy, sz = scales[cs, n, 0], scales[cs, n, 1], scales[cs, n, 2]
        # M = Rq diag(s), column j = Rq[:, j] s_j
        m00, m01, m02 = (1 - 2 * (qy * qy + qz * qz)) * sx, 2 * (qx * qy - qw * qz) * sy, 2 * (qx * qz + qw * qy) * sz
        m10, m11, m12 = 2 * (qx * qy + qw * qz) * sx, (1 - 2 * (qx * qx + qz * qz)) * sy, 2 * (qy * qz - qw * qx) * sz
        m20, m21, m22 = 2 * (qx * qz - qw * qy) * sx, 2 * (qy * qz + qw * qx) * sy, (1 - 2 * (qx * qx + qy * qy)) * sz
        # J Rv: two rows
        a0 = (fx / zs) * P[0, 0] - (fx * xz / zs) * P[2, 0]
        a1 = (fx / zs) * P[0, 1] - (fx * xz / zs) * P[2, 1]
        a2 = (fx / zs) * P[0, 2] - (fx * xz / zs) * P[2, 2]
        b0 = (fy / zs) * P[1, 0] - (fy * yz / zs) * P[2, 0]
        b1 = (fy / zs) * P[1, 1] - (fy * yz / zs) * P[2, 1]
        b2 = (fy / zs) * P[1, 2] - (fy * yz / zs) * P[2, 2]
        t00, t01, t02 = a0 * m00 + a1 * m10 + a2 * m20, a0 * m01 + a1 * m11 + a2 * m21, a0 * m02 + a1 * m12 + a2 * m22
        t10, t11, t12 = b0 * m00 + b1 * m10 + b2 * m20, b0 * m01 + b1 * m11 + b2 * m21, b0 * m02 + b1 * m12 + b2 * m22
        cxx = t00 * t00 + t01 * t01 + t02 * t02 + EPS2D
        cxy = t00 * t10 + t01 * t11 + t02 * t12
        cyy = t10 * t10 + t11 * t11 + t12 * t12 + EPS2D
        det = cxx * cyy - cxy * cxy
        o = opac[co, n]
        r = rec[n]
        r[U], r[V], r[Z], r[OP] = u, v, z, o
        if not (in_depth and det > 0 and o >= ALPHA_MIN):
            continue
        r[CA], r[CB], r[CC] = cyy / det, -cxy / det, cxx / det
        ext = 2.0 * max(math.log(o) - LN_ALPHA_MIN, 0.0)  # sigma <= ln(255 o) on the footprint
        # the torch reference's (gsplat 1.5's) footprint: per axis, min(3.33, sqrt(2 ln(255 o))) sigmas
        extend = min(math.sqrt(ext), RADIUS_SIGMAS)
        rx = min(math.ceil(extend * math.sqrt(max(cxx, 0.0))), float(1 << 24))
        ry = min(math.ceil(extend * math.sqrt(max(cyy, 0.0))), float(1 << 24))
        radius = max(rx, ry)
        if not (math.isfinite(radius) and radius > 0 and u + rx > 0 and u - rx < width
                and v + ry > 0 and v - ry < height):
            continue
        radii[n] = np.int32(radius)
        r[HX] = math.sqrt(ext * cxx) * (1 + 1e-4) + _EXTENT_PAD
        r[HY] = math.sqrt(ext * cyy) * (1 + 1e-4) + _EXTENT_PAD
        _sh_rgb(coeffs, n, degree, mx - centre[0], my - centre[1], mz - centre[2], basis, col)
        r[R0], r[R1], r[R2] = col[0], col[1], col[2]


@njit(cache=True, nogil=True)
def _pixel_box(r, radius, width, height):
    """Pixel box [x0, x1) x [y0, y1) a Gaussian can colour: its 16-px tile rectangle ∩ its
    1/255 footprint box ∩ the image (pixel i has its centre at i + 0.5)."""
    tw, th = -(-width // TILE), -(-height // TILE)
    tx0 = min(max(math.floor((r[U] - radius) / TILE), 0), tw) * TILE
    tx1 = min(max(math.ceil((r[U] + radius) / TILE), 0), tw) * TILE
    ty0 = min(max(math.floor((r[V] - radius) / TILE), 0), th) * TILE
    ty1 = min(max(math.ceil((r[V] + radius) / TILE), 0), th) * TILE
    x0 = max(max(tx0, math.ceil(r[U] - r[HX] - 0.5)), 0)
    x1 = min(min(tx1, math.floor(r[U] + r[HX] - 0.5) + 1), width)
    y0 = max(max(ty0, math.ceil(r[V] - r[HY] - 0.5)), 0)
    y1 = min(min(ty1, math.floor(r[V] + r[HY] - 0.5) + 1), height)
    return int(x0), int(x1), int(y0), int(y1)


@njit(cache=True, nogil=True)
def bin_camera(rec, radii, width, height, band_rows):
    """Depth-ordered Gaussian lists per band of `band_rows` rows: (ids, offsets (n_bands + 1,),
    boxes (N, 4) pixel boxes)."""
    N = rec.shape[0]
    n_bands = -(-height // band_rows)
    boxes = np.zeros((N, 4), np.int32)
    counts = np.zeros(n_bands + 1, np.int64)
    vis = np.empty(N, np.int64)
    nv = 0
    for n in range(N):
        if radii[n] > 0:
            x0, x1, y0, y1 = _pixel_box(rec[n], float(radii[n]), width, height)
            if x1 > x0 and y1 > y0:
                boxes[n, 0], boxes[n, 1], boxes[n, 2], boxes[n, 3] = x0, x1, y0, y1
                for bnd in range(y0 // band_rows, (y1 - 1) // band_rows + 1):
                    counts[bnd + 1] += 1
                vis[nv] = n
                nv += 1
    vis = vis[:nv]
    order = vis[np.argsort(rec[vis, Z], kind="mergesort")]  # stable: ties keep index order
    offsets = np.cumsum(counts)
    cursor = offsets[:-1].copy()
    ids = np.empty(offsets[-1], np.int32)
    for n in order:
        for bnd in range(boxes[n, 2] // band_rows, (boxes[n, 3] - 1) // band_rows + 1):
            ids[cursor[bnd]] = n
            cursor[bnd] += 1
    return ids, offsets, boxes


@njit(cache=True, nogil=True)
def _row_span(u, dy, a, b, c, cut, x0, x1):
    """Pixels [lo, hi) of a row at offset dy from the mean where sigma <= cut (clipped to [x0, x1)):
    ½a dx² + b dy dx + ½c dy² <= cut is an interval in dx."""
    disc = (b * b - a * c) * dy * dy + 2.0 * a * cut
    if disc < 0.0:
        return x0, x0
    root = math.sqrt(disc)
    lo = math.ceil(u - 0.5 + (-b * dy - root) / a - _EXTENT_PAD)
    hi = math.floor(u - 0.5 + (-b * dy + root) / a + _EXTENT_PAD) + 1
    return max(int(lo), x0), min(int(hi), x1)


@njit(cache=True, nogil=True, fastmath=True)
def composite_band(rec, ids, offsets, boxes, bnd, band_rows, out_rgb, out_depth, out_alpha, T):
    """Front-to-back compositing of band `bnd` of one camera into the zeroed out_* (H, W, ·) rows.
    rec is the float32 copy of the projection records; the per-pixel work is float32 (~20%
    faster than float64, the precision of the torch reference). T (band_rows, W) float32 is
    scratch: the transmittance, 0 once a pixel has stopped."""
    height, width = out_rgb.shape[0], out_rgb.shape[1]
    r0 = bnd * band_rows
    r1 = min(r0 + band_rows, height)
    T[:, :] = _ONE
    n_live = (r1 - r0) * width
    for k in range(offsets[bnd], offsets[bnd + 1]):
        n = ids[k]
        u, v, a, b, c, o = rec[n, U], rec[n, V], rec[n, CA], rec[n, CB], rec[n, CC], rec[n, OP]
        f0, f1, f2, fz = rec[n, R0], rec[n, R1], rec[n, R2], rec[n, Z]
        cut = math.log(o) - LN_ALPHA_MIN + 1e-4  # beyond: alpha < 1/255 for sure
        x0, x1 = boxes[n, 0], boxes[n, 1]
        ud, ad, bd, cd, od = float(u), float(a), float(b), float(c), float(o)
        q = math.exp(-ad)
        for py in range(max(boxes[n, 2], r0), min(boxes[n, 3], r1)):
            dyd = py + 0.5 - float(v)
            row = py - r0
            lo, hi = _row_span(ud, dyd, ad, bd, cd, cut, x0, x1)
            if hi <= lo:
                continue
            # o exp(-sigma) along the row by recurrence (float64): sigma is quadratic in x, so
            # g(x+1) = g(x) r(x) and r(x+1) = r(x) q: two exp() per row instead of one per pixel
            dx0 = lo + 0.5 - ud
            g = od * math.exp(-(0.5 * ad * dx0 * dx0 + bd * dyd * dx0 + 0.5 * cd * dyd * dyd))
            r = math.exp(-(ad * (dx0 + 0.5) + bd * dyd))
            for px in range(lo, hi):
                t = T[row, px]
                alpha = np.float32(min(g, ALPHA_MAX))
                g *= r
                r *= q
                if t == _ZERO or alpha < _ALPHA_MIN:
                    continue
                t_after = t * (_ONE - alpha)
                if t_after <= _T_MIN:  # stop before T falls to 1e-4; this Gaussian is not used
                    out_alpha[py, px, 0] = _ONE - t
                    T[row, px] = _ZERO
                    n_live -= 1
                    continue
                w = alpha * t
                out_rgb[py, px, 0] += w * f0
                out_rgb[py, px, 1] += w * f1
                out_rgb[py, px, 2] += w * f2
                out_depth[py, px, 0] += w * fz
                T[row, px] = t_after
        if n_live == 0:
            break
    for row in range(r1 - r0):
        for px in range(width):
            if T[row, px] > _ZERO:
                out_alpha[r0 + row, px, 0] = _ONE - T[row, px]


@njit(cache=True, nogil=True)
def project_and_bin(c, means, quats, scales, opac, coeffs, degree, view, Ks, width, height, near, far,
                    band_rows, rec, radii, means2d):
    """Camera c: projection into rec[c], radii[c], means2d[c]; returns its band lists."""
    project_camera(c, means, quats, scales, opac, coeffs, degree, view, Ks, width, height, near, far,
                   rec[c], radii[c])
    means2d[c, :, 0] = rec[c, :, U]
    means2d[c, :, 1] = rec[c, :, V]
    return bin_camera(rec[c], radii[c], width, height, band_rows)


@njit(cache=True, nogil=True)
def composite_bands(rec, ids, offsets, boxes, b0, b1, band_rows, out_rgb, out_depth, out_alpha):
    """Bands b0..b1-1 of one camera (a thread's share); rec (N, N_REC) float32."""
    T = np.empty((band_rows, out_rgb.shape[1]), np.float32)
    for bnd in range(b0, b1):
        composite_band(rec, ids, offsets, boxes, bnd, band_rows, out_rgb, out_depth, out_alpha, T)
