"""A synthetic talking subject with known ground truth: the built-in demo clip and test fixture.

The face is scikit-image's `astronaut` photo treated as a textured plane in 3D. Each frame
the plane is rotated and translated (smooth, seeded) in front of a pinhole camera and
rendered by the exact homography; the person (cut out once with mediapipe selfie
segmentation) is composited over a fixed backdrop, so a background plate exists. The head
moves with the full pose; the torso follows with a damped pose, blended smoothly at the
neck. The mouth opens with a speech-like envelope (lower lip and jaw move down, a dark
mouth interior appears), the eyes blink, and synthesised speech whose loudness follows the
mouth opening is muxed in as AAC.

Truth file (`<name>_truth.npz`), T = number of frames, frame i shown at time i / fps:
  R (T,3,3), t (T,3)   head pose, world-to-camera (OpenCV axes: x right, y down, z forward).
                       World = the head's canonical frame: at rest R = I and the face plane
                       is fronto-parallel at depth `rest_depth`.
  torso_R, torso_t     the torso's world-to-camera pose in the same world frame (damped).
  K (3,3)              pinhole intrinsics, pixels, principal point at the image centre.
  tex_to_plane (3,3)   maps photo pixel (u, v, 1) to plane coordinates (X, Y, 1), metres;
  plane_z              the plane is Z = plane_z in world, so a photo pixel's world point is
                       (X, Y, plane_z) and the head homography is K [r1 r2 t + plane_z r3] A.
  euler_deg (T,3)      head (yaw about y, pitch about x, roll about z), R = Rz @ Ry @ Rx.
  opening (T,)         mouth opening in [0, 1] (1: lower lip/jaw down by `jaw_drop` x face height).
  blink (T,)           eye closedness in [0, 1] (1: eyelids fully closed).
  audio_rms (T,)       RMS of the audio in a 1/fps window centred on each frame's time.
  landmarks_tex (478,2) mediapipe face-mesh landmarks found on the still photo (photo pixels).
  landmarks_2d (T,478,2) those landmarks projected by the head homography (image pixels;
                       ignores the mouth and eyelid deformation).
  times (T,), fps, size, sample_rate, seed, face_height_px (rest face height in pixels).

Nothing here imports mediapipe at module import time: it is loaded lazily, once per process.
"""
from __future__ import annotations

import functools
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkctl.errors import MissingToolError, StageError, UsageError
from talkctl.media.ffmpeg import ffmpeg_exe, write_wav

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

@dataclass(frozen=True)
class Voice:
    """Source and vocal-tract settings of a synthetic speaker."""
    f0_range: tuple[float, float]     # pitch range, Hz
    formant_scale: float              # scales F1-F3 (shorter vocal tract: > 1)
    breathiness: float                # aspiration noise relative to the voiced source
    f2_range: tuple[float, float] = (900.0, 1900.0)
    ident: int = 0                    # mixed into the seed: voices never share an envelope


SUBJECT_VOICE = Voice(f0_range=(100.0, 160.0), formant_scale=1.0, breathiness=0.08)
UNSEEN_VOICE = Voice(f0_range=(165.0, 220.0), formant_scale=1.17, breathiness=0.15,
                     f2_range=(1100.0, 2300.0), ident=1)


@dataclass
class SyntheticAudio:
    samples: np.ndarray      # (N,) float32 in [-1, 1], mono
    sample_rate: int
    fps: int
    opening: np.ndarray      # (T,) mouth opening per video frame, in [0, 1]
    rms: np.ndarray          # (T,) audio RMS per video frame (window centred on i / fps)

    def write_wav(self, path: Path) -> Path:
        write_wav(path, self.samples, self.sample_rate)
        return Path(path)


