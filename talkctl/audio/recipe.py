"""How audio becomes the per-video-frame feature windows every audio-driven model reads.

Timing (the contract every later stage relies on; also in artifacts.py):
  video frame i (25 fps) covers waveform samples [640 i, 640 (i+1)) (talkctl.timebase).
  The extractor gives F feature frames at `rate` frames/s, frame j centred on offset + j/rate s.
  Frame i's window holds the W feature frames m_i - W//2 ... m_i + W - W//2 - 1, where
  m_i = floor((c_i - offset) * rate + 0.5) is the feature frame nearest the frame centre
  c_i = (i + 0.5)/25 s. Indices outside [0, F-1] repeat the edge frame.
  (phonetic, mel-formant: rate 100, offset 0 -> m_i = 4 i + 2, W = 16 spans 0.16 s, c_i - 0.08 .. c_i + 0.07 s.)

Normalisation (`norm`, recorded in audio.h5 and applied identically to every audio):
  utterance  each audio (the training clip, and new audio at render time) is normalised by the
             mean/std of its own speech frames (speech_frames: within SPEECH_RANGE_DB of the
             clip's speech level), so a new voice, microphone or room lands where the training
             voice was; audio with too little speech (< MIN_SPEECH_FRAMES) uses the training
             clip's statistics, so silence stays silence.
  clip       new audio gets the training clip's statistics (norm_mean / norm_std in audio.h5).
The default is utterance: per speaker-normalised features are what lets a head trained on one
voice follow another (bench/lipsync.py). Runs made before this key existed read as clip.

  features_for_audio(source, reference, device="cpu") -> (T, W, D) float32
  FeatureRecipe.from_artifact(reference)  (reuse one loaded extractor for many clips)
  window_indices(n_frames, n_feature_frames, rate, offset, window) -> (T, W) int
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkctl import artifacts
from talkctl.audio.melformant import SILENT_CLIP_DB, speech_level_db
from talkctl.audio.registry import make_extractor
from talkctl.config import NON_NEGATIVE, POSITIVE, Range
from talkctl.errors import InputError, UsageError
from talkctl.media.audio import load_waveform
from talkctl.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, n_video_frames

# The settings that decide the features (extract-audio's DEFAULTS are these).
FEATURE_DEFAULTS = {
    "extractor": "auto",       # auto (= phonetic) | phonetic | phonetic-mel | mel-formant | hubert | wav2vec2
    "model": None,             # hubert / wav2vec2: model directory or hub id (cache only)
    "window": 16,              # feature frames per video frame
    "phone_temperature": 5.0,  # phonetic: softmax temperature of the phone scores (nats)
    "phone_smooth_ms": 20.0,   # phonetic: Gaussian smoothing of the posteriors over time
    "phone_workers": 0,        # phonetic: processes for audio over 40 s (0 = up to 2); speed only
    "norm": "utterance",       # utterance: each audio by its own speech frames' statistics | clip: the training clip's
    "n_mels": 80,              # mel-formant
    "fmin": 40.0,
    "fmax": 7600.0,
    "lpc_order": 18,
    "gain_normalize": True,    # scale speech to -20 dBFS before analysis (gain-independent features)
    "layer": -1,               # hubert / wav2vec2: hidden state index (-1 = last)
    "chunk_seconds": 20.0,     # hubert / wav2vec2: audio per forward pass (1 s context each side)
}
FEATURE_RANGES = {"window": Range(1, 256), "n_mels": Range(8, 256), "fmin": NON_NEGATIVE, "fmax": POSITIVE,
                  "lpc_order": Range(6, 40), "layer": Range(-64, 64), "chunk_seconds": Range(1, 3600),
                  "phone_temperature": POSITIVE, "phone_smooth_ms": NON_NEGATIVE, "phone_workers": Range(0, 64)}


def window_indices(n_frames: int, n_feature_frames: int, rate: float, offset: float, window: int,
                   fps: int = FPS) -> np.ndarray:
    """(T, W) feature-frame indices per video frame (see the module docstring)."""
    centre = (np.arange(n_frames) + 0.5) / fps
    nearest = np.floor((centre - offset) * rate + 0.5).astype(np.int64)
    idx = nearest[:, None] - window // 2 + np.arange(window)[None, :]
    return np.clip(idx, 0, n_feature_frames - 1).astype(np.int32)  # int32: a 10-minute drive keeps them all


NORM_MODES = ("utterance", "clip")
# Pauses: frames more than SPEECH_RANGE_DB below the clip's speech level, or, in a noisy recording,
# less than FLOOR_MARGIN_DB above its noise floor (5th percentile), but never within MIN_RANGE_DB of the level.
SPEECH_RANGE_DB, MIN_RANGE_DB, FLOOR_MARGIN_DB = 40.0, 25.0, 6.0
MIN_SPEECH_FRAMES = 50  # 0.5 s of speech at 100 frames/s: less cannot give statistics of its own


def _window_energy_db(wav: np.ndarray, centres: np.ndarray, half: int, chunk: int = 2000) -> np.ndarray:
    """Mean square (dBFS) of wav[c - half, c + half) (clipped to the clip) for increasing centres,
    through running sums over one stretch of samples at a time (float64 over the whole of a
    10-minute clip took ~230 MB; 2000 centres at 100/s span 20 s, ~8 MB of temporaries)."""
    out = np.empty(len(centres), np.float64)
    for k in range(0, len(centres), chunk):
        lo = np.clip(centres[k:k + chunk] - half, 0, len(wav))
        hi = np.clip(centres[k:k + chunk] + half, 0, len(wav))
        a = int(lo.min())
        seg = np.asarray(wav[a:int(hi.max())], np.float64)
        sq = np.concatenate([[0.0], np.cumsum(seg * seg)])
        out[k:k + chunk] = 10.0 * np.log10((sq[hi - a] - sq[lo - a]) / np.maximum(hi - lo, 1) + 1e-12)
    return out


def speech_frames(wav: np.ndarray, n: int, rate: float, offset: float) -> np.ndarray:
    """(n,) bool: feature frames (centred on offset + j / rate s) whose 25 ms around the centre are
    speech (see SPEECH_RANGE_DB); none when the clip is silent."""
    level = speech_level_db(wav)
    if level < SILENT_CLIP_DB:
        return np.zeros(n, bool)
    c = np.round((offset + np.arange(n) / rate) * SAMPLE_RATE).astype(np.int64)
    db = _window_energy_db(wav, c, int(0.0125 * SAMPLE_RATE))
    floor = float(np.percentile(db, 5)) if n else level
    return db >= level - float(np.clip(level - floor - FLOOR_MARGIN_DB, MIN_RANGE_DB, SPEECH_RANGE_DB))


ACTIVITY_REACH_S = 0.1   # speech this close to a video frame's centre counts for it (lips lead the sound)
ACTIVITY_FULL = 0.25     # this fraction of speech in that reach is full activity


def speech_activity(wav: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames,) float32 in [0, 1] per 25 fps video frame: how much speech (speech_frames, 10 ms
    steps) lies within ACTIVITY_REACH_S of the frame's centre; 0 in pauses and silence. A
    mouth-state head closes its mouth where it is 0 (head.conditions.AudioCondition)."""
    n10 = int(np.ceil(len(wav) / 160)) + 1
    speech = speech_frames(wav, n10, 100.0, 0.0).astype(np.float64)
    csum = np.concatenate([[0.0], np.cumsum(speech)])
    c = (np.arange(n_frames) + 0.5) / FPS * 100.0
    reach = ACTIVITY_REACH_S * 100.0
    lo = np.clip(np.round(c - reach).astype(np.int64), 0, n10)
    hi = np.clip(np.round(c + reach).astype(np.int64) + 1, 0, n10)
    frac = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return np.clip(frac / ACTIVITY_FULL, 0.0, 1.0).astype(np.float32)


