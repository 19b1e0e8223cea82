"""Test-only readers of what talkctl writes: decoded frames of a video, the tags of an mp4."""
from __future__ import annotations

from pathlib import Path

from talkctl.media.ffmpeg import run_ffmpeg
from talkctl.media.video_in import FrameStream, video_size
from talkctl.timebase import FPS


def read_video_frames(path, fps: int | None = FPS):
    """Yield uint8 RGB frames (H,W,3) one at a time, resampled to `fps` (None: native rate)."""
    w, h = video_size(path)
    with FrameStream(Path(path), f"fps={fps}" if fps else None, w, h, what="read") as stream:
        yield from stream


def read_tags(path: Path) -> dict:
    """The container tags of an mp4 (what render wrote), via ffmpeg's ffmetadata output."""
    text = run_ffmpeg(["-i", str(path), "-f", "ffmetadata", "-"], f"read the metadata of {path}").decode(errors="replace")
    tags = {}
    for line in text.splitlines()[1:]:
        if "=" in line and not line.startswith(";"):
            k, v = line.split("=", 1)
            tags[k] = v.replace("\\=", "=").replace("\\;", ";").replace("\\#", "#").replace("\\\\", "\\")
    return tags
