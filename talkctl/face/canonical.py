"""Per-frame face landmarks in the canonical, pose-free head space of track.h5.

track.h5 holds each frame's landmarks with the head pose still in them (landmarks3d: x, y in
crop pixels, z the backend's depth in the same scale) and one canonical face shape in the
canonical head space (see headpose.py: outer eye corners 0.65 apart, x right-to-left eye,
y towards the chin). Removing the pose of a frame = the similarity transform (scale,
rotation, translation) that best maps the frame's *rigid* points (nose bridge, eye corners,
forehead, temples: points that speech does not move) onto the canonical shape's. Applied
to all points it leaves only what the face itself did: mouth, jaw, eyelids.

The other way ("lift-2d", the default when the track has cameras): each 2D landmark is put
at the depth the posed canonical shape has there (world_to_cam, intrinsics) and taken back to
head space. It is consistent with the perspective cameras the Gaussians are rendered with and
needs no depth from the backend; its only approximation is the depth of moving points (a
dropping jaw keeps the neutral depth). On french_50s (mediapipe) it leaves the rigid points
steadier (mean deviation 0.6 % vs 1.0 % of the eye distance) and less head pose in the mouth
offsets (R^2 of a linear fit on the pose 0.23 vs 0.34) than Procrustes on landmarks3d.

Public API (also used by the landmark-conditioned deformation):
    lm = read_canonical_landmarks(run)       # a run's track.h5 (ArtifactError when it has no landmarks)
    lm = canonical_landmarks(track)          # track: artifacts.Track, or a dict of arrays + attrs
    lm.points (T,L,3)  lm.valid (T,)  lm.rigid  lm.n  lm.rigid_rms (T,)
    neutral = neutral_shape(lm.points, lm.valid, frames)     # the subject's mean face (L,3)
    idx = moving_indices(lm.n, rigid=lm.rigid)               # mouth + jaw + eyelids
    off = lm.points[:, idx] - neutral[idx]                   # offsets the a2l model predicts
    mouth_opening(points, n) (T,)   interocular(points, n) (T,) or ()
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkctl import artifacts
from talkctl.errors import ArtifactError

# ---- which points move with speech ------------------------------------------------
# MediaPipe face mesh (478 = 468 + 10 iris). Lips: FACEMESH_LIPS (outer + inner contours).
MP_LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
           267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
# Lower face oval (ear to ear through the chin) and the mesh between the lower lip and the chin.
MP_JAW = (93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323,
          18, 200, 199, 175, 57, 287, 43, 273, 106, 335, 182, 406, 83, 313)
# Eye contours (upper and lower lids); corners are rigid and drop out via `rigid`.
MP_EYES = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
           263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)

# iBUG 68 (face-alignment).
IBUG_LIPS = tuple(range(48, 68))
IBUG_JAW = tuple(range(0, 17))
IBUG_EYES = tuple(range(36, 48))

PARTS: dict[int, dict[str, tuple[int, ...]]] = {
    478: {"mouth": MP_LIPS, "jaw": MP_JAW, "eyes": MP_EYES},
    468: {"mouth": MP_LIPS, "jaw": MP_JAW, "eyes": MP_EYES},
    68: {"mouth": IBUG_LIPS, "jaw": IBUG_JAW, "eyes": IBUG_EYES},
}
# (upper inner lip middle, lower inner lip middle), (outer eye corner right, left)
LIP_GAP = {478: (13, 14), 468: (13, 14), 68: (62, 66)}
EYE_CORNERS = {478: (33, 263), 468: (33, 263), 68: (36, 45)}


def parts_for(n_landmarks: int) -> dict[str, tuple[int, ...]]:
    try:
        return PARTS[int(n_landmarks)]
    except KeyError:
        raise ValueError(f"no landmark parts known for a {n_landmarks}-point layout "
                         f"(known: {sorted(PARTS)})") from None


def moving_indices(n_landmarks: int, parts=("mouth", "jaw", "eyes"), rigid=()) -> np.ndarray:
    """Sorted unique indices of the chosen parts, without the rigid (pose) points."""
    table = parts_for(n_landmarks)
    unknown = [p for p in parts if p not in table]
    if unknown:
        raise ValueError(f"unknown landmark parts {unknown}; choose from {sorted(table)}")
    idx = set()
    for p in parts:
        idx.update(table[p])
    idx -= {int(i) for i in rigid}
    return np.array(sorted(idx), dtype=np.int64)


def part_positions(indices: np.ndarray, n_landmarks: int, part: str) -> np.ndarray:
    """Positions within `indices` of the points that belong to `part` (e.g. the mouth columns)."""
    want = set(parts_for(n_landmarks)[part])
    return np.array([k for k, i in enumerate(indices) if int(i) in want], dtype=np.int64)


# ---- similarity alignment ---------------------------------------------------------
def similarity_batch(src: np.ndarray, dst: np.ndarray, scale: bool = True):
    """Per-frame (s, R, t) minimising |s R src_t + t - dst|^2 (Umeyama).

    src (T,K,3), dst (K,3) -> s (T,), R (T,3,3), t (T,3). Reflections are excluded."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(1), dst.mean(0)
    a, b = src - ms[:, None], dst - md
    cov = np.einsum("kj,tki->tji", b, a)  # b^T a per frame: (T,3,3)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones((len(src), 3))
    d[:, -1] = np.sign(np.linalg.det(u @ vt))
    d[d == 0] = 1.0
    R = u @ (d[:, :, None] * vt)
    if scale:
        s = (sig * d).sum(1) / np.maximum((a ** 2).sum((1, 2)), 1e-12)
    else:
        s = np.ones(len(src))
    t = md - s[:, None] * np.einsum("tij,tj->ti", R, ms)
    return s, R, t