def speech_envelope(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mouth-opening envelope o(t) in [0, 1] at `sample_rate`: phrases of syllable bursts
    (3-5 Hz) with varied peaks, separated by pauses where the mouth rests closed."""
    o = np.zeros(n, np.float64)
    dur = n / sample_rate
    t = rng.uniform(0.15, 0.4)
    while t < dur:
        phrase_end = t + rng.uniform(0.8, 2.5)
        rate = rng.uniform(3.0, 5.0)
        while t < min(phrase_end, dur):
            d = rng.uniform(0.8, 1.2) / rate
            span = 1.25 * d          # neighbouring syllables overlap: no full closure inside words
            i0 = int(t * sample_rate)
            i1 = min(n, int((t + span) * sample_rate))
            if i1 > i0:
                tau = (np.arange(i0, i1) / sample_rate - t) / span
                np.maximum(o[i0:i1], rng.uniform(0.45, 1.0) * np.sin(np.pi * tau) ** 2,
                           out=o[i0:i1])
            t += d
        t += rng.uniform(0.25, 0.8)
    return o


def _frame_windows(n_frames: int, fps: int, sample_rate: int, n: int):
    """Sample index ranges of a 1/fps window centred on each frame time i / fps."""
    half = sample_rate / fps / 2.0
    centres = np.arange(n_frames) * sample_rate / fps
    lo = np.clip(np.round(centres - half), 0, n).astype(int)
    hi = np.clip(np.round(centres + half), 0, n).astype(int)
    return lo, np.maximum(hi, lo + 1)


def per_frame_rms(samples: np.ndarray, n_frames: int, fps: int, sample_rate: int) -> np.ndarray:
    """RMS of `samples` in a 1/fps window centred on each video frame's time."""
    lo, hi = _frame_windows(n_frames, fps, sample_rate, len(samples))
    c = np.concatenate([[0.0], np.cumsum(np.asarray(samples, np.float64) ** 2)])
    hi = np.minimum(hi, len(samples))
    return np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1)).astype(np.float32)


def _resonate(x: np.ndarray, freqs: np.ndarray, bw: float, sample_rate: int, block: int):
    """Time-varying two-pole resonator with unit DC gain, by overlap-add: each block of
    input is convolved with the (truncated) impulse response of the resonator tuned to
    that block's frequency. Plain numpy: importing scipy.signal alone costs ~1 s."""
    r = np.exp(-np.pi * bw / sample_rate)
    length = int(np.ceil(np.log(1e-4) / np.log(r)))      # response decays to 1e-4
    n = np.arange(length)
    decay = r ** n
    y = np.zeros(len(x) + length + block)
    for b0 in range(0, len(x), block):
        theta = 2.0 * np.pi * freqs[b0] / sample_rate
        gain = 1.0 - 2.0 * r * np.cos(theta) + r * r
        h = gain * decay * np.sin((n + 1) * theta) / np.sin(theta)
        seg = np.convolve(x[b0:b0 + block], h)
        y[b0:b0 + len(seg)] += seg
    return y[:len(x)]


def _glottal_source(f0: np.ndarray, sample_rate: int) -> np.ndarray:
    """Rosenberg glottal pulses at pitch f0(t), differentiated for lip radiation."""
    phase = np.cumsum(f0 / sample_rate)
    p = phase - np.floor(phase)
    rise, fall = 0.4, 0.16
    g = np.where(p < rise, 0.5 * (1.0 - np.cos(np.pi * p / rise)), 0.0)
    in_fall = (p >= rise) & (p < rise + fall)
    g = np.where(in_fall, np.cos(0.5 * np.pi * (p - rise) / fall), g)
    return np.diff(g, prepend=0.0) * (sample_rate / 150.0)


