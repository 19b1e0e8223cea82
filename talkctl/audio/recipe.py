"""How audio becomes the per-video-frame feature windows every audio-driven model reads.

Timing (the contract every later stage relies on; also in artifacts.py):
  video frame i (25 fps) covers waveform samples [640 i, 640 (i+1)) (talkctl.timebase).
  The extractor gives F feature frames at `rate` frames/s, frame j centred on offset + j/rate s.
  Frame i's window holds the W feature frames m_i - W//2 ... m_i + W - W//2 - 1, where
  m_i = floor((c_i - offset) * rate + 0.5) is the feature frame nearest the frame centre
  c_i = (i + 0.5)/25 s. Indices outside [0, F-1] repeat the edge frame.
  (mel-formant: rate 100, offset 0 -> m_i = 4 i + 2, W = 16 spans 0.16 s, c_i - 0.08 .. c_i + 0.07 s.)

Normalisation: features = (raw - norm_mean) / norm_std with the statistics of the clip the
run was made from, stored in audio.h5. `features_for_audio` applies the SAME statistics
(and extractor settings) to new audio at render time.

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
from talkctl.audio.registry import make_extractor
from talkctl.errors import InputError, UsageError
from talkctl.media.audio import load_waveform
from talkctl.timebase import FPS, SAMPLES_PER_FRAME, n_video_frames

# The settings that decide the features (extract-audio's DEFAULTS are these).
FEATURE_DEFAULTS = {
    "extractor": "auto",       # auto (= mel-formant) | mel-formant | hubert | wav2vec2
    "model": None,             # hubert / wav2vec2: model directory or hub id (cache only)
    "window": 16,              # feature frames per video frame
    "n_mels": 80,              # mel-formant
    "fmin": 40.0,
    "fmax": 7600.0,
    "lpc_order": 18,
    "gain_normalize": True,    # scale speech to -20 dBFS before analysis (gain-independent features)
    "layer": -1,               # hubert / wav2vec2: hidden state index (-1 = last)
    "chunk_seconds": 20.0,     # hubert / wav2vec2: audio per forward pass (1 s context each side)
}


def window_indices(n_frames: int, n_feature_frames: int, rate: float, offset: float, window: int,
                   fps: int = FPS) -> np.ndarray:
    """(T, W) feature-frame indices per video frame (see the module docstring)."""
    centre = (np.arange(n_frames) + 0.5) / fps
    nearest = np.floor((centre - offset) * rate + 0.5).astype(np.int64)
    idx = nearest[:, None] - window // 2 + np.arange(window)[None, :]
    return np.clip(idx, 0, n_feature_frames - 1)


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
        return cls(name, ex, window, config=dict(cfg))

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

    def fit(self, raw: np.ndarray) -> None:
        """Take normalisation statistics from this (training) clip."""
        self.mean, self.std = norm_stats(raw, self.extractor.min_std)

    def windows(self, raw: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalised feature frames (F, D), windows (T, W, D))."""
        if self.mean is None:
            raise ValueError("normalisation statistics missing: call fit() or load from an artifact")
        norm = ((raw - self.mean) / self.std).astype(np.float32)
        idx = window_indices(n_frames, len(norm), self.extractor.rate, self.extractor.offset, self.window)
        return norm, norm[idx]

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        n = n_video_frames(len(wav))
        return self.windows(self.raw(wav), n)[1]


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
