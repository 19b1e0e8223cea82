"""Synthesised speech-like audio for the synthetic subject: a glottal source through moving
formant resonators, loudness following a speech envelope; seeded voices (the subject's and unseen ones).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl.errors import UsageError
from talkctl.media.ffmpeg import write_wav


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