def make_audio(seconds: float, sample_rate: int = 16000, seed: int = 0,
               opening: np.ndarray | None = None, *, voice: Voice = UNSEEN_VOICE,
               fps: int = 25) -> SyntheticAudio:
    """Speech-like audio whose loudness follows a mouth-opening envelope.

    opening: optional per-video-frame envelope (at `fps`, values in [0, 1]) to voice;
    by default a new seeded one is made. The default voice is the *unseen* speaker
    (higher pitch, shorter vocal tract) used as new driving audio; `make_subject` uses
    `SUBJECT_VOICE`.
    """
    if seconds <= 0 or sample_rate < 8000 or fps <= 0:
        raise UsageError("make_audio needs seconds > 0, sample_rate >= 8000 and fps > 0")
    rng = np.random.default_rng([seed, 1, voice.ident])
    n_frames = int(round(seconds * fps))
    n = int(round(n_frames * sample_rate / fps))
    ts = np.arange(n) / sample_rate
    if opening is None:
        o = speech_envelope(n, sample_rate, rng)
    else:
        opening = np.clip(np.asarray(opening, np.float64), 0.0, 1.0)
        o = np.interp(ts, np.arange(len(opening)) / fps, opening)

    # pitch: speaker base, slow intonation and per-phrase declination, kept in range
    lo, hi = voice.f0_range
    base = rng.uniform(lo + 0.3 * (hi - lo), lo + 0.6 * (hi - lo))
    f0 = base * (1.0 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.2, 0.4) * ts + rng.uniform(0, 6.3))
                 + 0.05 * np.sin(2 * np.pi * rng.uniform(1.0, 2.0) * ts + rng.uniform(0, 6.3)))
    f0 = np.clip(f0, lo, hi)

    src = _glottal_source(f0, sample_rate)
    src = src + voice.breathiness * rng.standard_normal(n)
    src *= o

    # formants: F1 opens with the jaw; F2 wanders per syllable-length step (vowel changes)
    k = voice.formant_scale
    f1 = k * (300.0 + 550.0 * o)
    steps = max(2, int(seconds * 4) + 2)
    f2_knots = rng.uniform(*voice.f2_range, size=steps)
    f2 = k * np.interp(ts, np.linspace(0, seconds, steps), f2_knots)
    f3 = np.full(n, k * 2600.0)
    block = max(1, sample_rate // 200)
    y = src
    for freqs, bw in ((f1, 90.0), (f2, 110.0), (f3, 160.0)):
        y = _resonate(y, freqs, bw, sample_rate, block)
    y = y + 1e-3 * rng.standard_normal(n)          # room noise floor in pauses
    y = (0.6 / max(np.abs(y).max(), 1e-9)) * y
    samples = y.astype(np.float32)

    # the per-frame opening averages o(t) over the same window as the RMS: lag 0
    lo_i, hi_i = _frame_windows(n_frames, fps, sample_rate, n)
    c = np.concatenate([[0.0], np.cumsum(o)])
    frame_open = ((c[hi_i] - c[lo_i]) / (hi_i - lo_i)).astype(np.float32)
    return SyntheticAudio(samples, sample_rate, fps, frame_open,
                          per_frame_rms(samples, n_frames, fps, sample_rate))


# --------------------------------------------------------------------------- motion

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
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                         refine_landmarks=True) as fm:
        res = fm.process(rgb)
    if not res.multi_face_landmarks:
        raise StageError("mediapipe found no face in the astronaut photo; "
                         "check the mediapipe installation (0.10.21 expected)")
    lm = np.array([[p.x * w, p.y * h] for p in res.multi_face_landmarks[0].landmark])
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as ss:
        m = ss.process(rgb).segmentation_mask.astype(np.float32)
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

