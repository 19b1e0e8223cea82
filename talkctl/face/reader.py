"""A run's landmark backend applied to any frame (real or rendered), and the mouth opening it sees.

Both sides of a comparison go through the same detector at the same input size: renders smaller
than LANDMARK_SIDE px are upscaled so the detector sees faces of the same size.
"""
from __future__ import annotations

import numpy as np

from talkctl.backends import select
from talkctl.face.crop import crop_pass
from talkctl.face.features import mouth_open
from talkctl.images import resize_square
from talkctl.media.video_in import FrameStream, choose_crop, crop_filter, video_size

LANDMARK_SIDE = 256  # detector input side (px): tiny renders are upscaled to this


class LandmarkReader:
    """The run's landmark backend applied to any frame: (L,2) in the frame's pixels, or None."""

    def __init__(self, backend_name: str, device: str = "cpu"):
        self.backend = select("landmarks", backend_name or "auto", device)
        Detector = self.backend.get()
        self.scheme = Detector.scheme
        self.det = Detector(max_faces=1, video=False, device=device)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        s = rgb.shape[0]
        scale = max(1.0, LANDMARK_SIDE / s)
        img = resize_square(rgb, int(round(s * scale))) if scale > 1 else rgb
        faces = self.det.faces(np.ascontiguousarray(img))
        return None if not faces else np.asarray(faces[0][:, :2], np.float32) / scale

    def close(self) -> None:
        self.det.close()


class MouthTrack:
    """Landmarks of a frame sequence, streamed; mouth opening per frame (nan where no face)."""

    def __init__(self, reader: LandmarkReader):
        self.reader, self.lms = reader, []

    def add(self, frames) -> None:
        for f in frames:
            self.lms.append(self.reader(f))

    @property
    def found(self) -> np.ndarray:
        return np.array([x is not None for x in self.lms], bool)

    def stacked(self) -> np.ndarray:
        L = self.reader.scheme.n
        return np.stack([x if x is not None else np.full((L, 2), np.nan, np.float32) for x in self.lms]) \
            if self.lms else np.zeros((0, L, 2), np.float32)

    def mouth_open(self) -> np.ndarray:
        lm = self.stacked()
        return mouth_open(lm, self.reader.scheme).astype(np.float64) if len(lm) else np.zeros(0)


def video_mouth(video, reader: LandmarkReader, size: int, crop_scale: float = 2.4, crop_shift: float = 0.15,
                progress=None) -> MouthTrack:
    """The mouth of the person in another video, read like a run's frames: cropped around the face
    as `track` crops (same crop_pass and choose_crop), at 25 fps, `size` px square, through
    `reader` (the run's landmark backend). progress: a talkctl.progress task (advance per frame)."""
    width, height = video_size(video, "the drive video")
    cp = crop_pass(video, width, height, reader.det)
    crop = choose_crop(cp["boxes"], width, height, size, crop_scale, crop_shift)
    track = MouthTrack(reader)
    with FrameStream(video, crop_filter(crop, width, height, size), size, size, what="read") as stream:
        for frame in stream:
            track.add([frame])
            if progress is not None:
                progress.advance(1)
    return track
