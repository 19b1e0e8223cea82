"""Head poses and blinks for rendering new audio of T frames.

New audio carries no head motion, so `render` borrows it:
  - "train" / a track.h5: the tracked sequence played forward then backward (ping-pong, the
    usual practice of AD-NeRF / ER-NeRF / GSTalker: no jump where the clip would loop),
    starting at a chosen frame;
  - a pose file (.npz with world_to_cam (T,4,4) and optional blink (T,)), e.g. exported from
    another tool; ping-ponged the same way when shorter than the audio;
  - "still": one frame's pose held for the whole clip (blinks still come from the source
    sequence when it has them, so the eyes stay alive; blink="open" to hold them open).
Every result carries a one-line description for the render's metadata.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl import artifacts
from talkctl.errors import InputError
from talkctl.face.brows import head_uses_brows, read_eye_inputs


@dataclass
class PoseSequence:
    world_to_cam: np.ndarray  # (T,4,4) float32, OpenCV camera = inverse head pose
    blink: np.ndarray  # (T,) float32, 0 open .. 1 closed; (T,E) with the brow raise (face.brows)
    description: str
    source_frames: np.ndarray  # (T,) int: which source frame each output frame came from

    def __len__(self) -> int:
        return len(self.world_to_cam)

    def metadata(self) -> dict:
        return {"pose": self.description, "frames": len(self)}


def ping_pong_indices(n_source: int, n_frames: int, start: int = 0) -> np.ndarray:
    """Indices start, start+1, ..., n-1, n-2, ..., 0, 1, ... (each end shown once per bounce)."""
    if n_source < 1:
        raise InputError("the pose source has no frames; track a video first or give another pose source")
    if not 0 <= start < n_source:
        raise InputError(f"start frame {start} is outside the pose source's 0..{n_source - 1}; choose a frame in range")
    if n_source == 1:
        return np.zeros(n_frames, dtype=np.int64)
    period = 2 * (n_source - 1)
    k = (start + np.arange(n_frames)) % period
    return np.where(k < n_source, k, period - k).astype(np.int64)


def _check(w2c: np.ndarray, blink: np.ndarray | None, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    w2c = np.asarray(w2c, dtype=np.float32)
    if w2c.ndim != 3 or w2c.shape[1:] != (4, 4) or len(w2c) == 0:
        raise InputError(f"{where}: world_to_cam must be (T,4,4), got {w2c.shape}; give a pose file in that layout")
    if not np.isfinite(w2c).all() or not np.allclose(w2c[:, 3], [0, 0, 0, 1], atol=1e-4):
        raise InputError(f"{where}: world_to_cam holds non-finite values or a last row other than [0,0,0,1]; "
                         "give rigid 4x4 world-to-camera matrices")
    if blink is not None:
        blink = np.asarray(blink, dtype=np.float32)
        blink = blink.reshape(-1) if blink.ndim < 2 or blink.shape[1] == 1 else blink  # (T,) or (T,E) with brows
        if len(blink) != len(w2c):
            raise InputError(f"{where}: blink has {len(blink)} values for {len(w2c)} poses; give one per pose")
    return w2c, blink


def from_arrays(world_to_cam, blink, n_frames: int, start: int = 0, mode: str = "pingpong",
                label: str = "poses", blink_mode: str = "source") -> PoseSequence:
    """Poses for n_frames from a source sequence. mode: "pingpong" or "still" (hold frame `start`).
    blink_mode: "source" (follow the source, ping-pong), "open" (all 0)."""
    w2c, bl = _check(world_to_cam, blink, label)
    n = len(w2c)
    if n_frames < 0:
        raise ValueError("n_frames must be >= 0")
    moving = ping_pong_indices(n, n_frames, start)
    if mode == "pingpong":
        idx, what = moving, f"{label} ping-pong from frame {start} ({n} source frames)"
    elif mode == "still":
        idx, what = np.full(n_frames, start, dtype=np.int64), f"{label} frame {start} held still"
    else:
        raise InputError(f"pose mode {mode!r} unknown; use pingpong or still")
    if blink_mode == "open" or bl is None:
        b = np.zeros(n_frames, np.float32)
        what += ", eyes open" if blink_mode == "open" else ", no blink data (eyes open)"
    elif blink_mode == "source":
        b = bl[moving]  # blinks keep moving even when the head is still
    else:
        raise InputError(f"blink mode {blink_mode!r} unknown; use source or open")
    return PoseSequence(w2c[idx].copy(), b.astype(np.float32), what, idx)


def read_pose_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """(world_to_cam, blink or None) from a talkctl track.h5 or an .npz pose file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pose file {path} does not exist; give a track.h5 or an .npz with world_to_cam")
    if path.suffix == ".npz":
        try:
            with np.load(path) as z:
                if "world_to_cam" not in z:
                    raise InputError(f"{path} has no world_to_cam array (has {', '.join(z.files) or 'nothing'}); "
                                     "save one of shape (T,4,4)")
                return _check(z["world_to_cam"], z["blink"] if "blink" in z else None, str(path))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{path} is not a readable .npz ({exc}); give a numpy .npz pose file") from None
    give = "give a run's track.h5 or an .npz pose file"
    track = artifacts.read_track(path, ("world_to_cam",), give=give)
    if track.world_to_cam is None:
        raise InputError(f"{path} holds no world_to_cam; give a run's track.h5 or an .npz pose file")
    return _check(track.world_to_cam, read_eye_inputs(path, give=give), str(path))


def pose_sequence(source: str | os.PathLike, n_frames: int, start: int = 0, run=None,
                  blink_mode: str = "source") -> PoseSequence:
    """Poses for new audio of n_frames.

    source: "train" (this run's track.h5, ping-pong), "still" (this run's frame `start` held),
    or a path: another run directory (its track.h5), a track.h5, or an .npz pose file
    (ping-pong; "still:PATH" holds frame `start` of it). `run` is the RunDir for "train"/"still".
    """
    s = str(source)
    mode = "pingpong"
    if s.startswith("still:"):
        mode, s = "still", s[len("still:"):]
    if s in ("train", "still"):
        if run is None:
            raise InputError(f"pose source {s!r} needs a run directory with a track.h5")
        track = artifacts.read_track(run, ("world_to_cam",))
        eye = read_eye_inputs(run, brows=head_uses_brows(run))
        return from_arrays(track.world_to_cam, eye, n_frames, start, "still" if s == "still" else mode,
                           label="training track", blink_mode=blink_mode)
    p = Path(s).expanduser()
    if p.is_dir():
        p = p / "track.h5"
    w2c, blink = read_pose_file(p)
    return from_arrays(w2c, blink, n_frames, start, mode, label=str(p), blink_mode=blink_mode)
