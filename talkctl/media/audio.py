"""Audio in: any media file with sound -> mono float32 samples, through ffmpeg (the one audio decoder)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from talkctl.errors import InputError, StageError
from talkctl.media.ffmpeg import probe, run_ffmpeg
from talkctl.rundir import check_input_file
from talkctl.timebase import SAMPLE_RATE


def decode_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, info: dict | None = None) -> np.ndarray:
    """The first audio stream of `path` as (S,) float32 mono at `sample_rate`, on the file's timeline
    (a gap in the audio timestamps is silence, so sound stays in step with the video); InputError
    for a missing file, a file without sound or one ffmpeg cannot read. `info`: probe(path), if known."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} does not exist; give an existing audio or video file")
    info = info if info is not None else probe(path)
    if info["audio"] is None:
        what = "video" if info["video"] else "file"
        raise InputError(f"{path} has no audio stream; give a {what} with sound (or a wav/mp3/flac file)")
    try:
        # aresample=async: samples placed by their timestamps, gaps filled with silence. Without it a
        # file joined from clips (audio timestamps jump at each join) drifts ahead of its video.
        raw = run_ffmpeg(["-i", str(path), "-map", "0:a:0", "-vn", "-af", "aresample=async=1:first_pts=0",
                          "-ac", "1", "-ar", str(sample_rate),
                          "-f", "f32le", "-acodec", "pcm_f32le", "-"], f"decode the audio of {path}")
    except StageError as exc:  # unreadable input: the user's file, not a stage failure
        raise InputError(f"{exc.message}; give an audio or video file with sound") from None
    wav = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if wav.size == 0:
        raise InputError(f"{path} has no audio samples; give a file with an audio track")
    if not np.all(np.isfinite(wav)):
        wav = np.nan_to_num(wav, nan=0.0, posinf=1.0, neginf=-1.0)
    return wav


def load_waveform(path: str | os.PathLike) -> np.ndarray:
    """Any media file with sound -> (S,) float32 16 kHz mono; InputError for bad files."""
    return decode_audio(check_input_file(Path(path).expanduser(), "audio"))