@dataclass
class SyntheticSubject:
    video_path: Path
    truth_path: Path
    fps: int
    size: int
    sample_rate: int
    K: np.ndarray                 # (3,3)
    R: np.ndarray                 # (T,3,3) head world-to-camera rotation
    t: np.ndarray                 # (T,3)   head world-to-camera translation, metres
    opening: np.ndarray           # (T,)
    blink: np.ndarray             # (T,)
    audio_rms: np.ndarray         # (T,)
    torso_R: np.ndarray = field(repr=False, default=None)
    torso_t: np.ndarray = field(repr=False, default=None)
    landmarks_2d: np.ndarray = field(repr=False, default=None)

    @property
    def n_frames(self) -> int:
        return len(self.opening)

    @classmethod
    def load(cls, truth_path: Path) -> "SyntheticSubject":
        """Reads a truth file written by `make_subject` (the video is its sibling .mp4)."""
        truth_path = Path(truth_path)
        z = np.load(truth_path)
        name = truth_path.name[: -len("_truth.npz")]
        return cls(truth_path.with_name(name + ".mp4"), truth_path, int(z["fps"]),
                   int(z["size"]), int(z["sample_rate"]), z["K"], z["R"], z["t"],
                   z["opening"], z["blink"], z["audio_rms"], z["torso_R"], z["torso_t"],
                   z["landmarks_2d"])


