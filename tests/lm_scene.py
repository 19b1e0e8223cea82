"""Landmarks for the tiny Gaussian scene (tests/gs_scene.py), for the landmark-conditioned stages.

An iBUG-68 layout on the front of the scene's head ball: the mouth points (48-67) sit on a
ring around the dark mouth blob and move with it (the scene's mouth signal), every other
point is still. They are written into the run's track.h5 the way track does (2D projections
through each frame's camera, the canonical shape, the rigid indices), so the stages read them
through canonical_landmarks() like on a real clip.
"""
from __future__ import annotations

import h5py
import numpy as np

from talkctl import h5files

RIGID = np.array([27, 28, 29, 30, 36, 39, 42, 45, 31, 35, 17, 26])
MOUTH = np.arange(48, 68)


def neutral_68(mouth_y: float = 0.2) -> np.ndarray:
    """(68,3) points on the front of the head ball (z<0 faces the camera)."""
    p = np.zeros((68, 3), np.float32)

    def on_ball(x, y, r=0.6):
        return [x, y, -np.sqrt(max(r * r - x * x - y * y, 0.01))]

    for i in range(17):  # jaw line, ear to ear through the chin
        a = np.pi * (0.1 + 0.8 * i / 16)
        p[i] = on_ball(-0.5 * np.cos(a), 0.05 + 0.45 * np.sin(a))
    for i in range(10):  # eyebrows
        p[17 + i] = on_ball(-0.4 + 0.8 * i / 9 + (0.08 if i >= 5 else -0.08) * 0, -0.3)
    for i in range(9):  # nose
        p[27 + i] = on_ball(0.0 if i < 4 else -0.1 + 0.05 * (i - 4), -0.2 + 0.07 * i if i < 4 else 0.08)
    for e, cx in ((36, -0.22), (42, 0.22)):  # eyes: 6 points each
        for j in range(6):
            a = 2 * np.pi * j / 6
            p[e + j] = on_ball(cx + 0.09 * np.cos(a), -0.15 + 0.03 * np.sin(a))
    for j in range(12):  # outer lips
        a = 2 * np.pi * j / 12
        p[48 + j] = on_ball(0.2 * np.cos(a), mouth_y + 0.11 * np.sin(a))
    for j in range(8):  # inner lips
        a = 2 * np.pi * j / 8
        p[60 + j] = on_ball(0.12 * np.cos(a), mouth_y + 0.06 * np.sin(a))
    return p


def scene_landmarks(sig: np.ndarray, mouth_amp: float = 0.25) -> np.ndarray:
    """(T,68,3) canonical landmarks: the mouth ring follows the blob (y = 0.2 + amp * sig)."""
    base = neutral_68()
    pts = np.repeat(base[None], len(sig), 0)
    pts[:, MOUTH, 1] += mouth_amp * np.asarray(sig, np.float32)[:, None]
    return pts


def project(points: np.ndarray, w2c: np.ndarray, K: np.ndarray) -> np.ndarray:
    cam = np.einsum("tij,tlj->tli", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    uv = cam @ K.T
    return (uv[..., :2] / uv[..., 2:3]).astype(np.float32)


def add_landmarks(run, sig: np.ndarray, moving: bool = True, mouth_amp: float = 0.25) -> np.ndarray:
    """Write landmarks2d/3d, canonical_shape and the 68-point attrs into run's track.h5.
    moving=False: every frame gets the same (mean) face. Returns the (T,68,3) canonical points."""
    pts = scene_landmarks(sig, mouth_amp)
    if not moving:
        pts = np.repeat(pts.mean(0, keepdims=True), len(pts), 0)
    with h5py.File(run.path / "track.h5", "a") as f:
        w2c, K = f["world_to_cam"][()], f["intrinsics"][()]
        for k in ("landmarks2d", "landmarks3d", "canonical_shape"):
            if k in f:
                del f[k]
        f["landmarks2d"] = project(pts, w2c, K)
        f["canonical_shape"] = pts.mean(0)
        f.attrs.update({"n_landmarks": 68, "rigid_indices": RIGID, "landmark_scheme": "ibug-68"})
        h5files.stamp(f)  # an edit on purpose: its checksums follow it
    return pts
