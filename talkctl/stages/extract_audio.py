"""extract-audio: the run's media -> 16 kHz mono waveform + per-video-frame feature windows (audio.h5).

Timing (the contract every later stage relies on; also in artifacts.py):
  video frame i (25 fps) covers [i/25, (i+1)/25) s, i.e. waveform samples [640 i, 640 (i+1));
  n_frames T = n_samples // 640: every frame is fully covered by audio (a tail < 40 ms is
  kept in the waveform but has no frame).
  The extractor gives F feature frames at `rate` frames/s, frame j centred on offset + j/rate s.
  Frame i's window holds the W feature frames m_i - W//2 ... m_i + W - W//2 - 1, where
  m_i = floor((c_i - offset) * rate + 0.5) is the feature frame nearest the frame centre
  c_i = (i + 0.5)/25 s. Indices outside [0, F-1] repeat the edge frame.
  (mel-formant: rate 100, offset 0 -> m_i = 4 i + 2, W = 16 spans 0.16 s, c_i - 0.08 .. c_i + 0.07 s.)

Normalisation: features = (raw - norm_mean) / norm_std with the statistics of the clip the
run was made from, stored in audio.h5. `features_for_audio` applies the SAME statistics
(and extractor settings) to new audio at render time.

Public API for later stages:
  load_waveform(path) -> (S,) float32, 16 kHz mono
  features_for_audio(source, reference, device="cpu") -> (T, W, D) float32
  FeatureRecipe.from_artifact(reference)  (reuse one loaded extractor for many clips)
  window_indices(n_frames, n_feature_frames, rate, offset, window) -> (T, W) int
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkctl.errors import InputError, UsageError

VERSION = 1
SR = 16000
FPS = 25
SAMPLES_PER_FRAME = SR // FPS  # 640

DEFAULTS = {
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
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}  # features must not depend on the training budget
NON_SEMANTIC: set[str] = set()


# ---- decoding -------------------------------------------------------------------
def decode_audio(path: Path) -> tuple[np.ndarray, dict]:
    """(waveform, probe info): first audio stream, 16 kHz mono float32 via ffmpeg."""
    from talkctl.media import ffmpeg as media

    info = media.probe(path)
    if info["audio"] is None:
        what = "video" if info["video"] else "file"
        raise InputError(f"{path} has no audio stream; give a {what} with sound (or a wav/mp3/flac file)")
    raw = media.run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SR),
                            "-f", "f32le", "-acodec", "pcm_f32le", "-"], f"decode the audio of {path}")
    wav = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(wav)):
        wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
    return wav, info


def load_waveform(path: str | Path) -> np.ndarray:
    """Any media file with sound -> (S,) float32 16 kHz mono; InputError for bad files."""
    from talkctl.rundir import check_input_file

    path = check_input_file(Path(path).expanduser(), "audio")
    wav, _ = decode_audio(path)
    return wav


# ---- alignment ------------------------------------------------------------------
def n_video_frames(n_samples: int) -> int:
    return n_samples // SAMPLES_PER_FRAME


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


def rms_db_per_frame(wav: np.ndarray, n_frames: int) -> np.ndarray:
    x = wav[:n_frames * SAMPLES_PER_FRAME].reshape(n_frames, SAMPLES_PER_FRAME).astype(np.float64)
    return (10.0 * np.log10((x * x).mean(axis=1) + 1e-12)).astype(np.float32)


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
        from talkctl.audio.registry import make_extractor

        window = int(cfg.get("window", 16))
        if not 1 <= window <= 256:
            raise UsageError(f"window={window} is out of range; use 1..256 feature frames (default 16)")
        name, ex = make_extractor(cfg.get("extractor") or "auto", cfg, device)
        return cls(name, ex, window, config=dict(cfg))

    @classmethod
    def from_artifact(cls, reference, device: str = "cpu") -> "FeatureRecipe":
        """The recipe recorded in a training run's audio.h5 (path, run directory or open h5py.File)."""
        import h5py

        from talkctl import artifacts
        from talkctl.rundir import RunDir

        if isinstance(reference, h5py.File):
            return cls._from_h5(reference, device)
        ref = reference.path if isinstance(reference, RunDir) else Path(reference)
        if ref.is_dir():
            with artifacts.open_for_read(RunDir(ref, create=False), "audio") as f:
                return cls._from_h5(f, device)
        if not ref.is_file():
            raise InputError(f"{ref} is neither an audio.h5 nor a run directory; run `talkctl extract-audio` first")
        try:
            f = h5py.File(ref, "r")
        except OSError:
            raise InputError(f"{ref} is not readable HDF5; rerun `talkctl extract-audio ... --force`") from None
        with f:
            if f.attrs.get("schema") != artifacts.spec("audio").schema:
                raise InputError(f"{ref} is not a talkctl audio.h5 (schema {f.attrs.get('schema')})")
            return cls._from_h5(f, device)

    @classmethod
    def _from_h5(cls, f, device: str) -> "FeatureRecipe":
        cfg = dict(DEFAULTS)
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


