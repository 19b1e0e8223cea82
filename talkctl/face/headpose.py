"""Head pose per frame and one set of intrinsics, without a licensed face model.

1. Keyframes: up to `keyframes` frames with a detected face, spread over the clip.
2. Initial canonical shape: the landmark backend's own 3D estimates of those frames,
   aligned by similarity Procrustes on the rigid points and averaged.
3. Bundle adjustment (scipy least_squares, soft-L1 loss, sparse Jacobian) over the keyframes:
   one pose per keyframe, the rigid points of the shape and one shared focal length, with
   weak priors that hold the shape near its initial estimate (this fixes the similarity
   gauge) and the focal length near a typical talking-head field of view.
4. Canonical head space (see `canonical_frame`), then every frame's pose by PnP on the rigid
   points (warm-started from the previous frame), then Gaussian smoothing over time.

Conventions: OpenCV camera (x right, y down, z forward); world = canonical head space; the
head pose (R, t) maps head points into the camera, so world_to_cam = [R | t] (the camera is
the inverse head pose). Pixel centres at i + 0.5, principal point at the image centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Canonical head space: outer eye corners 0.62 apart (about 9 cm on an adult, so 1 unit is
# about 14.5 cm: the face spans ~1.2 from hairline to chin); origin 0.05 below the eye line
# (the eyes are near half of the crown-to-chin height; the open jaw needs the room below) and
# 0.52 units (~7.5 cm) behind the outer eye corners, near the centre of the skull. Then the
# crown is at y ~ -0.9, the open chin at y ~ +0.95, the nose tip at z ~ -0.85 and the back of
# the head at z ~ +0.7: the head fits in [-1, 1]^3.
EYE_CORNER_DISTANCE = 0.62
CENTRE_BELOW_EYES = 0.05
CENTRE_BEHIND_EYES = 0.52


@dataclass
class HeadPose:
    R: np.ndarray            # (T, 3, 3) head rotation (canonical -> camera)
    t: np.ndarray            # (T, 3)
    K: np.ndarray            # (3, 3)
    shape: np.ndarray        # (L, 3) canonical face shape
    reproj: np.ndarray       # (T,) mean reprojection error of the rigid points, px
    keyframes: np.ndarray    # frame indices used by the bundle adjustment
    ba_rms: float            # rms reprojection error after bundle adjustment, px

    @property
    def focal(self) -> float:
        return float(self.K[0, 0])

    def world_to_cam(self) -> np.ndarray:
        m = np.zeros((len(self.R), 4, 4), dtype=np.float32)
        m[:, :3, :3] = self.R
        m[:, :3, 3] = self.t
        m[:, 3, 3] = 1.0
        return m


def intrinsics(focal: float, size: int) -> np.ndarray:
    return np.array([[focal, 0, size / 2.0], [0, focal, size / 2.0], [0, 0, 1]], dtype=np.float64)


def focal_from_fov(fov_deg: float, size: int) -> float:
    return size / 2.0 / np.tan(np.radians(fov_deg) / 2.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising |s R src + t - dst|^2 (points as rows)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.ones(3)
    if np.linalg.det(u @ vt) < 0:
        d[-1] = -1
    R = u @ np.diag(d) @ vt
    s = float((sig * d).sum() / (a ** 2).sum())
    return s, R, md - s * R @ ms


def keyframe_indices(valid: np.ndarray, count: int) -> np.ndarray:
    idx = np.flatnonzero(valid)
    if len(idx) <= count:
        return idx
    return idx[np.unique(np.linspace(0, len(idx) - 1, count).round().astype(int))]


def mean_shape(points: np.ndarray, rigid: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Generalised Procrustes mean of (K, L, 3) point sets, aligned on the rigid subset."""
    mean = points[0].astype(np.float64)
    for _ in range(iterations):
        acc = np.zeros_like(mean)
        for p in points:
            s, R, t = umeyama(p[rigid].astype(np.float64), mean[rigid])
            acc += s * p @ R.T + t
        mean = acc / len(points)
    return mean