def align_to_canonical(points: np.ndarray, canonical: np.ndarray, rigid, scale: bool = True):
    """Take each frame's (T,L,3) points into canonical space by the similarity that fits its
    rigid points to the canonical shape. Returns (aligned (T,L,3) float32, rigid rms (T,))."""
    rigid = np.asarray(rigid, dtype=np.int64)
    s, R, t = similarity_batch(points[:, rigid], canonical[rigid], scale=scale)
    out = s[:, None, None] * np.einsum("tij,tlj->tli", R, np.asarray(points, np.float64)) + t[:, None]
    rms = np.sqrt(((out[:, rigid] - canonical[rigid]) ** 2).sum(-1).mean(-1))
    return out.astype(np.float32), rms.astype(np.float32)


def lift_2d(lm2d: np.ndarray, world_to_cam: np.ndarray, K: np.ndarray, canonical: np.ndarray) -> np.ndarray:
    """2D landmarks (T,L,2) -> head space (T,L,3): each point at the depth of the posed canonical
    point, back-projected through K and the inverse head pose."""
    R, t = world_to_cam[:, :3, :3].astype(np.float64), world_to_cam[:, :3, 3].astype(np.float64)
    cam = np.einsum("tij,lj->tli", R, canonical) + t[:, None]
    z = cam[..., 2:3]
    uv1 = np.concatenate([lm2d, np.ones(lm2d.shape[:2] + (1,))], -1)
    rays = uv1 @ np.linalg.inv(K).T
    X_cam = rays * z
    return np.einsum("tji,tlj->tli", R, X_cam - t[:, None])  # R^T (X - t)


# ---- from track.h5 ----------------------------------------------------------------
@dataclass
class CanonicalLandmarks:
    points: np.ndarray      # (T,L,3) float32 landmarks in canonical head space
    valid: np.ndarray       # (T,) bool: face found in that frame (else interpolated)
    rigid: np.ndarray       # rigid (pose) indices used for the alignment
    n: int                  # landmarks per frame (478 mediapipe, 68 iBUG)
    rigid_rms: np.ndarray   # (T,) rms residual of the rigid points after alignment (canonical units)
    canonical_shape: np.ndarray  # (L,3) track's canonical face shape
    method: str             # "procrustes" (landmarks3d) or "lift-2d"