def _backdrop(size: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed studio-like backdrop: soft vertical gradient, low-frequency mottling, vignette."""
    import cv2

    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    top = np.array([0.46, 0.52, 0.60])
    bottom = np.array([0.30, 0.35, 0.42])
    img = top + (bottom - top) * yy[..., None]
    # mottling mostly in brightness, a little in hue, like a painted cloth backdrop
    coarse = rng.standard_normal((7, 7, 3)).astype(np.float32)
    coarse = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    coarse = coarse.mean(-1, keepdims=True) + 0.25 * (coarse - coarse.mean(-1, keepdims=True))
    fine = cv2.resize(rng.standard_normal((40, 40)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC)
    img = img + 0.04 * coarse + 0.012 * fine[..., None]
    vign = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.45) ** 2)
    return np.clip(img * vign[..., None], 0, 1).astype(np.float32)


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 matrix by its adjugate (np.linalg.inv costs ~0.5 ms a call here)."""
    c = np.cross(m[1], m[2]), np.cross(m[2], m[0]), np.cross(m[0], m[1])
    adj = np.stack(c, axis=1)
    return adj / float(m[0] @ c[0])


def _plane_homography(K, R, t, tex_to_plane, plane_z):
    """Photo pixel -> image pixel homography of the plane Z = plane_z under pose (R, t)."""
    M = np.stack([R[:, 0], R[:, 1], t + plane_z * R[:, 2]], axis=1)
    return K @ M @ tex_to_plane


def make_subject(out_dir: Path, seconds: float = 8.0, size: int = 256, fps: int = 25,
                 seed: int = 0, sample_rate: int = 16000, out_name: str = "subject", *,
                 face_frac: float = 0.36, yaw_deg: float = 9.0, pitch_deg: float = 8.0,
                 roll_deg: float = 5.0, shift_m: float = 0.012, jaw_drop: float = 0.08,
                 torso_follow: float = 0.25, voice: Voice = SUBJECT_VOICE,
                 crf: int = 18) -> SyntheticSubject:
    """Renders the synthetic talking subject: `<out_name>.mp4` and `<out_name>_truth.npz`.

    face_frac: forehead-to-chin height as a fraction of the frame height at rest.
    yaw/pitch/roll_deg, shift_m: bounds of the head's rotation (degrees) and x/y
    translation (metres; z moves by twice as much). jaw_drop: lower-lip/jaw drop at
    opening 1, as a fraction of face height. torso_follow: fraction of the head's rotation
    (and 2x that of its translation) that the torso follows. crf: x264 quality.
    """
    import cv2

    if seconds <= 0 or size < 64 or size % 2 or fps <= 0:
        raise UsageError("make_subject needs seconds > 0, an even size >= 64 (yuv420p) "
                         "and fps > 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_frames = int(round(seconds * fps))
    ts = np.arange(n_frames) / fps

    photo = _photo()
    rig = _FaceRig(photo, jaw_drop)
    rng_motion = np.random.default_rng([seed, 2])
    rng_blink = np.random.default_rng([seed, 3])
    rng_back = np.random.default_rng([seed, 4])

    audio = make_audio(n_frames / fps, sample_rate, seed, voice=voice, fps=fps)

    # camera and plane: the photo's face centre sits `REST_DEPTH_M` in front of the camera
    s = FACE_HEIGHT_M / photo.face_px                      # metres per photo pixel
    f = face_frac * size * REST_DEPTH_M / FACE_HEIGHT_M
    K = np.array([[f, 0, size / 2.0], [0, f, size / 2.0], [0, 0, 1.0]])
    pu, pv = photo.face_center[0], photo.face_center[1] + 0.3 * photo.face_px  # pivot (jaw level)
    tex_to_plane = np.array([[s, 0, -pu * s], [0, s, -pv * s], [0, 0, 1.0]])
    plane_z = -PIVOT_BEHIND_M
    # at rest the face centre is at 40% of the frame height
    cy_img = 0.40 * size
    y_face = (photo.face_center[1] - pv) * s               # face centre's world Y
    z_rest = REST_DEPTH_M
    t_rest = np.array([0.0, (cy_img - size / 2.0) * z_rest / f - y_face, z_rest + PIVOT_BEHIND_M])

    yaw = np.deg2rad(_smooth_signal(ts, yaw_deg, rng_motion))
    pitch = np.deg2rad(_smooth_signal(ts, pitch_deg, rng_motion))
    roll = np.deg2rad(_smooth_signal(ts, roll_deg, rng_motion, freqs=(0.08, 0.35)))
    dt = np.stack([_smooth_signal(ts, shift_m, rng_motion), _smooth_signal(ts, shift_m, rng_motion),
                   _smooth_signal(ts, 2 * shift_m, rng_motion, freqs=(0.06, 0.3))], -1)
    R = euler_to_matrix(yaw, pitch, roll)
    t = t_rest[None] + dt
    # torso: damped copy of the head motion, rotating about the chest
    Rt = euler_to_matrix(torso_follow * yaw, 0.5 * torso_follow * pitch, torso_follow * roll)
    chest = np.array([0.0, (photo.face_center[1] + 1.4 * photo.face_px - pv) * s, plane_z])
    tt = t_rest[None] + 2 * torso_follow * dt + chest[None] - Rt @ chest
    blink = blink_curve(ts, rng_blink).astype(np.float32)
    opening = audio.opening

    # photo prefiltered to about one texel per output pixel (no aliasing at small sizes)
    k = f * s / z_rest
    tex = np.dstack([photo.rgb, np.round(photo.alpha * 255.0).astype(np.uint8)])
    tex_scale = 1.0
    if k < 0.9:
        tex_scale = k
        tex = cv2.resize(tex, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_CUBIC if k > 1.2 else cv2.INTER_LINEAR
    backdrop = _backdrop(size, rng_back)

    # head/torso blend weight: an ellipse around the head and hair, fading out at the neck
    hc = photo.face_center + np.array([0.0, -0.1 * photo.face_px])
    hr = np.array([0.8, 1.0]) * photo.face_px

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pix = np.stack([xx.ravel(), yy.ravel(), np.ones(size * size, np.float32)])

    lm_h = np.concatenate([photo.landmarks, np.ones((len(photo.landmarks), 1))], 1)
    landmarks_2d = np.empty((n_frames, len(photo.landmarks), 2), np.float32)

    ffmpeg = ffmpeg_exe()
    video_path = out_dir / f"{out_name}.mp4"
    truth_path = out_dir / f"{out_name}_truth.npz"
    part_video = out_dir / f"{out_name}.partial.mp4"
    with tempfile.TemporaryDirectory(prefix="talkctl-synth-") as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, audio.samples, sample_rate)
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}",
               "-framerate", str(fps), "-i", "pipe:0", "-i", str(wav),
               "-map", "0:v:0", "-map", "1:a:0",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "64k", "-ar", str(sample_rate), "-ac", "1",
               "-movflags", "+faststart", "-f", "mp4", str(part_video)]
        err_path = Path(tmp) / "ffmpeg.err"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
            try:
                for i in range(n_frames):
                    Hh = _plane_homography(K, R[i], t[i], tex_to_plane, plane_z)
                    Ht = _plane_homography(K, Rt[i], tt[i], tex_to_plane, plane_z)
                    p = lm_h @ Hh.T
                    landmarks_2d[i] = p[:, :2] / p[:, 2:]
                    frame = _render_frame(pix, size, Hh, Ht, hc, hr, rig, float(opening[i]),
                                          float(blink[i]), tex, tex_scale, interp, backdrop)
                    proc.stdin.write(frame.tobytes())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            except BaseException:
                proc.kill()
                proc.wait()
                part_video.unlink(missing_ok=True)
                raise
            rc = proc.wait()
        if rc != 0:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
            part_video.unlink(missing_ok=True)
            raise StageError(f"ffmpeg failed writing {video_path.name} (exit {rc}): "
                             + " | ".join(tail))
    os.replace(part_video, video_path)

    truth = dict(R=R, t=t, torso_R=Rt, torso_t=tt, K=K, tex_to_plane=tex_to_plane,
                 plane_z=np.float64(plane_z), euler_deg=np.rad2deg(np.stack([yaw, pitch, roll], -1)),
                 opening=opening.astype(np.float32), blink=blink, audio_rms=audio.rms,
                 landmarks_tex=photo.landmarks, landmarks_2d=landmarks_2d, times=ts,
                 fps=np.int64(fps), size=np.int64(size), sample_rate=np.int64(sample_rate),
                 seed=np.int64(seed), face_height_px=np.float64(f * FACE_HEIGHT_M / REST_DEPTH_M),
                 jaw_drop=np.float64(jaw_drop))
    part_truth = out_dir / f"{out_name}_truth.partial.npz"
    with open(part_truth, "wb") as fh:
        np.savez(fh, **truth)
    os.replace(part_truth, truth_path)
    return SyntheticSubject(video_path, truth_path, fps, size, sample_rate, K, R, t,
                            truth["opening"], blink, audio.rms, Rt, tt, landmarks_2d)