def canonical_frame(shape: np.ndarray, eye_outer: tuple[int, int], chin: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, Q, o) such that X_canonical = s * Q @ (X - o): x from the right to the left outer
    eye corner (image right for a frontal face), y towards the chin, z = x cross y (into the
    head, away from a frontal camera); origin at the head centre; eye corners 0.62 apart."""
    right, left = shape[eye_outer[0]], shape[eye_outer[1]]
    x = left - right
    dist = np.linalg.norm(x)
    x = x / dist
    mid = (left + right) / 2.0
    y = shape[chin] - mid
    y = y - (y @ x) * x
    y = y / np.linalg.norm(y)
    z = np.cross(x, y)
    Q = np.stack([x, y, z])
    s = EYE_CORNER_DISTANCE / dist
    o = mid + (CENTRE_BEHIND_EYES * z + CENTRE_BELOW_EYES * y) / s
    return s, Q, o


def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rv).as_matrix()


def _project(R: np.ndarray, t: np.ndarray, X: np.ndarray, focal: float, c: float) -> np.ndarray:
    """(K,3,3), (K,3), (P,3) -> (K,P,2) pixels."""
    cam = np.einsum("kij,pj->kpi", R, X) + t[:, None, :]
    z = np.maximum(cam[..., 2:3], 1e-6)
    return focal * cam[..., :2] / z + c


def solve_pnp(X: np.ndarray, uv: np.ndarray, K: np.ndarray, guess: tuple[np.ndarray, np.ndarray] | None = None):
    """Pose (rvec, tvec) of points X seen at uv; iterative LM, EPnP start when no guess."""
    import cv2

    X = np.ascontiguousarray(X, dtype=np.float64)
    uv = np.ascontiguousarray(uv, dtype=np.float64)
    if guess is None:
        ok, rv, tv = cv2.solvePnP(X, uv, K, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok or tv[2, 0] <= 0:
            rv, tv = np.zeros((3, 1)), np.array([[0.0], [0.0], [K[0, 0] * 2.0 / max(np.ptp(uv[:, 0]), 1.0)]])
        guess = (rv, tv)
    rv, tv = guess[0].reshape(3, 1).copy(), guess[1].reshape(3, 1).copy()
    ok, rv, tv = cv2.solvePnP(X, uv, K, None, rv, tv, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
    return rv.ravel(), tv.ravel()


def _skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = np.zeros(v.shape[:-1])
    return np.stack([np.stack([z, -v[..., 2], v[..., 1]], -1),
                     np.stack([v[..., 2], z, -v[..., 0]], -1),
                     np.stack([-v[..., 1], v[..., 0], z], -1)], -2)


def _normal_equations(R, t, X, lf, e, shape0, lf0, s2, w2, focal_sigma):
    """bundle_adjust's IRLS normal equations at (R, t, X, log f) with residuals e (K,P,2), in
    blocks: poses (block diagonal) | b = (points, log f). Returns (Hpp (K,6,6), Hpb (K,6,nb),
    Hbb (nb,nb), gp (K,6), gb (nb,)) with nb = 3P + 1."""
    nk, npt = e.shape[:2]
    f = np.exp(lf)
    rx = np.einsum("kij,pj->kpi", R, X)                    # (K,P,3) rotated points
    cam = rx + t[:, None, :]
    zc = cam[..., 2]
    # d(u,v)/d(cam): (K,P,2,3)
    dproj = np.zeros((nk, npt, 2, 3))
    dproj[..., 0, 0] = f / zc
    dproj[..., 1, 1] = f / zc
    dproj[..., :, 2] = -f * cam[..., :2] / zc[..., None] ** 2
    j_rot = -dproj @ _skew(rx)                            # left perturbation of R
    j_t = dproj
    j_x = dproj @ R[:, None]                              # (K,P,2,3)
    j_f = (f * cam[..., :2] / zc[..., None])[..., None]   # d/dlog f, (K,P,2,1)
    # soft-L1 IRLS weights per observation
    wgt = 1.0 / np.sqrt(1.0 + (e ** 2).sum(-1) / s2)      # (K,P)
    jp = np.concatenate([j_rot, j_t], -1)                 # (K,P,2,6)
    we = wgt[..., None] * e                               # (K,P,2)
    nb = 3 * npt + 1
    Hpp = np.einsum("kp,kpri,kprj->kij", wgt, jp, jp)
    Hpb = np.zeros((nk, 6, nb))
    Hpb[:, :, :-1] = np.einsum("kp,kpri,kprj->kipj", wgt, jp, j_x).reshape(nk, 6, 3 * npt)
    Hpb[:, :, -1] = np.einsum("kp,kpri,kpr->ki", wgt, jp, j_f[..., 0])
    Hbb = np.zeros((nb, nb))
    Hxx = np.einsum("kp,kpri,kprj->pij", wgt, j_x, j_x) + w2 * np.eye(3)
    for p in range(npt):
        Hbb[3 * p:3 * p + 3, 3 * p:3 * p + 3] = Hxx[p]
    hfx = np.einsum("kp,kpri,kpr->pi", wgt, j_x, j_f[..., 0]).ravel()
    Hbb[-1, :-1], Hbb[:-1, -1] = hfx, hfx
    Hbb[-1, -1] = (wgt[..., None] * j_f[..., 0] ** 2).sum() + 1.0 / focal_sigma ** 2
    gp = np.einsum("kpri,kpr->ki", jp, we)
    gb = np.concatenate([np.einsum("kpri,kpr->pi", j_x, we).ravel() + w2 * (X - shape0).ravel(),
                         [(j_f[..., 0] * we).sum() + (lf - lf0) / focal_sigma ** 2]])
    return Hpp, Hpb, Hbb, gp, gb


def bundle_adjust(obs: np.ndarray, shape0: np.ndarray, R: np.ndarray, t: np.ndarray, focal0: float, size: int,
                  shape_weight: float = 5.0, focal_sigma: float = 0.3, loss_scale: float = 2.0,
                  iterations: int = 40) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, float]:
    """Levenberg-Marquardt over K poses, P rigid points and log focal length. obs: (K, P, 2) px.

    Cost: sum of soft-L1(reprojection error, `loss_scale` px) (by iteratively reweighted least
    squares) + |shape_weight (X - X0)|^2 (canonical units; fixes the similarity gauge) +
    ((log f - log f0) / focal_sigma)^2. Rotations are updated on the left, R <- exp(d) R.
    The normal equations (6K + 3P + 1 unknowns) are solved by the Schur complement on the poses.
    Returns (focal, R (K,3,3), t (K,3), X (P,3), rms px).
    """
    from scipy.spatial.transform import Rotation

    nk, npt = obs.shape[:2]
    c = size / 2.0
    lf0 = np.log(focal0)
    s2 = loss_scale ** 2
    w2 = shape_weight ** 2
    ix = 6 * nk           # first point unknown in the step vector
    R, t, X, lf = R.copy(), t.copy(), shape0.copy(), lf0

    def errors(R, t, X, lf):
        return _project(R, t, X, np.exp(lf), c) - obs

    def cost(e, X, lf):
        z = (e ** 2).sum(-1) / s2
        return float((2 * s2 * (np.sqrt(1 + z) - 1)).sum() + w2 * ((X - shape0) ** 2).sum()
                     + ((lf - lf0) / focal_sigma) ** 2)

    e = errors(R, t, X, lf)
    current = cost(e, X, lf)
    lam = 1e-3
    for _ in range(iterations):
        Hpp, Hpb, Hbb, gp, gb = _normal_equations(R, t, X, lf, e, shape0, lf0, s2, w2, focal_sigma)
        improved = False
        for _ in range(10):
            # damped (Marquardt) system solved by the Schur complement on the pose blocks
            A = Hpp + lam * (np.eye(6) * np.einsum("kii->ki", Hpp)[:, None, :] + 1e-9 * np.eye(6))
            C = Hbb + lam * np.diag(np.diag(Hbb) + 1e-9)
            try:
                Ainv = np.linalg.inv(A)
                AiB = Ainv @ Hpb                                       # (K,6,nb)
                S = C - np.einsum("kib,kic->bc", Hpb, AiB)
                rhs = -gb + np.einsum("kib,ki->b", AiB, gp)
                db = np.linalg.solve(S, rhs)
            except np.linalg.LinAlgError:
                lam *= 10
                continue
            dpose = -np.einsum("kij,kj->ki", Ainv, gp) - AiB @ db
            step = np.concatenate([dpose.ravel(), db])
            dp = step[:ix].reshape(nk, 6)
            R_new = Rotation.from_rotvec(dp[:, :3]).as_matrix() @ R
            t_new = t + dp[:, 3:]
            X_new = X + step[ix:-1].reshape(npt, 3)
            lf_new = lf + step[-1]
            e_new = errors(R_new, t_new, X_new, lf_new)
            new = cost(e_new, X_new, lf_new)
            if new < current:
                improved = True
                rel = (current - new) / max(current, 1e-12)
                R, t, X, lf, e, current = R_new, t_new, X_new, lf_new, e_new, new
                lam = max(lam / 3, 1e-7)
                break
            lam *= 10
        if not improved or rel < 1e-7:
            break
    rms = float(np.sqrt((e ** 2).sum(-1).mean()))
    return float(np.exp(lf)), R, t, X, rms


def smooth_poses(R: np.ndarray, t: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian smoothing over time of rotations (sign-aligned quaternions) and translations."""
    if sigma <= 0 or len(R) < 3:
        return R, t
    from scipy.ndimage import gaussian_filter1d
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(R).as_quat()
    flip = np.cumprod(np.where(np.einsum("ij,ij->i", q[1:], q[:-1]) < 0, -1.0, 1.0))
    q[1:] *= flip[:, None]
    q = gaussian_filter1d(q, sigma, axis=0, mode="nearest")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return Rotation.from_quat(q).as_matrix(), gaussian_filter1d(t, sigma, axis=0, mode="nearest")


