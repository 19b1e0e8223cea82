"""The synthetic face: scikit-image's `astronaut` photo with mediapipe landmarks, a rig that
opens the mouth and closes the eyelids by warping the photo, and smooth seeded head motion and blinks.

Nothing here imports mediapipe at module import time: it is loaded lazily, once per process.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from talkctl.errors import MissingToolError, StageError
from talkctl.native_log import native_stderr

FACE_HEIGHT_M = 0.18      # forehead (landmark 10) to chin (152) of an adult face, metres
REST_DEPTH_M = 0.6        # face plane distance from the camera at rest
PIVOT_BEHIND_M = 0.10     # the head rotates about a point this far behind the face plane
# mediapipe face-mesh contour indices used to place the mouth and eyelid deformations
_UPPER_INNER_LIP = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
_LOWER_INNER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
_EYES = (  # (upper lid, lower lid), corner to corner
    ([33, 246, 161, 160, 159, 158, 157, 173, 133], [33, 7, 163, 144, 145, 153, 154, 155, 133]),
    ([362, 398, 384, 385, 386, 387, 388, 466, 263], [362, 382, 381, 380, 374, 373, 390, 249, 263]),
)
# --------------------------------------------------------------------------- voices / audio


def _smooth_signal(ts: np.ndarray, amplitude: float, rng: np.random.Generator,
                   freqs=(0.1, 0.5), terms: int = 3) -> np.ndarray:
    """Sum of sinusoids with random frequencies and phases, zero-mean over the clip and
    scaled so its largest excursion is exactly `amplitude`."""
    f = rng.uniform(*freqs, size=terms)
    ph = rng.uniform(0, 2 * np.pi, size=terms)
    w = rng.uniform(0.5, 1.0, size=terms)
    x = (w[None] * np.sin(2 * np.pi * f[None] * ts[:, None] + ph[None])).sum(1)
    x = x - x.mean()
    return amplitude * x / max(np.abs(x).max(), 1e-9)


def blink_curve(ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Eye closedness in [0, 1]: a 0.2-0.3 s blink every 2-5 s (fast close, slower open)."""
    b = np.zeros_like(ts)
    t = rng.uniform(0.6, 2.0)
    while t < ts[-1] + 1.0:
        d = rng.uniform(0.2, 0.3)
        close = 0.4 * d
        tau = ts - t
        up = (tau >= 0) & (tau < close)
        down = (tau >= close) & (tau < d)
        b[up] = np.sin(0.5 * np.pi * tau[up] / close) ** 2
        b[down] = np.cos(0.5 * np.pi * (tau[down] - close) / (d - close)) ** 2
        t += rng.uniform(2.0, 5.0)
    return np.clip(b, 0.0, 1.0)


