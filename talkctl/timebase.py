"""The one timebase every stage shares: 25 video frames/s, 16 kHz mono audio, and the held-out split.

Video frame i covers [i/25, (i+1)/25) s, i.e. waveform samples [640 i, 640 (i+1)); a clip of S
samples has S // 640 frames. The last 1/11 of a clip's frames is held out from training (the
AD-NeRF / ER-NeRF protocol): frames [int(n * 10 / 11), n) are the test set.
"""
from __future__ import annotations

import numpy as np

from talkctl.errors import StageError

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640


def n_video_frames(n_samples: int) -> int:
    return n_samples // SAMPLES_PER_FRAME


def held_out_start(n_frames: int) -> int:
    """First held-out frame: frames [int(n * 10 / 11), n) are never trained on."""
    return int(n_frames * 10 / 11)


MIN_HELD_OUT_FRAMES = 3  # the fewest held-out frames a temporal measure (a correlation) can use
SHORT_CLIP_SECONDS = 20.0  # below this, training learns little and evaluation says little: warned


def min_clip_frames() -> int:
    """The shortest clip whose held-out part has MIN_HELD_OUT_FRAMES frames."""
    n = MIN_HELD_OUT_FRAMES + 1
    while n - held_out_start(n) < MIN_HELD_OUT_FRAMES:
        n += 1
    return n


def split_frames(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) frame indices; the held-out part has at least 1 frame."""
    start = min(held_out_start(n_frames), n_frames - 1)
    if start < 1:
        raise StageError(f"clip has {n_frames} frame(s): too short to train; use a longer video")
    idx = np.arange(n_frames)
    return idx[:start], idx[start:]
