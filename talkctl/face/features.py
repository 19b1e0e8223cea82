"""Per-frame face measurements from 2D landmarks: blink, mouth opening, lip and face boxes,
and the handling of frames where no face was found (gaps)."""
from __future__ import annotations

import numpy as np

from talkctl.face.landmarks import Scheme


def polygon_area(pts: np.ndarray) -> np.ndarray:
    """Shoelace area of polygons (..., N, 2) -> (...)."""
    x, y = pts[..., 0], pts[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(-1))


def eye_area(lm2d: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Area of both open eyes relative to the face area (as RAD-NeRF's blink feature), (T,)."""
    eyes = polygon_area(lm2d[:, list(scheme.right_eye)]) + polygon_area(lm2d[:, list(scheme.left_eye)])
    face = polygon_area(lm2d[:, list(scheme.face_oval)])
    return (eyes / np.maximum(face, 1e-6)).astype(np.float32)


CLOSED_EYE_AREA = 0.1  # closed eyes keep ~10 % of the open area in the contours (measured on real clips)


def blink_from_area(area: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Eye closedness normalised per subject: 0 = eyes as open as usual, 1 = closed.

    open = 90th percentile of the subject's eye area (eyes are open most of the time);
    closed = CLOSED_EYE_AREA x open. A fixed closed level (rather than the clip's minimum)
    keeps a clip without blinks from stretching landmark noise into full blinks.
    """
    ref = area[valid] if valid.any() else area
    hi = max(float(np.percentile(ref, 90)), 1e-6)
    return np.clip((hi - area) / ((1.0 - CLOSED_EYE_AREA) * hi), 0.0, 1.0).astype(np.float32)


def mouth_open(lm2d: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Inner-lip gap divided by face height (face top to chin), (T,)."""
    gap = np.linalg.norm(lm2d[:, scheme.lip_bottom] - lm2d[:, scheme.lip_top], axis=-1)
    height = np.linalg.norm(lm2d[:, scheme.chin] - lm2d[:, scheme.face_top], axis=-1)
    return (gap / np.maximum(height, 1e-6)).astype(np.float32)


def lip_boxes(lm2d: np.ndarray, scheme: Scheme, size: int, pad: float = 0.3) -> np.ndarray:
    """Square boxes around the outer lips, padded by `pad` x their extent, in the image: (T, 4)
    int32 x0, y0, x1, y1 (x1, y1 exclusive)."""
    lips = lm2d[:, list(scheme.outer_lips)]
    lo, hi = lips.min(1), lips.max(1)
    centre = (lo + hi) / 2.0
    side = (hi - lo).max(1) * (1.0 + 2.0 * pad)
    side = np.clip(side, 8.0, float(size))
    x0 = np.clip(centre[:, 0] - side / 2.0, 0, size - side)
    y0 = np.clip(centre[:, 1] - side / 2.0, 0, size - side)
    box = np.stack([x0, y0, x0 + side, y0 + side], 1)
    return np.round(box).clip(0, size).astype(np.int32)


def face_boxes(lm2d: np.ndarray, size: int) -> np.ndarray:
    """Bounding boxes of all landmarks, clipped to the image: (T, 4) int32 x0, y0, x1, y1."""
    lo, hi = lm2d.min(1), lm2d.max(1)
    return np.concatenate([np.floor(lo), np.ceil(hi)], 1).clip(0, size).astype(np.int32)


# ---- gaps ---------------------------------------------------------------------------------
def missing_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges where valid is False."""
    v = np.concatenate([[True], np.asarray(valid, bool), [True]])
    d = np.diff(v.astype(np.int8))
    starts, ends = np.flatnonzero(d == -1), np.flatnonzero(d == 1)
    return list(zip(starts.tolist(), ends.tolist()))


def describe_runs(runs: list[tuple[int, int]], fps: float, limit: int = 4) -> str:
    parts = [f"{a / fps:.2f}-{b / fps:.2f} s" for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"and {len(runs) - limit} more")
    return ", ".join(parts)


def fill_gaps(values: np.ndarray, valid: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Linear interpolation over time of frames that are not valid (nearest value at the ends);
    in place when `out` is `values` (float32)."""
    if out is None:
        out = np.array(values, dtype=np.float32, copy=True)
    good = np.flatnonzero(valid)
    bad = np.flatnonzero(~np.asarray(valid, bool))
    if len(bad) == 0 or len(good) == 0:
        return out
    pos = np.searchsorted(good, bad)
    left = good[np.clip(pos - 1, 0, len(good) - 1)]
    right = good[np.clip(pos, 0, len(good) - 1)]
    w = np.where(right > left, (bad - left) / np.maximum(right - left, 1), 0.0)
    w = w.reshape(-1, *([1] * (out.ndim - 1))).astype(np.float32)
    out[bad] = out[left] * (1 - w) + out[right] * w
    return out