def euler_to_matrix(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """R = Rz(roll) @ Ry(yaw) @ Rx(pitch), angles in radians, (T,) -> (T,3,3)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return rz @ ry @ rx


# --------------------------------------------------------------------------- the photo


@dataclass(frozen=True)
class _Photo:
    rgb: np.ndarray          # (H,W,3) uint8
    alpha: np.ndarray        # (H,W) float32 person mask
    landmarks: np.ndarray    # (478,2) photo pixels
    face_px: float           # forehead-to-chin height, photo pixels
    face_center: np.ndarray  # (2,)


@functools.lru_cache(maxsize=1)
def _photo() -> _Photo:
    """The astronaut photo, its face-mesh landmarks and a person mask (once per process)."""
    from skimage import data
    try:
        import mediapipe as mp
    except ImportError as e:  # pragma: no cover - mediapipe is a hard dependency
        raise MissingToolError(f"mediapipe is not importable ({e}); "
                               "install it with: pip install mediapipe==0.10.21") from e
    import cv2

    rgb = np.ascontiguousarray(data.astronaut()[..., :3])
    h, w = rgb.shape[:2]
    with native_stderr():  # the graphs' TFLite/absl start-up warnings
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                             refine_landmarks=True) as fm:
            res = fm.process(rgb)
        with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as ss:
            m = ss.process(rgb).segmentation_mask.astype(np.float32)
    if not res.multi_face_landmarks:
        raise StageError("mediapipe found no face in the astronaut photo; "
                         "check the mediapipe installation (0.10.21 expected)")
    lm = np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])
    # sharpen the soft mask, and drop the light grey wall that rims the chin and neck
    # (bright, unsaturated pixels near the mask edge), so no photo background shows
    alpha = np.clip((m - 0.5) / 0.3, 0.0, 1.0)
    px = rgb.astype(np.int16)
    wall = (px.max(-1) - px.min(-1) < 30) & (px.mean(-1) > 160)
    alpha[wall & (cv2.erode(alpha, np.ones((9, 9), np.uint8)) < 0.5)] = 0.0
    alpha = cv2.erode(alpha, np.ones((3, 3), np.uint8))
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.8)
    face_px = float(np.linalg.norm(lm[152] - lm[10]))
    centre = 0.5 * (lm[10] + lm[152])
    return _Photo(rgb, alpha.astype(np.float32), lm.astype(np.float32), face_px, centre)


def _contour(lm: np.ndarray, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    p = lm[idx]
    order = np.argsort(p[:, 0], kind="stable")
    xs, ys = p[order, 0], p[order, 1]
    keep = np.concatenate([[True], np.diff(xs) > 1e-3])
    return xs[keep], ys[keep]


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.minimum(np.maximum((x - e0) * (1.0 / (e1 - e0)), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


class _FaceRig:
    """Backward maps (output canonical photo coords -> photo coords to sample) that open the
    mouth and close the eyelids. Photo pixel units throughout."""

    def __init__(self, photo: _Photo, jaw_drop: float):
        lm = photo.landmarks
        fp = photo.face_px
        ux, uy = _contour(lm, _UPPER_INNER_LIP)
        lx, ly = _contour(lm, _LOWER_INNER_LIP)
        self.mx0, self.mx1 = float(lm[78, 0]), float(lm[308, 0])
        xs = np.linspace(self.mx0, self.mx1, 64)
        # split between upper and lower teeth: the lower block moves with the jaw
        self.split_x = xs
        self.split_y = np.interp(xs, ux, uy) + 0.75 * (np.interp(xs, lx, ly) - np.interp(xs, ux, uy))
        self.mouth_cx = 0.5 * (self.mx0 + self.mx1)
        self.jaw_half = 0.75 * (self.mx1 - self.mx0)    # jaw motion spreads past the corners
        self.drop = jaw_drop * fp                        # jaw drop at opening 1, photo px
        self.ramp = max(2.6 * self.drop, 0.12 * fp)      # skin stretch beside the mouth
        chin = float(lm[152, 1]) - float(np.interp(self.mouth_cx, xs, self.split_y))
        self.fade0, self.fade1 = chin, chin + 0.45 * fp  # jaw motion fades out down the neck
        self.box = (self.mouth_cx - self.jaw_half - 2, float(self.split_y.min()) - 2,
                    self.mouth_cx + self.jaw_half + 2, self.split_y.max() + self.fade1 + self.drop + 2)
        self.feather = 0.6
        self.eyes = []
        for up, lo in _EYES:
            ex, ey_u = _contour(lm, up)
            ex2, ey_l = _contour(lm, lo)
            gx = np.linspace(ex[0], ex[-1], 48)
            top = np.interp(gx, ex, ey_u)
            gap = np.maximum(np.interp(gx, ex2, ey_l) - top, 0.0)
            gap[[0, -1]] = 0.0
            lid = max(1.6 * gap.max(), 0.05 * fp)       # skin above the lid that slides down
            self.eyes.append((gx, top, gap, lid))

    def warp(self, qx: np.ndarray, qy: np.ndarray, opening: float, blink: float):
        """Returns sample coords (sx, sy) and the mouth interior to paint, as (flat pixel
        indices, alpha, depth in [0, 1]) or None.

        Mouth, per column x, with u the distance below the teeth split line: the lower
        block drops by G(x) (a lens-shaped gap, dark interior, 0 <= u < G); below it the
        offset G fades into the jaw drop M(x) over `ramp` and then out down the neck, so
        the map is continuous and monotone in y (no folds, no tears). Eyes: the lid skin
        above the upper lid is stretched down over the eye by blink x eye opening."""
        sy = qy.copy()
        inner = None
        if opening > 1e-4:
            x0, y0, x1, y1 = self.box
            sel = np.nonzero((qx > x0) & (qx < x1) & (qy > y0) & (qy < y1))
            if sel[0].size:
                x, y = qx[sel], qy[sel]
                y_split = np.interp(x, self.split_x, self.split_y)
                u = y - y_split
                dx = np.clip(np.abs(x - self.mouth_cx) / self.jaw_half, 0.0, 1.0)
                jaw = opening * self.drop * np.cos(0.5 * np.pi * dx) ** 2        # M(x)
                span = np.clip((x - self.mx0) / (self.mx1 - self.mx0), 0.0, 1.0)
                corner = np.maximum(np.sin(np.pi * span), 0.0) ** 0.7              # c(x)
                gap = jaw * corner                                              # G(x)
                v = u - gap
                fade = 1.0 - _smoothstep(self.fade0, self.fade1, v)
                ramp = _smoothstep(0.0, self.ramp, v)
                shift = fade * (gap + (jaw - gap) * ramp)
                below = v >= 0
                new = np.where(below, y - shift, np.where(u >= 0, y_split, y))
                sy[sel] = new
                a = np.clip(np.minimum(u, gap - u) / self.feather + 0.5, 0.0, 1.0)
                a = np.where(gap > 0.3, a * np.clip(gap / 1.5, 0, 1), 0.0)
                if np.any(a > 0):
                    inner = (sel, a.astype(np.float32), np.clip(u / np.maximum(gap, 1e-3), 0, 1))
        if blink > 1e-4:
            for gx, top, gap, lid in self.eyes:
                sel = np.nonzero((qx > gx[0]) & (qx < gx[-1]) & (qy > top.min() - lid - 1)
                                 & (qy < top.max() + gap.max() + 1))
                if not sel[0].size:
                    continue
                x, y = qx[sel], sy[sel]
                t = np.interp(x, gx, top)
                g = np.interp(x, gx, gap)
                lid_line = t + blink * g
                start = t - lid
                # the lid skin [start, t] is stretched down over [start, lid_line]
                on_lid = (y > start) & (y < lid_line)
                scale = lid / np.maximum(lid_line - start, 1e-6)
                sy[sel] = np.where(on_lid, start + (y - start) * scale, y)
        return qx, sy, inner


# --------------------------------------------------------------------------- rendering