def rotation_steps_deg(R: np.ndarray) -> np.ndarray:
    """Angle between consecutive rotations, degrees, (T-1,)."""
    if len(R) < 2:
        return np.zeros(0)
    rel = np.einsum("tij,tkj->tik", R[1:], R[:-1])
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def reprojection_errors(R, t, X, uv, K) -> np.ndarray:
    """Mean pixel distance per frame between projected X (P,3) and uv (T,P,2)."""
    pred = _project(R, t, X, K[0, 0], K[0, 2])
    return np.linalg.norm(pred - uv, axis=-1).mean(-1)


def fit_head_pose(lm2d: np.ndarray, lm3d: np.ndarray, valid: np.ndarray, rigid, eye_outer, chin, size: int, *,
                  nose_tip: int | None = None, keyframes: int = 80, fov_deg: float = 24.0, smooth_sigma: float = 1.0,
                  log=None) -> HeadPose:
    """lm2d (T,L,2) px (gaps already filled), lm3d (T,L,3), valid (T,) -> HeadPose.

    nose_tip: index of a point that sticks out towards the camera; when the backend's depth
    has the opposite sign convention (the nose behind the eyes), the initial depth is mirrored.
    """
    rigid = np.asarray(rigid)
    T = len(lm2d)
    keys = keyframe_indices(valid, keyframes)
    # 1-2: initial shape in canonical space
    shape = mean_shape(lm3d[keys].astype(np.float64), rigid)
    if nose_tip is not None and shape[nose_tip, 2] > shape[list(eye_outer), 2].mean():
        shape[:, 2] *= -1  # depth convention "larger = closer": make it "larger = farther"
    s, Q, o = canonical_frame(shape, eye_outer, chin)
    shape = s * (shape - o) @ Q.T
    f0 = focal_from_fov(fov_deg, size)
    K0 = intrinsics(f0, size)
    # 3: bundle adjustment on keyframes
    rv0, tv0 = [], []
    for k in keys:
        rv, tv = solve_pnp(shape[rigid], lm2d[k, rigid], K0)
        rv0.append(rv)
        tv0.append(tv)
    focal, Rk, tvs, Xr, ba_rms = bundle_adjust(lm2d[keys][:, rigid].astype(np.float64), shape[rigid],
                                               _rotvec_to_matrix(np.array(rv0)), np.array(tv0), f0, size)
    if log:
        log.info("bundle adjustment on %d keyframes, %d rigid points: rms %.2f px, focal %.1f px (prior %.1f)",
                 len(keys), len(rigid), ba_rms, focal, f0)
    # the non-rigid points follow the refined rigid ones (similarity), then re-canonicalise
    ss, Rs, ts = umeyama(shape[rigid], Xr)
    full = ss * shape @ Rs.T + ts
    full[rigid] = Xr
    s, Q, o = canonical_frame(full, eye_outer, chin)
    full = s * (full - o) @ Q.T
    K = intrinsics(focal, size)
    # 4: every frame by PnP, warm-started from the previous frame (first: nearest keyframe)
    R0 = Rk[0] @ Q.T
    t0 = s * (Rk[0] @ o + tvs[0])
    import cv2

    guess = (cv2.Rodrigues(R0)[0], t0)
    Rall = np.empty((T, 3, 3))
    tall = np.empty((T, 3))
    X = full[rigid]
    start = int(keys[0])
    for order in (range(start, T), range(start - 1, -1, -1)):  # forward from the first keyframe, then back
        g = guess
        for i in order:
            rv, tv = solve_pnp(X, lm2d[i, rigid], K, g)
            Rall[i], tall[i] = cv2.Rodrigues(rv)[0], tv
            g = (rv, tv)
    Rall, tall = smooth_poses(Rall, tall, smooth_sigma)
    err = reprojection_errors(Rall, tall, X, lm2d[:, rigid].astype(np.float64), K)
    return HeadPose(R=Rall, t=tall, K=K, shape=full, reproj=err, keyframes=keys, ba_rms=ba_rms)