# ---- the stage ------------------------------------------------------------------
def resolve(cfg: dict, device: str) -> dict:
    """Fingerprint the extractor "auto" picks here, not the word "auto"."""
    from talkctl.backends import select

    return {**cfg, "extractor": select("audio-features", cfg.get("extractor") or "auto", device).name}


def run(ctx, cfg: dict) -> dict:
    from talkctl.rundir import check_input_file
    from talkctl.audio.melformant import SILENT_CLIP_DB, VOICING_THRESHOLD, speech_level_db

    src = check_input_file(ctx.video_path(), "input")
    recipe = FeatureRecipe.from_config(cfg, ctx.device)  # fails fast on a missing model
    ctx.use_backend("audio-features", recipe.name)
    wav, info = decode_audio(src)  # bad input fails here, before any progress output
    n_frames = n_video_frames(len(wav))
    if n_frames == 0:
        raise InputError(f"the audio of {src} is {len(wav) / SR * 1000:.0f} ms long; need at least one video "
                         f"frame (40 ms)")
    duration = len(wav) / SR
    ctx.log.info("decoded %s: %.3f s (%s Hz %s) -> %d samples, %d frames at 25 fps", src, duration,
                 info["audio"].get("sample_rate"), info["audio"].get("layout"), len(wav), n_frames)
    with ctx.progress(2, "extract-audio") as task:
        level = speech_level_db(wav)
        silent = level < SILENT_CLIP_DB
        if silent:
            ctx.log.warning("the audio of %s is silent (speech level %.0f dBFS); features describe silence", src, level)
        raw = recipe.raw(wav)
        recipe.fit(raw)
        frames, windows = recipe.windows(raw, n_frames)
        task.advance(1, step="features")
        with ctx.write("audio") as f:
            _store(f, wav, frames, windows, recipe, rms_db_per_frame(wav, n_frames))
            f.attrs.update(_attrs(recipe, info, src, duration, n_frames, len(frames), level, silent))
        task.advance(1, step="written")
    summary = {"duration_s": round(duration, 3), "n_frames": n_frames, "extractor": recipe.name,
               "feature_shape": list(windows.shape), "speech_level_dbfs": round(level, 1), "silent": bool(silent)}
    if recipe.name == "mel-formant":
        summary["voiced_fraction"] = round(float(np.mean(raw[:, recipe.extractor.names.index("voicing")] >= VOICING_THRESHOLD)), 3)
    if info["video"]:
        summary["source_fps"] = info["video"]["fps"]
    return summary


def _store(f, wav, frames, windows, recipe, rms_db) -> None:
    opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    f.create_dataset("waveform", data=wav, chunks=(min(len(wav), 1 << 16),), **opts)
    f.create_dataset("features", data=windows, chunks=(min(len(windows), 64), *windows.shape[1:]), **opts)
    f.create_dataset("feature_frames", data=frames, chunks=(min(len(frames), 256), frames.shape[1]), **opts)
    f.create_dataset("norm_mean", data=recipe.mean)
    f.create_dataset("norm_std", data=recipe.std)
    f.create_dataset("rms_db", data=rms_db)


def _attrs(recipe: FeatureRecipe, info: dict, src: Path, duration: float, n_frames: int, n_feature_frames: int,
           level: float, silent: bool) -> dict:
    ex = recipe.extractor
    attrs = {
        "sample_rate": SR, "fps": FPS, "n_frames": n_frames, "window": recipe.window, "feature_dim": ex.dim,
        "feature_rate": float(ex.rate), "feature_offset": float(ex.offset), "n_feature_frames": n_feature_frames,
        "extractor": recipe.name, "feature_names": json.dumps(ex.names), "duration": duration,
        "speech_level_dbfs": float(level), "silent": bool(silent), "source": str(src),
        "source_sample_rate": int(info["audio"].get("sample_rate") or 0),
        "source_channels": str(info["audio"].get("layout") or ""),
        "source_video_fps": float(info["video"]["fps"] or 0.0) if info["video"] else 0.0,
    }
    if hasattr(ex, "model_name"):
        attrs["model"] = ex.model_name
    return attrs
