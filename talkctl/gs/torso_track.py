"""The torso's own motion in the fixed camera: a 2D shift per frame.

The body sways a few pixels that the head pose does not predict (on french_50s the torso's
tracked shift has a standard deviation of 3 px at 256 px; a still image of the torso moved by it
matches the held-out frames better than the pose-conditioned torso did: 22.9 against 21.5 dB).
So the torso is tracked like the head: per frame, the shift of its region (parse's torso label,
grey levels) against the median torso of sampled training frames (stabilised by a first pass),
by ECC image alignment (translation) inside the torso mask; failures (hands in front, a torso
without texture) are filled from neighbouring frames, then a 5-frame median smooths it. The torso Gaussians are fitted in that stabilised frame and drawn at
each frame's shift by moving the camera's principal point (an exact translation of the render).
Shifts are stored as fractions of the image side (independent of the resolution).

Render and eval draw the torso where the source frame of each pose had it (head.poses' source
frames: the training clip's ping-pong, the held-out frames); poses from elsewhere get no shift.
"""
from __future__ import annotations

import cv2
import numpy as np

TORSO = 3
_ECC = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)


def _grey_and_mask(frame: np.ndarray, labels: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """A frame (S,S,3) uint8 and its parse labels (S,S) -> grey (res,res) float32, torso mask uint8."""
    grey = cv2.cvtColor(cv2.resize(np.asarray(frame), (res, res), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    torso = cv2.resize((np.asarray(labels) == TORSO).astype(np.uint8), (res, res), interpolation=cv2.INTER_NEAREST)
    return grey.astype(np.float32) / 255.0, cv2.erode(torso, np.ones((3, 3), np.uint8))


def _shift(ref: np.ndarray, grey: np.ndarray, mask: np.ndarray, min_corr: float, max_px: float) -> tuple[float, float]:
    """(dx, dy) moving `ref` onto the torso pixels of `grey` (ECC, translation), NaN when it fails."""
    if mask.sum() < 64:
        return np.nan, np.nan
    try:
        cc, w = cv2.findTransformECC(ref, grey, np.eye(2, 3, dtype=np.float32), cv2.MOTION_TRANSLATION, _ECC, mask, 3)
    except cv2.error:  # no convergence (a torso without texture, hands in front)
        return np.nan, np.nan
    if cc < min_corr or max(abs(w[0, 2]), abs(w[1, 2])) > max_px:
        return np.nan, np.nan
    return float(w[0, 2]), float(w[1, 2])


def track_torso(frames, labels, train_idx: np.ndarray, res: int, n_ref: int = 100, chunk: int = 16,
                min_corr: float = 0.6, max_shift: float = 0.08) -> np.ndarray:
    """(T,2) float32 torso shift per frame, as fractions of the image side, tracked at res px.
    frames (T,S,S,3) uint8 and labels (T,S,S) uint8: frames.h5's and parse.h5's datasets (or arrays).
    The reference is the median of sampled training frames, stabilised by a first pass."""
    T = int(frames.shape[0])

    def load(idx):
        return [_grey_and_mask(frames[int(i)], labels[int(i)], res) for i in idx]

    ref_idx = train_idx[np.linspace(0, len(train_idx) - 1, min(n_ref, len(train_idx))).round().astype(int)]
    samples = load(ref_idx)
    R = int(res)
    max_px = max_shift * R
    ref = np.median(np.stack([g for g, _ in samples]), 0).astype(np.float32)
    first = np.array([_shift(ref, g, m, min_corr, max_px) for g, m in samples])
    first = _clean(first)
    moved = [cv2.warpAffine(g, np.float32([[1, 0, -dx], [0, 1, -dy]]), (R, R), borderMode=cv2.BORDER_REPLICATE)
             for (g, _), (dx, dy) in zip(samples, first)]
    ref = np.median(np.stack(moved), 0).astype(np.float32)  # sharp: the samples stabilised
    shift = np.full((T, 2), np.nan, np.float64)
    for c in range(0, T, chunk):  # a slice at a time: one HDF5 read per frame chunk
        fr, lab = frames[c:c + chunk], labels[c:c + chunk]
        for k in range(len(fr)):
            g, m = _grey_and_mask(fr[k], lab[k], R)
            shift[c + k] = _shift(ref, g, m, min_corr, max_px)
    shift = _clean(shift)
    return (shift - np.median(shift, 0)) / float(R)  # relative to the torso's median position


def _clean(shift: np.ndarray) -> np.ndarray:
    """Fill missing frames from their neighbours (0 when none was tracked), then a 5-frame median."""
    out = np.zeros_like(shift)
    t = np.arange(len(shift))
    for k in range(2):
        ok = np.isfinite(shift[:, k])
        if ok.any():
            out[:, k] = np.interp(t, t[ok], shift[ok, k])
    pad = np.pad(out, ((2, 2), (0, 0)), mode="edge")
    windows = np.stack([pad[i:i + len(out)] for i in range(5)])
    return np.median(windows, 0).astype(np.float32)


def shifted_intrinsics(K, shift_px) -> np.ndarray:
    """(C,3,3) cameras drawing the render moved by shift_px (C,2) pixels: the principal point moved."""
    K = np.asarray(K, np.float32)
    out = np.repeat(K[None], len(shift_px), 0)
    out[:, 0, 2] += np.asarray(shift_px, np.float32)[:, 0]
    out[:, 1, 2] += np.asarray(shift_px, np.float32)[:, 1]
    return out
