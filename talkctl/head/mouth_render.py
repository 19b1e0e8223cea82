"""How far a trained deformation field really opens the mouth it is told to, and the gain that
makes up for it (train-deform, deform.h5 attr mouth_render_gain; head.models applies it).

The field learns mouth state -> Gaussians from one voice's frames: in half its steps it sees the
audio path's predicted states (which regress toward the mean mouth) and the splats soften the lips,
so the rendered mouth opens less than the state it renders (french_50s, fast preset: the tracked
states of held-out frames render at 0.82x the real opening, with correlation 0.98, as the landmark
reader eval uses sees them). At the end of train-deform the field renders the tracked states of
speaking training frames at a few gains over the real frames; the run's landmark reader reads the
rendered and the real mouth opening, and the gain at which the rendered opening spreads as far as
the real one (interpolated on the measured response, which is sublinear) is recorded. Render then
multiplies every drive's mouth-state gain by it: a per-subject measurement, not a constant.

    rec = measure_render_gain(render_over_real, frames, real, reader)   # deform.h5 attrs
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np

from talkctl.metrics.lipsync import amplitude_ratio, pearson

RESPONSE_GAINS = (1.0, 1.5, 2.0)  # the gains on the tracked states whose renders are read
RENDER_GAIN_RANGE = (0.5, 2.0)    # the most the compensation narrows / widens the mouth states
N_FRAMES = 64                     # speaking training frames rendered per gain
MIN_FOUND = 0.8                   # share of the frames whose face the reader must find at every gain


def solve_gain(gains, ratios) -> float:
    """The gain at which the piecewise-linear response gain -> amplitude ratio first reaches 1,
    clipped to RENDER_GAIN_RANGE: proportional below the first gain, the last segment's slope
    beyond the last (the widest allowed when the response is flat there)."""
    order = np.argsort(np.asarray(gains, np.float64))
    g, r = np.asarray(gains, np.float64)[order], np.asarray(ratios, np.float64)[order]
    lo, hi = RENDER_GAIN_RANGE
    if r[0] >= 1.0:
        return float(np.clip(g[0] / max(r[0], 1e-6), lo, hi))
    for i in range(1, len(g)):
        if r[i] >= 1.0:
            return float(np.clip(g[i - 1] + (1.0 - r[i - 1]) * (g[i] - g[i - 1]) / (r[i] - r[i - 1]), lo, hi))
    slope = (r[-1] - r[-2]) / (g[-1] - g[-2]) if len(g) > 1 else 0.0
    return float(np.clip(g[-1] + (1.0 - r[-1]) / slope, lo, hi)) if slope > 1e-6 else hi


def speaking_frames(frames: np.ndarray, speech: np.ndarray | None, n: int = N_FRAMES) -> np.ndarray:
    """Up to n of `frames` spread over them, those with full speech activity when there are n."""
    frames = np.asarray(frames)
    if speech is not None:
        talk = frames[np.asarray(speech)[frames] >= 1.0]
        frames = talk if len(talk) >= n else frames
    return frames[np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int))]


def measure_render_gain(render_over_real: Callable[[np.ndarray, float], np.ndarray], frames: np.ndarray,
                        real: np.ndarray, reader, batch: int = 8) -> dict:
    """render_over_real(idx, gain) -> (C,S,S,3) uint8: the head rendered with gain x the tracked
    states of frames idx over the real frames; real: those real frames (N,S,S,3) uint8; reader: the
    run's face.reader.LandmarkReader. Returns deform.h5 attrs: {"mouth_render_gain", "mouth_render_response"
    (JSON gain -> amplitude ratio), "mouth_render_corr" (rendered vs real opening at gain 1)}, or
    gain 1 and "mouth_render_reason" when the reader cannot see the mouths."""
    from talkctl.face.reader import MouthTrack

    def opening(images_of) -> np.ndarray:
        track = MouthTrack(reader)
        for b in range(0, len(frames), batch):
            track.add(images_of(slice(b, b + batch)))
        return np.where(track.found, track.mouth_open(), np.nan)

    m_real = opening(lambda s: real[s])
    ratios, corr = {}, None
    for g in RESPONSE_GAINS:
        m = opening(lambda s, g=g: render_over_real(frames[s], g))
        ok = np.isfinite(m) & np.isfinite(m_real)
        if ok.mean() < MIN_FOUND or np.std(m_real[ok]) <= 0:
            return {"mouth_render_gain": 1.0, "mouth_render_reason": f"the landmark reader found the mouth in "
                    f"{int(ok.sum())} of {len(frames)} frames (real and rendered at gain {g}): too few to measure"}
        ratios[g] = amplitude_ratio(m[ok], m_real[ok])
        if corr is None:
            corr = pearson(m[ok], m_real[ok])
    gain = solve_gain(list(ratios), list(ratios.values()))
    return {"mouth_render_gain": gain, "mouth_render_corr": float(corr),
            "mouth_render_response": json.dumps({f"{g:g}": round(r, 4) for g, r in ratios.items()})}