def norm_stats(raw: np.ndarray, min_std: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of a clip's raw features, std floored (see extractor.min_std)."""
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    if min_std is None:
        floor = max(1e-3, 0.1 * float(np.median(std)))
        std = np.maximum(std, floor)
    else:
        std = np.maximum(std, min_std)
    return mean.astype(np.float32), std.astype(np.float32)


# ---- the recipe: extractor + settings + normalisation -----------------------------
@dataclass
class FeatureRecipe:
    """How features are made: a loaded extractor, its window and the normalisation statistics."""
    name: str
    extractor: object
    window: int
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    config: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict, device: str = "cpu") -> "FeatureRecipe":
        window = int(cfg.get("window", 16))
        if not 1 <= window <= 256:
            raise UsageError(f"window={window} is out of range; use 1..256 feature frames (default 16)")
        name, ex = make_extractor(cfg.get("extractor") or "auto", cfg, device)
        recipe = cls(name, ex, window, config=dict(cfg))
        recipe.norm  # an unknown mode fails here, before any work
        return recipe

    @classmethod
    def from_artifact(cls, reference, device: str = "cpu") -> "FeatureRecipe":
        """The recipe recorded in a training run's audio.h5 (path, run directory or open h5py.File)."""
        import h5py

        if isinstance(reference, h5py.File):
            return cls._from_h5(reference, device)
        with artifacts.open_artifact(reference, "audio", give="give a run directory or its audio.h5 "
                                                              "(`talkctl extract-audio` makes one)") as f:
            return cls._from_h5(f, device)

    @classmethod
    def _from_h5(cls, f, device: str) -> "FeatureRecipe":
        cfg = dict(FEATURE_DEFAULTS)
        cfg.update(json.loads(f.attrs["config"]))
        cfg["extractor"] = f.attrs["extractor"]  # the resolved one, not "auto"
        cfg["norm"] = str(f.attrs.get("norm", "clip"))  # runs made before `norm` existed used the clip's
        if "model" in f.attrs:
            cfg["model"] = f.attrs["model"]
        recipe = cls.from_config(cfg, device)
        recipe.mean = f["norm_mean"][()]
        recipe.std = f["norm_std"][()]
        if recipe.mean.shape[0] != recipe.extractor.dim:
            raise InputError(f"audio.h5 features have {recipe.mean.shape[0]} dims, the {recipe.name} extractor "
                             f"gives {recipe.extractor.dim}; rerun extract-audio --force")
        return recipe

    def raw(self, wav: np.ndarray) -> np.ndarray:
        return self.extractor.frames(wav)

    @property
    def norm(self) -> str:
        mode = str(self.config.get("norm") or "utterance")
        if mode not in NORM_MODES:
            raise UsageError(f"norm={mode!r}: use one of {', '.join(NORM_MODES)}")
        return mode

    def stats_of(self, raw: np.ndarray, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Statistics of one audio's speech frames (all frames when it has no pauses to leave out);
        None when it has too little speech for statistics of its own."""
        speech = speech_frames(wav, len(raw), self.extractor.rate, self.extractor.offset)
        if speech.sum() < MIN_SPEECH_FRAMES:
            return None
        return norm_stats(raw[speech], self.extractor.min_std)

    def fit(self, raw: np.ndarray, wav: np.ndarray | None = None) -> None:
        """Take normalisation statistics from this (training) clip: its speech frames when the
        waveform is given and has enough speech, else all its frames."""
        stats = self.stats_of(raw, wav) if wav is not None else None
        self.mean, self.std = stats if stats is not None else norm_stats(raw, self.extractor.min_std)

    def normalise(self, raw: np.ndarray, wav: np.ndarray | None = None, in_place: bool = False) -> np.ndarray:
        """(F, D) normalised feature frames of one audio: its own statistics in utterance mode
        (when it has enough speech and `wav` is given), else the fitted (training) ones.
        in_place: overwrite `raw` (float32) instead of making a second copy of long audio's features."""
        if self.mean is None:
            raise ValueError("normalisation statistics missing: call fit() or load from an artifact")
        stats = self.stats_of(raw, wav) if (self.norm == "utterance" and wav is not None) else None
        mean, std = stats if stats is not None else (self.mean, self.std)
        if in_place and raw.dtype == np.float32:
            raw -= mean
            raw /= std
            return raw
        return ((raw - mean) / std).astype(np.float32)

    def windows(self, raw: np.ndarray, n_frames: int, wav: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(normalised feature frames (F, D), windows (T, W, D))."""
        norm = self.normalise(raw, wav)
        idx = window_indices(n_frames, len(norm), self.extractor.rate, self.extractor.offset, self.window)
        return norm, norm[idx]

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        n = n_video_frames(len(wav))
        return self.windows(self.raw(wav), n, wav)[1]


def features_for_audio(source, reference, device: str = "cpu") -> np.ndarray:
    """Features of new audio, made exactly like the training run's: (T, W, D) float32.

    source: media file path, or a (S,) float32 16 kHz mono waveform.
    reference: the training run's audio.h5, its run directory, or an open h5py.File.
    T = len(waveform) // 640 (25 fps); same extractor, window and normalisation statistics."""
    wav = load_waveform(source) if isinstance(source, (str, Path)) else np.asarray(source, dtype=np.float32)
    if wav.ndim != 1:
        raise InputError(f"waveform must be 1-D 16 kHz mono, got shape {wav.shape}")
    return FeatureRecipe.from_artifact(reference, device)(wav)




def rms_db_per_frame(wav: np.ndarray, n_frames: int) -> np.ndarray:
    x = wav[:n_frames * SAMPLES_PER_FRAME].reshape(n_frames, SAMPLES_PER_FRAME).astype(np.float64)
    return (10.0 * np.log10((x * x).mean(axis=1) + 1e-12)).astype(np.float32)
