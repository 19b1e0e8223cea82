"""The eye inputs of an audio-driven head: blink and brow raise per frame.

Audio says little about the brows, yet on a speaker who raises them (french_50s) the brow band
is the worst-rendered part of the face (22.9 dB on the held-out frames, 13 % of the whole
frame's squared error from 3 % of its pixels) and the forehead's wrinkles follow them. So,
like the blink (RAD-NeRF / ER-NeRF's AU45), the brows come from the pose source: the tracked
frames when the head is self-driven, the training clip's ping-pong for new audio.
Opt-in (train-deform brows=true): not yet measured on a real clip; blink-only heads read the
first column and are unchanged.

brow raise = the vertical gap between the eye corners and the brows in the canonical (pose-free)
head space (face.canonical), per subject: 0 at the median gap, 1 at its 95th percentile,
negative when the brows come down (a frown); clipped to [-1, 2].

    eye = read_eye_inputs(run)                 # (T, 2) [blink, brow]; (T, 1) without landmarks
    eye = read_eye_inputs(run, slice(a, b))    # frames a..b-1 (normalised over the whole clip)
    eye = read_eye_inputs(run, brows=head_uses_brows(run))   # blink alone for a blink-only head

The brow raise lifts every landmark of the clip into the canonical head (~0.4 s and ~110 MB for
50 s of video), so drives of a blink-only head (the default) read the blink alone.
"""
from __future__ import annotations

import json

import numpy as np

from talkctl import artifacts
from talkctl.errors import ArtifactError

# brow points and the eye corners they are measured from, per landmark layout
BROWS = {478: ((70, 63, 105, 66, 107, 336, 296, 334, 293, 300), (33, 133, 362, 263)),
         468: ((70, 63, 105, 66, 107, 336, 296, 334, 293, 300), (33, 133, 362, 263)),
         68: (tuple(range(17, 27)), (36, 39, 42, 45))}
RAISED_PERCENTILE = 95
BROW_RANGE = (-1.0, 2.0)


def brow_gap(points: np.ndarray, n_landmarks: int) -> np.ndarray:
    """(T,) eye-corner to brow height in canonical units (y points to the chin)."""
    brows, eyes = BROWS[int(n_landmarks)]
    return (points[:, list(eyes), 1].mean(1) - points[:, list(brows), 1].mean(1)).astype(np.float32)


def brow_raise(points: np.ndarray, n_landmarks: int, valid: np.ndarray | None = None) -> np.ndarray:
    """(T,) brow raise, normalised per subject (module doc)."""
    gap = brow_gap(points, n_landmarks)
    ref = gap[valid] if valid is not None and np.any(valid) else gap
    mid = float(np.median(ref))
    span = max(float(np.percentile(ref, RAISED_PERCENTILE)) - mid, 1e-6)
    return np.clip((gap - mid) / span, *BROW_RANGE).astype(np.float32)


def head_uses_brows(run) -> bool:
    """Whether the run's trained head takes the brow raise (deform.h5's field has 2+ eye inputs)."""
    attrs = artifacts.read_attrs(run, "deform") or {}
    return int(json.loads(attrs.get("field_spec", "{}")).get("eye_dim", 1)) > 1


def read_eye_inputs(source, frames: slice | None = None, give: str = "", brows: bool = True) -> np.ndarray:
    """(T, 2) float32 [blink, brow raise] of a run or a track.h5 path; (T, 1) blink alone with
    brows=False, or when the track has no landmarks of a known layout (a head trained with brows
    then keeps them neutral)."""
    from talkctl.face.canonical import TRACK_FIELDS, canonical_landmarks

    fields = ("blink",) + (TRACK_FIELDS if brows else ())
    track = artifacts.read_track(source, tuple(dict.fromkeys(fields)), give=give)
    if track.blink is None:
        raise ArtifactError(f"{source}: track.h5 has no blink; rerun track")
    blink = np.asarray(track.blink, np.float32)
    cut = slice(None) if frames is None else frames
    if not brows:
        return blink[cut, None]
    try:
        lm = canonical_landmarks(track)
        if lm.n not in BROWS:
            raise KeyError(f"no brow points for {lm.n} landmarks")
    except (KeyError, ValueError):
        return blink[cut, None]
    return np.stack([blink, brow_raise(lm.points, lm.n, lm.valid)], 1)[cut]

