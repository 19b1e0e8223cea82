"""Motion figures: LMD (mouth landmark distance), mouth-opening correlation, and the lip-sync
proxy: mouth opening against speech energy at the best lag.
"""
from __future__ import annotations

import math

import numpy as np

# Mouth and outer eye corners for the landmark sets talkctl's backends produce.
# 68: iBUG/face-alignment (mouth 48-67; outer eye corners 36 and 45).
# 478/468: MediaPipe face mesh (FACEMESH_LIPS, 40 points; outer eye corners 33 and 263).
MEDIAPIPE_LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
                  267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)


MOUTH_INDICES = {68: tuple(range(48, 68)), 468: MEDIAPIPE_LIPS, 478: MEDIAPIPE_LIPS}
EYE_CORNERS = {68: (36, 45), 468: (33, 263), 478: (33, 263)}


def lmd(pred, ref, mouth: tuple[int, ...] | None = None, normalise: str | None = "interocular") -> float:
    """Landmark distance on the mouth: mean over frames and mouth points of the 2D distance
    between pred (T,L,2|3) and ref (T,L,2|3) landmarks (x,y used).

    normalise: "interocular" divides each frame's distance by the ref frame's outer-eye-corner
    distance (scale-free: 0.01 = 1 % of the eye distance); "box" by the diagonal of the ref
    frame's landmark bounding box (any landmark set); None: pixels (what most papers report,
    on their own crop size).
    """
    p, r = np.asarray(pred, np.float64)[..., :2], np.asarray(ref, np.float64)[..., :2]
    if p.shape != r.shape or p.ndim != 3:
        raise ValueError(f"landmark arrays must both be (T,L,2|3), got {p.shape} and {r.shape}")
    n = p.shape[1]
    idx = mouth if mouth is not None else MOUTH_INDICES.get(n)
    if idx is None:
        raise ValueError(f"no mouth indices known for {n} landmarks; pass mouth=")
    d = np.linalg.norm(p[:, idx] - r[:, idx], axis=-1).mean(axis=1)
    if normalise == "interocular":
        if n not in EYE_CORNERS:
            raise ValueError(f"no eye corners known for {n} landmarks; use normalise='box'")
        i, j = EYE_CORNERS[n]
        scale = np.linalg.norm(r[:, i] - r[:, j], axis=-1)
    elif normalise == "box":
        scale = np.linalg.norm(r.max(axis=1) - r.min(axis=1), axis=-1)
    elif normalise is None:
        scale = np.ones(len(d))
    else:
        raise ValueError(f"normalise must be 'interocular', 'box' or None, not {normalise!r}")
    return float(np.mean(d / np.maximum(scale, 1e-9)))


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length series; nan when either is constant."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series lengths differ: {x.size} vs {y.size}")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def mouth_open_correlation(real, rendered) -> float:
    """How well the rendered mouth opening follows the real one over time (Pearson)."""
    return pearson(real, rendered)


CI_BLOCK_FRAMES = 10  # 0.4 s at 25 fps: about a syllable, so neighbouring frames are not counted as independent
CI_DRAWS = 1000


