"""Stand-in for the `track` stage in parse tests and benchmarks: frames.h5 + track.h5 in the
documented layout (CORE_API.md), written through talkctl.artifacts with a made-up fingerprint.

Used until the real track stage is on main; `track_clip` runs mediapipe face mesh directly.
"""
from __future__ import annotations

import subprocess

import numpy as np

from talkctl import artifacts
from talkctl.rundir import RunDir


def write_frames_track(run: RunDir, frames: np.ndarray, landmarks2d: np.ndarray, *, valid=None,
                       fps: int = 25, tag: str = "fake", inputs: dict | None = None) -> None:
    """frames (T,S,S,3) uint8, landmarks2d (T,L,2) crop pixels."""
    T, S = frames.shape[0], frames.shape[1]
    L = landmarks2d.shape[1]
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    common = dict(producer="track v0 (test stand-in)", config={"tag": tag}, inputs=inputs or {})
    with artifacts.write(run, "frames", fingerprint=f"frames-{tag}", **common) as f:
        d = f.create_dataset("frames", (T, S, S, 3), np.uint8, **artifacts.frame_chunks((T, S, S, 3)))
        for t in range(T):
            d[t] = frames[t]
        f.attrs.update(fps=fps, size=S, crop=[0, 0, S], source_size=[S, S])
    lm = landmarks2d.astype(np.float32)
    lo, hi = lm.min(1), lm.max(1)
    with artifacts.write(run, "track", fingerprint=f"track-{tag}", **common) as f:
        f["landmarks2d"] = lm
        f["landmarks3d"] = np.concatenate([lm, np.zeros((T, L, 1), np.float32)], -1)
        f["valid"] = valid
        f["world_to_cam"] = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
        f["intrinsics"] = np.array([[S, 0, S / 2], [0, S, S / 2], [0, 0, 1]], np.float32)
        f["canonical_shape"] = np.zeros((L, 3), np.float32)
        for k in ("reproj_error", "blink", "eye_area", "mouth_open"):
            f[k] = np.zeros(T, np.float32)
        f["lip_box"] = np.zeros((T, 4), np.int32)
        f["face_box"] = np.concatenate([lo, hi], 1).astype(np.int32)
        f.attrs.update(landmark_backend="mediapipe", n_landmarks=L, rigid_indices=np.arange(4), fps=fps, size=S)


def read_clip(path, n_frames: int, size: int = 512, crop: tuple[int, int, int] | None = None,
              start: float = 0.0) -> np.ndarray:
    """Decode n_frames at 25 fps, square-cropped (x0, y0, side) and scaled to size."""
    import imageio_ffmpeg

    vf = "fps=25," + (f"crop={crop[2]}:{crop[2]}:{crop[0]}:{crop[1]}," if crop else "") + f"scale={size}:{size}"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-ss", str(start), "-i", str(path), "-vf", vf,
           "-frames:v", str(n_frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, size, size, 3)


def face_mesh(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mediapipe face mesh (478 points, video mode) -> landmarks (T,478,2) px, valid (T,)."""
    import mediapipe as mp

    T, S = frames.shape[:2]
    out = np.zeros((T, 478, 2), np.float32)
    valid = np.zeros(T, bool)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as fm:
        for t, fr in enumerate(frames):
            res = fm.process(fr)
            if res.multi_face_landmarks:
                pts = res.multi_face_landmarks[0].landmark
                out[t] = [(p.x * S, p.y * S) for p in pts]
                valid[t] = True
            elif t > 0:
                out[t] = out[t - 1]
    return out, valid


def track_clip(run: RunDir, path, n_frames: int, size: int = 512, crop=None, start: float = 0.0) -> np.ndarray:
    frames = read_clip(path, n_frames, size, crop, start)
    lm, valid = face_mesh(frames)
    write_frames_track(run, frames, lm, valid=valid, tag=f"clip-{n_frames}")
    return frames