# what canonical_landmarks reads of track.h5
TRACK_FIELDS = ("landmarks2d", "landmarks3d", "valid", "world_to_cam", "intrinsics", "canonical_shape")


def _get(track, key):
    """An array of a Track or a dict (a dataset of an open h5py.File); None when absent."""
    if key not in track:
        return None
    v = track[key]
    return v if isinstance(v, np.ndarray) else np.asarray(v[()])


def canonical_landmarks(track, method: str = "auto") -> CanonicalLandmarks:
    """Canonical (pose-free) landmarks of every frame of a track.h5 (artifacts.Track, or a dict with
    the same keys and `attrs`)."""
    attrs = track["attrs"] if isinstance(track, dict) else track.attrs
    canonical = _get(track, "canonical_shape")
    if canonical is None:
        raise KeyError("track has no canonical_shape (no landmarks were tracked)")
    canonical = canonical.astype(np.float64)
    n = int(attrs.get("n_landmarks", canonical.shape[0]))
    rigid = np.asarray(attrs["rigid_indices"], dtype=np.int64)
    lm3d = _get(track, "landmarks3d")
    posed = all(k in track for k in ("landmarks2d", "world_to_cam", "intrinsics"))
    if method == "auto":
        # lift-2d when the track has a camera: on real clips it leaves less head pose in the
        # offsets than aligning the backend's own (weak-perspective) 3D estimate
        method = "lift-2d" if posed else "procrustes"
    if method == "procrustes":
        if lm3d is None:
            raise ValueError("track has no landmarks3d; use method='lift-2d'")
        pts, rms = align_to_canonical(lm3d, canonical, rigid)
    elif method == "lift-2d":
        lifted = lift_2d(_get(track, "landmarks2d").astype(np.float64), _get(track, "world_to_cam"),
                         _get(track, "intrinsics").astype(np.float64), canonical)
        pts = lifted.astype(np.float32)
        rms = np.sqrt(((lifted[:, rigid] - canonical[rigid]) ** 2).sum(-1).mean(-1)).astype(np.float32)
    else:
        raise ValueError(f"unknown method {method!r}: auto, procrustes or lift-2d")
    valid = _get(track, "valid")
    valid = np.ones(len(pts), bool) if valid is None else valid.astype(bool)
    return CanonicalLandmarks(pts, valid, rigid, n, rms, canonical.astype(np.float32), method)


def read_canonical_landmarks(run, method: str = "auto", use: str = "") -> CanonicalLandmarks:
    """canonical_landmarks of a run's track.h5; ArtifactError (naming `use`, what needs them) when
    the track has no usable landmarks."""
    track = artifacts.read_track(run, TRACK_FIELDS)
    try:
        return canonical_landmarks(track, method=method)
    except (KeyError, ValueError) as exc:
        why = f" for {use}" if use else ""
        raise ArtifactError(f"{run}/track.h5 has no usable landmarks{why} ({exc}): "
                            f"rerun `talkctl track --force --run {run}`") from None


def neutral_shape(points: np.ndarray, valid: np.ndarray | None = None, frames=None) -> np.ndarray:
    """The subject's mean face (L,3) over `frames` (default: all), valid frames only."""
    sel = np.arange(len(points)) if frames is None else np.asarray(frames)
    if valid is not None:
        good = sel[np.asarray(valid)[sel]]
        sel = good if len(good) else sel
    return points[sel].mean(0).astype(np.float32)


def mouth_opening(points: np.ndarray, n_landmarks: int) -> np.ndarray:
    """Inner-lip gap per frame (T,) in the points' units (canonical: eye corners 0.65 apart)."""
    a, b = LIP_GAP[int(n_landmarks)]
    return np.linalg.norm(points[..., b, :] - points[..., a, :], axis=-1)


def interocular(points: np.ndarray, n_landmarks: int) -> np.ndarray:
    i, j = EYE_CORNERS[int(n_landmarks)]
    return np.linalg.norm(points[..., j, :] - points[..., i, :], axis=-1)