def correlation_interval(a, b, block: int = CI_BLOCK_FRAMES, draws: int = CI_DRAWS,
                         level: float = 0.95) -> tuple[float, float] | None:
    """(low, high) `level` interval of pearson(a, b) by a moving-block bootstrap: the frames are
    resampled in runs of `block` (mouth openings follow each other from frame to frame, so a
    plain bootstrap would claim far too narrow an interval). It says how far a figure measured
    on a few seconds (a short clip's held-out tail) can be trusted; None with fewer than two
    blocks of frames. Seeded: the same series give the same interval."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"series lengths differ: {x.size} vs {y.size}")
    n = x.size
    if n < 2 * block:
        return None
    rng = np.random.default_rng(0)
    k = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(draws, k))
    idx = (starts[:, :, None] + np.arange(block)).reshape(draws, -1)[:, :n]
    xs, ys = x[idx], y[idx]
    xs -= xs.mean(1, keepdims=True)
    ys -= ys.mean(1, keepdims=True)
    den = np.sqrt((xs * xs).sum(1) * (ys * ys).sum(1))
    r = (xs * ys).sum(1)[den > 0] / den[den > 0]
    if r.size < draws // 2:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    return float(np.percentile(r, tail)), float(np.percentile(r, 100.0 - tail))


# ---------------------------------------------------------------------------- audio-mouth sync


def audio_energy_per_frame(wav, sample_rate: int = 16000, fps: int = 25, band: tuple[float, float] | None = (300.0, 3000.0),
                           n_frames: int | None = None) -> np.ndarray:
    """Speech energy in dB for each video frame: Hann-windowed power of the samples shown
    during frame i ([i, i+1) / fps), restricted to `band` Hz (300-3000 Hz: where voiced
    speech energy lives, so breath and rumble count less). (T,) float64."""
    w = np.asarray(wav, np.float64).ravel()
    hop = sample_rate / fps
    t = n_frames if n_frames is not None else int(round(len(w) / hop))
    n = int(round(hop))
    starts = np.round(np.arange(t) * hop).astype(int)
    w = np.pad(w, (0, max(0, starts[-1] + n - len(w)) if t else 0))
    frames = np.stack([w[s:s + n] for s in starts]) if t else np.zeros((0, n))
    spec = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
    if band is not None:
        f = np.fft.rfftfreq(n, 1.0 / sample_rate)
        spec = spec[:, (f >= band[0]) & (f <= band[1])]
    return 10.0 * np.log10(spec.mean(axis=1) + 1e-10)


def correlation_at_lag(mouth, energy, lag: int) -> float:
    """Pearson correlation of mouth[t + lag] with energy[t] (nan when under 3 frames overlap)."""
    m, e = np.asarray(mouth, np.float64).ravel(), np.asarray(energy, np.float64).ravel()
    n = min(len(m), len(e))
    m, e = m[:n], e[:n]
    a, b = (m[lag:], e[:n - lag]) if lag >= 0 else (m[:n + lag], e[-lag:])
    return pearson(a, b) if len(a) >= 3 else float("nan")


def lagged_correlation(mouth, energy, max_lag: int = 2) -> tuple[float, int]:
    """Best Pearson correlation of mouth[t + lag] with energy[t] over lag in [-max_lag, max_lag].

    Returns (corr, lag); lag > 0 means the mouth moves `lag` frames after the sound.
    (nan, 0) when the series are too short or constant.
    """
    best = (float("nan"), 0)
    for lag in range(-max_lag, max_lag + 1):
        c = correlation_at_lag(mouth, energy, lag)
        if not math.isnan(c) and (math.isnan(best[0]) or c > best[0]):
            best = (c, lag)
    return best


def audio_mouth_sync(mouth_open, wav, sample_rate: int = 16000, fps: int = 25, max_lag: int = 2) -> tuple[float, int]:
    """Lip-sync figure needing no downloaded model: correlation between a mouth-opening
    series (one value per video frame) and the band-limited speech energy of the audio,
    at the best lag within +-max_lag frames. Returns (corr, lag)."""
    energy = audio_energy_per_frame(wav, sample_rate, fps, n_frames=len(mouth_open))
    return lagged_correlation(mouth_open, energy, max_lag)


# ---------------------------------------------------------------------------- mouth vs a real speaker


def fill_gaps(x) -> np.ndarray:
    """Interpolate missing values (nan: frames where no face was found) for time-series figures."""
    x = np.asarray(x, np.float64).ravel()
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x
    i = np.arange(len(x))
    return np.interp(i, i[ok], x[ok])


def amplitude_ratio(rendered, real) -> float:
    """How far the rendered mouth opens compared with the real one: std(rendered) / std(real)
    over the frames where both are known; nan when the real opening is constant."""
    r, t = np.asarray(rendered, np.float64).ravel(), np.asarray(real, np.float64).ravel()
    ok = np.isfinite(r) & np.isfinite(t)
    if ok.sum() < 3:
        return float("nan")
    sd = float(t[ok].std())
    return float(r[ok].std()) / sd if sd > 0 else float("nan")


def mouth_follow(rendered, real, max_lag: int = 3) -> dict:
    """Lip sync with a ground truth: a render driven by another video's audio against that
    video's real mouth opening (one value per frame each, nan where no face was found).

    corr: Pearson at lag 0, corr_ci95 its correlation_interval (None for too few frames);
    best_lag / best_corr: the best lag within +-max_lag frames (best_lag > 0: the render trails
    the real speaker); amp: amplitude_ratio. The series are cut to the shorter one; missing
    frames are interpolated for the correlations."""
    n = min(len(rendered), len(real))
    r, t = np.asarray(rendered, np.float64)[:n], np.asarray(real, np.float64)[:n]
    rf, tf = fill_gaps(r), fill_gaps(t)
    corr = pearson(rf, tf) if n >= 3 else float("nan")
    ci = correlation_interval(rf, tf) if n >= 3 else None
    best_corr, best_lag = lagged_correlation(rf, tf, max_lag)
    return {"corr": corr, "corr_ci95": None if ci is None else list(ci), "best_lag": int(best_lag),
            "best_corr": best_corr, "amp": amplitude_ratio(r, t), "frames": n}


# ---------------------------------------------------------------------------- SyncNet
