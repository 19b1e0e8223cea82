"""frames.h5 + track.h5 written directly (documented layout, made-up fingerprints) for the parse
tests: clips whose truth is exact (person masks and background known pixel for pixel, no video
coding), and malformed or stale inputs. `track_clip` is a quick stand-in tracker (mediapipe face
mesh, fixed square crop) that bench_parse.py uses for partial clips (--frames); whole clips
go through the real `track` stage.
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
    valid = np.ones(T, bool) if valid is None else np.asarray(valid, bool)
    common = dict(producer="track v0 (test stand-in)", config={"tag": tag}, inputs=inputs or {})
    with artifacts.write(run, "frames", fingerprint=f"frames-{tag}", **common) as f:
        d = f.create_dataset("frames", (T, S, S, 3), np.uint8, **artifacts.frame_chunks((T, S, S, 3)))
        for t in range(T):
            d[t] = frames[t]
        f.attrs.update(fps=fps, size=S, crop=[0, 0, S], source_size=[S, S])
    write_track(run, landmarks2d, valid, S, fps, f"track-{tag}", common)


def write_track(run: RunDir, landmarks2d, valid, size: int, fps: int, fingerprint: str, common: dict) -> None:
    """track.h5 with these landmarks (T,L,2), identity poses and zero features."""
    lm = np.asarray(landmarks2d, np.float32)
    T, L = lm.shape[:2]
    lo, hi = lm.min(1), lm.max(1)
    with artifacts.write(run, "track", fingerprint=fingerprint, **common) as f:
        f["landmarks2d"] = lm
        f["landmarks3d"] = np.concatenate([lm, np.zeros((T, L, 1), np.float32)], -1)
        f["valid"] = np.asarray(valid)
        f["world_to_cam"] = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
        f["intrinsics"] = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], np.float32)
        f["canonical_shape"] = np.zeros((L, 3), np.float32)
        for k in ("reproj_error", "blink", "eye_area", "mouth_open"):
            f[k] = np.zeros(T, np.float32)
        f["lip_box"] = np.zeros((T, 4), np.int32)
        f["face_box"] = np.concatenate([lo, hi], 1).astype(np.int32)
        f.attrs.update(landmark_backend="mediapipe", n_landmarks=L, rigid_indices=np.arange(4), fps=fps, size=size)


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


def track_clip(run: RunDir, path, n_frames: int | None = None, size: int = 512, crop=None, start: float = 0.0) -> int:
    """Decode (streamed), run face mesh and write frames.h5 / track.h5; returns the frame count.
    Memory stays flat: frames go to disk as they are decoded."""
    import imageio_ffmpeg
    import mediapipe as mp

    vf = "fps=25," + (f"crop={crop[2]}:{crop[2]}:{crop[0]}:{crop[1]}," if crop else "") + f"scale={size}:{size}"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-ss", str(start), "-i", str(path), "-vf", vf,
           *(["-frames:v", str(n_frames)] if n_frames else []), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    nbytes = size * size * 3
    lms, valid = [], []
    common = dict(producer="track v0 (test stand-in)", config={"tag": f"clip-{n_frames}"}, inputs={})
    with artifacts.write(run, "frames", fingerprint=f"frames-clip-{n_frames}", **common) as f, \
            mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as fm:
        d = f.create_dataset("frames", (0, size, size, 3), np.uint8, maxshape=(None, size, size, 3),
                             **artifacts.frame_chunks((1, size, size, 3)))
        while True:
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                break
            fr = np.frombuffer(buf, np.uint8).reshape(size, size, 3)
            t = d.shape[0]
            d.resize(t + 1, axis=0)
            d[t] = fr
            res = fm.process(fr)
            if res.multi_face_landmarks:
                lms.append([(p.x * size, p.y * size) for p in res.multi_face_landmarks[0].landmark])
                valid.append(True)
            else:
                lms.append(lms[-1] if lms else np.zeros((478, 2)))
                valid.append(False)
        f.attrs.update(fps=25, size=size, crop=[0, 0, size], source_size=[size, size])
    proc.wait()
    write_track(run, lms, valid, size, 25, f"track-clip-{n_frames}", common)
    return len(lms)


def astronaut_clip(n_frames: int = 24, size: int = 192, seed: int = 0):
    """A synthetic clip with a known background: the astronaut photo's person (cut out with
    selfie segmentation) sliding left and right over a generated background.

    Returns frames (T,S,S,3) uint8, landmarks (T,478,2), person masks (T,S,S) bool, background (S,S,3).
    """
    import cv2
    import mediapipe as mp
    from skimage import data

    img = data.astronaut()[0:330, 20:350]  # head and shoulders, without the helmet on her right
    lm, valid = face_mesh(np.ascontiguousarray(cv2.resize(img, (512, 512))[None]))
    assert valid[0], "face mesh found no face in skimage's astronaut"
    lm[0] *= img.shape[0] / 512
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        cut = seg.process(np.ascontiguousarray(img)).segmentation_mask > 0.5
    # the person fills ~75% of the frame, bottom-aligned; slides +-18% of the width
    scale = 0.75 * size / img.shape[0]
    side = int(round(img.shape[0] * scale))
    small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    small_cut = cv2.resize(cut.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST).astype(bool)
    # a calm room: a shaded wall, a few muted panels and some fine texture
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.default_rng(seed)
    wall = np.array([150, 140, 125], np.float32)
    bg = wall * (0.75 + 0.3 * (1 - yy[..., None])) + 8 * np.sin(xx * 40)[..., None]
    for _ in range(5):
        x0, y0 = rng.integers(0, size * 3 // 4, 2)
        w, h = rng.integers(size // 8, size // 3, 2)
        bg[y0:y0 + h, x0:x0 + w] = rng.integers(60, 200, 3)
    bg += rng.normal(0, 3, bg.shape)
    bg = np.clip(bg, 0, 255).astype(np.uint8)
    frames = np.repeat(bg[None], n_frames, 0)
    masks = np.zeros((n_frames, size, size), bool)
    lms = np.zeros((n_frames, 478, 2), np.float32)
    y0 = size - side
    for t in range(n_frames):
        dx = int(round(0.18 * size * np.sin(2 * np.pi * t / n_frames))) + (size - side) // 2
        xa, xb = max(dx, 0), min(dx + side, size)
        sub = small_cut[:, xa - dx:xb - dx]
        frames[t, y0:, xa:xb][sub] = small[:, xa - dx:xb - dx][sub]
        masks[t, y0:, xa:xb] = sub
        lms[t] = lm[0] * scale + (dx, y0)
    return frames, lms, masks, bg
