"""Where the subject's face is in a video: the crop pass shared by `track` and eval's
drive-video figure (which crops another person's video the way track cropped the run's).

    cp = crop_pass(video, width, height, detector)      # {"boxes", "samples", "with_face", "multi", "centre"}
    crop = media.video_in.choose_crop(cp["boxes"], width, height, size)
"""
from __future__ import annotations

import numpy as np

from talkctl.errors import InputError, StageError
from talkctl.media.video_in import FrameStream, sample_filter


def _subject_boxes(samples: list[list[tuple]], width: int, height: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The subject's box in each sample that saw a face: first the largest, most central face
    of each sample, then in every sample the face nearest to their median position.
    Returns (boxes, number of samples with more than one face, subject centre)."""
    with_face = [s for s in samples if s]
    half_diag = 0.5 * np.hypot(width, height)

    def prominence(b) -> float:  # area, halved for a face in a corner
        d = np.hypot((b[0] + b[2]) / 2 - width / 2, (b[1] + b[3]) / 2 - height / 2)
        return (b[2] - b[0]) * (b[3] - b[1]) * (1.0 - 0.5 * min(1.0, d / half_diag))

    first = [max(s, key=prominence) for s in with_face]
    centre = np.median([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in first], axis=0)
    boxes = [min(s, key=lambda b: np.hypot((b[0] + b[2]) / 2 - centre[0], (b[1] + b[3]) / 2 - centre[1]))[:4]
             for s in with_face]
    multi = sum(len(s) > 1 for s in with_face)
    return np.array(boxes, dtype=np.float64), multi, centre


def crop_pass(video, width: int, height: int, detector, sample_every: int = 10) -> dict:
    """Face boxes of every `sample_every`-th frame (at reduced resolution) -> the subject's boxes in
    source pixels; InputError / StageError when the video has no frames or no face."""
    filters, sw, sh, (fx, fy) = sample_filter(width, height, sample_every)
    samples = []
    with FrameStream(video, filters, sw, sh, what="sample frames of") as stream:
        for frame in stream:
            samples.append([(b[0] * fx, b[1] * fy, b[2] * fx, b[3] * fy, b[4]) for b in detector.boxes(frame)])
    n_face = sum(bool(s) for s in samples)
    if not samples:
        raise InputError(f"{video} has no decodable video frames; give a video of one person talking")
    if n_face == 0:
        raise StageError(f"no face found in any of {len(samples)} sampled frames of {video.name}; "
                         "talkctl needs a video of one person facing the camera")
    boxes, multi, centre = _subject_boxes(samples, width, height)
    return {"boxes": boxes, "samples": len(samples), "with_face": n_face, "multi": multi, "centre": centre}


def pick_face(faces: list[np.ndarray], near: np.ndarray, max_jump: float | None) -> np.ndarray | None:
    """The face nearest to where the subject was; with other people in the picture, a face
    farther than max_jump px is someone else (the subject is then missing in this frame)."""
    face = min(faces, key=lambda f: float(np.linalg.norm(f[:, :2].mean(0) - near)))
    if max_jump is not None and np.linalg.norm(face[:, :2].mean(0) - near) > max_jump:
        return None
    return face