def _render_frame(pix, size, Hh, Ht, hc, hr, rig, opening, blink, tex, tex_scale, interp,
                  backdrop) -> np.ndarray:
    """One RGB uint8 frame: backward-map every output pixel to a photo position (head and
    torso homographies blended at the neck, then the mouth/eyelid rig), sample, composite."""
    import cv2

    qh = _inv3(Hh).astype(np.float32) @ pix
    qh = qh[:2] / qh[2]
    qt = _inv3(Ht).astype(np.float32) @ pix
    qt = qt[:2] / qt[2]
    r = np.sqrt(((qh[0] - hc[0]) / hr[0]) ** 2 + ((qh[1] - hc[1]) / hr[1]) ** 2)
    w = 1.0 - _smoothstep(1.0, 1.35, r)
    qx = qt[0] + w * (qh[0] - qt[0])
    qy = qt[1] + w * (qh[1] - qt[1])
    sx, sy, inner = rig.warp(qx, qy, opening, blink)
    m1, m2 = cv2.convertMaps((sx * tex_scale).reshape(size, size),
                             (sy * tex_scale).reshape(size, size), cv2.CV_16SC2)
    rgba = cv2.remap(tex, m1, m2, interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rgb = rgba[..., :3].astype(np.float32) * (1.0 / 255.0)
    if inner is not None:
        sel, a, depth = inner
        # dark mouth interior: near black under the upper teeth, dark red towards the tongue
        col = np.array([0.07, 0.025, 0.03]) + np.array([0.22, 0.06, 0.06]) * depth[:, None] ** 1.5
        flat = rgb.reshape(-1, 3)
        flat[sel] = flat[sel] * (1 - a[:, None]) + col * a[:, None]
    alpha = rgba[..., 3:].astype(np.float32) * (1.0 / 255.0)
    out = backdrop + alpha * (rgb - backdrop)
    out *= 255.0
    out += 0.5
    return out.astype(np.uint8)
