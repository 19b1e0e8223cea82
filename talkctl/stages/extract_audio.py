"""extract-audio: the run's media -> 16 kHz mono waveform + per-video-frame feature windows (audio.h5).

How features are made, windowed per 25 fps video frame and normalised is audio.recipe (the
same recipe render applies to new audio); the extractors are in audio.registry.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from talkctl.audio.melformant import SILENT_CLIP_DB, VOICING_THRESHOLD, speech_level_db
from talkctl.audio.recipe import FEATURE_DEFAULTS, FEATURE_RANGES, FeatureRecipe, rms_db_per_frame
from talkctl.backends import select
from talkctl.errors import InputError
from talkctl.media.audio import decode_audio
from talkctl.media.ffmpeg import probe
from talkctl.rundir import check_input_file
from talkctl.timebase import FPS, SAMPLE_RATE as SR, n_video_frames

VERSION = 1
DEFAULTS = dict(FEATURE_DEFAULTS)
RANGES = dict(FEATURE_RANGES)
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}  # features must not depend on the training budget
NON_SEMANTIC: set[str] = {"phone_workers"}  # how many processes decode, not what comes out


# ---- the stage ------------------------------------------------------------------
def resolve(cfg: dict, device: str) -> dict:
    """Fingerprint the extractor "auto" picks here, not the word "auto"."""
    return {**cfg, "extractor": select("audio-features", cfg.get("extractor") or "auto", device).name}


def run(ctx, cfg: dict) -> dict:
    src = check_input_file(ctx.video_path(), "input")
    recipe = FeatureRecipe.from_config(cfg, ctx.device)  # fails fast on a missing model
    ctx.use_backend("audio-features", recipe.name)
    info = probe(src)
    wav = decode_audio(src, info=info)  # bad input fails here, before any progress output
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
        recipe.fit(raw, wav)  # utterance and clip mode alike: the training clip's speech frames
        frames, windows = recipe.windows(raw, n_frames)
        task.advance(1, step="features")
        with ctx.write("audio") as f:
            _store(f, wav, frames, windows, recipe, rms_db_per_frame(wav, n_frames))
            f.attrs.update(_attrs(recipe, info, src, duration, n_frames, len(frames), level, silent))
        task.advance(1, step="written")
    summary = {"duration_s": round(duration, 3), "n_frames": n_frames, "extractor": recipe.name,
               "feature_shape": list(windows.shape), "speech_level_dbfs": round(level, 1), "silent": bool(silent)}
    if "voicing" in recipe.extractor.names:
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
        "extractor": recipe.name, "feature_names": json.dumps(ex.names), "duration": duration, "norm": recipe.norm,
        "speech_level_dbfs": float(level), "silent": bool(silent), "source": str(src),
        "source_sample_rate": int(info["audio"].get("sample_rate") or 0),
        "source_channels": str(info["audio"].get("layout") or ""),
        "source_video_fps": float(info["video"]["fps"] or 0.0) if info["video"] else 0.0,
    }
    if hasattr(ex, "model_name"):
        attrs["model"] = ex.model_name
    return attrs
