"""ffmpeg: found without a manual install step, always called with argument lists.

The binary comes from imageio-ffmpeg (a registry package that ships it); TALKCTL_FFMPEG
or an ffmpeg on PATH take precedence when set/present so users can bring their own build.
"""
from __future__ import annotations

import wave
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from talkctl.errors import InputError, MissingToolError, StageError


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    env = os.environ.get("TALKCTL_FFMPEG")
    if env:
        if not Path(env).is_file():
            raise MissingToolError(f"TALKCTL_FFMPEG={env} is not a file; point it at an ffmpeg binary or unset it")
        return env
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # imageio-ffmpeg missing or its binary absent for this platform
        found = shutil.which("ffmpeg")
        if found:
            return found
        raise MissingToolError(f"ffmpeg not found ({exc}); `pip install imageio-ffmpeg` or install ffmpeg") from None


def run_ffmpeg(args: list[str], what: str, input_bytes: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run ffmpeg with an argument list; on failure raise StageError with the tail of its stderr."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    proc = subprocess.run(cmd, input=input_bytes, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise StageError(f"ffmpeg failed to {what}: {' | '.join(tail) or 'exit ' + str(proc.returncode)}")
    return proc.stdout


def probe(path: Path) -> dict:
    """Streams of a media file, read from ffmpeg's own stream listing (no ffprobe needed).

    Returns {"duration": s | None, "video": {"width","height","fps"} | None, "audio": {"sample_rate","channels"} | None}.
    """
    import re

    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True)
    text = proc.stderr.decode(errors="replace")
    if "Invalid data found" in text or ("Stream #" not in text):
        raise InputError(f"{path} is not a media file ffmpeg can read; give a video or audio file")
    info: dict = {"duration": None, "video": None, "audio": None}
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if m:
        info["duration"] = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    for line in text.splitlines():
        if "Stream #" not in line:
            continue
        if "Video:" in line and info["video"] is None and "attached pic" not in line:
            wh = re.search(r", (\d{2,5})x(\d{2,5})", line)
            fps = re.search(r"([\d.]+) fps", line) or re.search(r"([\d.]+) tbr", line)
            if wh:
                info["video"] = {"width": int(wh[1]), "height": int(wh[2]), "fps": float(fps[1]) if fps else None}
        elif "Audio:" in line and info["audio"] is None:
            sr = re.search(r"(\d+) Hz", line)
            layout = re.search(r"Hz, ([^,]+)", line)
            info["audio"] = {"sample_rate": int(sr[1]) if sr else None, "layout": layout[1].strip() if layout else None}
    return info


def write_wav(path, samples, sample_rate: int, length: int | None = None) -> Path:
    """16-bit PCM wav of samples in [-1, 1], shaped (n,) or (n, channels); `length`: exactly
    this many sample frames (cut, or padded with silence)."""
    import numpy as np

    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    length = len(x) if length is None else int(length)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        # in blocks of 64k samples: 10 minutes in float64 at once was ~300 MB, and blocks of 1M
        # samples left ~20 MB of freed temporaries on the heap under a render's frame loop
        for i in range(0, min(len(x), length), 1 << 16):
            block = np.clip(x[i:min(i + (1 << 16), length)].astype(np.float64), -1.0, 1.0) * 32767.0
            w.writeframes(block.round().astype("<i2").tobytes())
        if length > len(x):
            w.writeframes(np.zeros((length - len(x), x.shape[1]), "<i2").tobytes())
    return Path(path)

