"""A synthetic talking subject with known ground truth: the built-in demo clip and test fixture.

The face is scikit-image's `astronaut` photo treated as a textured plane in 3D. Each frame
the plane is rotated and translated (smooth, seeded) in front of a pinhole camera and
rendered by the exact homography; the person (cut out once with mediapipe selfie
segmentation) is composited over a fixed backdrop, so a background plate exists. The head
moves with the full pose; the torso follows with a damped pose, blended smoothly at the
neck. The mouth opens with a speech-like envelope (lower lip and jaw move down, a dark
mouth interior appears), the eyes blink, and synthesised speech whose loudness follows the
mouth opening is muxed in as AAC.

Truth file (`<name>_truth.npz`), T = number of frames, frame i shown at time i / fps:
  R (T,3,3), t (T,3)   head pose, world-to-camera (OpenCV axes: x right, y down, z forward).
                       World = the head's canonical frame: at rest R = I and the face plane
                       is fronto-parallel at depth `rest_depth`.
  torso_R, torso_t     the torso's world-to-camera pose in the same world frame (damped).
  K (3,3)              pinhole intrinsics, pixels, principal point at the image centre.
  tex_to_plane (3,3)   maps photo pixel (u, v, 1) to plane coordinates (X, Y, 1), metres;
  plane_z              the plane is Z = plane_z in world, so a photo pixel's world point is
                       (X, Y, plane_z) and the head homography is K [r1 r2 t + plane_z r3] A.
  euler_deg (T,3)      head (yaw about y, pitch about x, roll about z), R = Rz @ Ry @ Rx.
  opening (T,)         mouth opening in [0, 1] (1: lower lip/jaw down by `jaw_drop` x face height).
  blink (T,)           eye closedness in [0, 1] (1: eyelids fully closed).
  audio_rms (T,)       RMS of the audio in a 1/fps window centred on each frame's time.
  landmarks_tex (478,2) mediapipe face-mesh landmarks found on the still photo (photo pixels).
  landmarks_2d (T,478,2) those landmarks projected by the head homography (image pixels;
                       ignores the mouth and eyelid deformation).
  times (T,), fps, size, sample_rate, seed, face_height_px (rest face height in pixels).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkctl.errors import StageError, UsageError
from talkctl.media.ffmpeg import ffmpeg_exe, write_wav
from talkctl.synthetic.audio import SUBJECT_VOICE, Voice, make_audio
from talkctl.synthetic.face import (
    FACE_HEIGHT_M,
    PIVOT_BEHIND_M,
    REST_DEPTH_M,
    _FaceRig,
    _photo,
    _smooth_signal,
    _smoothstep,
    blink_curve,
    euler_to_matrix,
)


@dataclass
class SyntheticSubject:
    video_path: Path
    truth_path: Path
    fps: int
    size: int
    sample_rate: int
    K: np.ndarray                 # (3,3)
    R: np.ndarray                 # (T,3,3) head world-to-camera rotation
    t: np.ndarray                 # (T,3)   head world-to-camera translation, metres
    opening: np.ndarray           # (T,)
    blink: np.ndarray             # (T,)
    audio_rms: np.ndarray         # (T,)
    torso_R: np.ndarray = field(repr=False, default=None)
    torso_t: np.ndarray = field(repr=False, default=None)
    landmarks_2d: np.ndarray = field(repr=False, default=None)

    @property
    def n_frames(self) -> int:
        return len(self.opening)

    @classmethod
    def load(cls, truth_path: Path) -> "SyntheticSubject":
        """Reads a truth file written by `make_subject` (the video is its sibling .mp4)."""
        truth_path = Path(truth_path)
        z = np.load(truth_path)
        name = truth_path.name[: -len("_truth.npz")]
        return cls(truth_path.with_name(name + ".mp4"), truth_path, int(z["fps"]),
                   int(z["size"]), int(z["sample_rate"]), z["K"], z["R"], z["t"],
                   z["opening"], z["blink"], z["audio_rms"], z["torso_R"], z["torso_t"],
                   z["landmarks_2d"])


def _backdrop(size: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed studio-like backdrop: soft vertical gradient, low-frequency mottling, vignette."""
    import cv2

    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    top = np.array([0.46, 0.52, 0.60])
    bottom = np.array([0.30, 0.35, 0.42])
    img = top + (bottom - top) * yy[..., None]
    # mottling mostly in brightness, a little in hue, like a painted cloth backdrop
    coarse = rng.standard_normal((7, 7, 3)).astype(np.float32)
    coarse = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    coarse = coarse.mean(-1, keepdims=True) + 0.25 * (coarse - coarse.mean(-1, keepdims=True))
    fine = cv2.resize(rng.standard_normal((40, 40)).astype(np.float32), (size, size),
                      interpolation=cv2.INTER_CUBIC)
    img = img + 0.04 * coarse + 0.012 * fine[..., None]
    vign = 1.0 - 0.25 * ((xx - 0.5) ** 2 + (yy - 0.45) ** 2)
    return np.clip(img * vign[..., None], 0, 1).astype(np.float32)


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 matrix by its adjugate (np.linalg.inv costs ~0.5 ms a call here)."""
    c = np.cross(m[1], m[2]), np.cross(m[2], m[0]), np.cross(m[0], m[1])
    adj = np.stack(c, axis=1)
    return adj / float(m[0] @ c[0])


def _plane_homography(K, R, t, tex_to_plane, plane_z):
    """Photo pixel -> image pixel homography of the plane Z = plane_z under pose (R, t)."""
    M = np.stack([R[:, 0], R[:, 1], t + plane_z * R[:, 2]], axis=1)
    return K @ M @ tex_to_plane


@dataclass
class _Camera:
    """The pinhole camera and the photo's plane in the head's world frame."""
    K: np.ndarray              # (3,3) intrinsics
    tex_to_plane: np.ndarray   # photo pixel -> plane (X, Y, 1), metres
    plane_z: float
    t_rest: np.ndarray         # (3,) head translation at rest
    focal: float
    metres_per_px: float       # photo pixel size on the plane
    pivot_v: float             # photo row of the rotation pivot (jaw level)


def _camera(photo, size: int, face_frac: float) -> _Camera:
    # the photo's face centre sits `REST_DEPTH_M` in front of the camera
    s = FACE_HEIGHT_M / photo.face_px                      # metres per photo pixel
    f = face_frac * size * REST_DEPTH_M / FACE_HEIGHT_M
    K = np.array([[f, 0, size / 2.0], [0, f, size / 2.0], [0, 0, 1.0]])
    pu, pv = photo.face_center[0], photo.face_center[1] + 0.3 * photo.face_px  # pivot (jaw level)
    tex_to_plane = np.array([[s, 0, -pu * s], [0, s, -pv * s], [0, 0, 1.0]])
    # at rest the face centre is at 40% of the frame height
    cy_img = 0.40 * size
    y_face = (photo.face_center[1] - pv) * s               # face centre's world Y
    z_rest = REST_DEPTH_M
    t_rest = np.array([0.0, (cy_img - size / 2.0) * z_rest / f - y_face, z_rest + PIVOT_BEHIND_M])
    return _Camera(K, tex_to_plane, -PIVOT_BEHIND_M, t_rest, f, s, pv)


def _motion(ts: np.ndarray, cam: _Camera, photo, rng: np.random.Generator, yaw_deg: float, pitch_deg: float,
            roll_deg: float, shift_m: float, torso_follow: float) -> dict[str, np.ndarray]:
    """Smooth seeded head motion and the torso's damped copy of it (rotating about the chest)."""
    yaw = np.deg2rad(_smooth_signal(ts, yaw_deg, rng))
    pitch = np.deg2rad(_smooth_signal(ts, pitch_deg, rng))
    roll = np.deg2rad(_smooth_signal(ts, roll_deg, rng, freqs=(0.08, 0.35)))
    dt = np.stack([_smooth_signal(ts, shift_m, rng), _smooth_signal(ts, shift_m, rng),
                   _smooth_signal(ts, 2 * shift_m, rng, freqs=(0.06, 0.3))], -1)
    Rt = euler_to_matrix(torso_follow * yaw, 0.5 * torso_follow * pitch, torso_follow * roll)
    chest = np.array([0.0, (photo.face_center[1] + 1.4 * photo.face_px - cam.pivot_v) * cam.metres_per_px,
                      cam.plane_z])
    return {"R": euler_to_matrix(yaw, pitch, roll), "t": cam.t_rest[None] + dt, "torso_R": Rt,
            "torso_t": cam.t_rest[None] + 2 * torso_follow * dt + chest[None] - Rt @ chest,
            "euler_deg": np.rad2deg(np.stack([yaw, pitch, roll], -1))}


@dataclass
class _Look:
    """What every frame is rendered from: the (prefiltered) photo, the rig, the backdrop, and
    the head/torso blend ellipse."""
    size: int
    pix: np.ndarray        # (3, size*size) homogeneous output pixel positions
    rig: object
    tex: np.ndarray        # RGBA photo, prefiltered to about one texel per output pixel
    tex_scale: float
    interp: int
    backdrop: np.ndarray
    head_centre: np.ndarray
    head_radii: np.ndarray


def _look(photo, cam: _Camera, size: int, jaw_drop: float, rng_back: np.random.Generator) -> _Look:
    import cv2

    # photo prefiltered to about one texel per output pixel (no aliasing at small sizes)
    k = cam.focal * cam.metres_per_px / REST_DEPTH_M
    tex = np.dstack([photo.rgb, np.round(photo.alpha * 255.0).astype(np.uint8)])
    tex_scale = 1.0
    if k < 0.9:
        tex_scale = k
        tex = cv2.resize(tex, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_CUBIC if k > 1.2 else cv2.INTER_LINEAR
    backdrop = _backdrop(size, rng_back)
    # head/torso blend weight: an ellipse around the head and hair, fading out at the neck
    hc = photo.face_center + np.array([0.0, -0.1 * photo.face_px])
    hr = np.array([0.8, 1.0]) * photo.face_px
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    pix = np.stack([xx.ravel(), yy.ravel(), np.ones(size * size, np.float32)])
    return _Look(size, pix, _FaceRig(photo, jaw_drop), tex, tex_scale, interp, backdrop, hc, hr)


def _encode(video_path: Path, frames, n_frames: int, samples: np.ndarray, size: int, fps: int,
            sample_rate: int, crf: int) -> None:
    """Pipe n_frames RGB frames (an iterator) and the audio through x264/AAC into video_path,
    written as `.partial.mp4` and renamed when complete."""
    part_video = video_path.with_name(f"{video_path.stem}.partial.mp4")
    with tempfile.TemporaryDirectory(prefix="talkctl-synth-") as tmp:
        wav = Path(tmp) / "audio.wav"
        write_wav(wav, samples, sample_rate)
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}",
               "-framerate", str(fps), "-i", "pipe:0", "-i", str(wav),
               "-map", "0:v:0", "-map", "1:a:0",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "64k", "-ar", str(sample_rate), "-ac", "1",
               "-movflags", "+faststart", "-f", "mp4", str(part_video)]
        err_path = Path(tmp) / "ffmpeg.err"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
            try:
                for _ in range(n_frames):
                    proc.stdin.write(next(frames).tobytes())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            except BaseException:
                proc.kill()
                proc.wait()
                part_video.unlink(missing_ok=True)
                raise
            rc = proc.wait()
        if rc != 0:
            tail = err_path.read_text(errors="replace").strip().splitlines()[-5:]
            part_video.unlink(missing_ok=True)
            raise StageError(f"ffmpeg failed writing {video_path.name} (exit {rc}): "
                             + " | ".join(tail))
    os.replace(part_video, video_path)


def make_subject(out_dir: Path, seconds: float = 8.0, size: int = 256, fps: int = 25,
                 seed: int = 0, sample_rate: int = 16000, out_name: str = "subject", *,
                 face_frac: float = 0.36, yaw_deg: float = 9.0, pitch_deg: float = 8.0,
                 roll_deg: float = 5.0, shift_m: float = 0.012, jaw_drop: float = 0.08,
                 torso_follow: float = 0.25, voice: Voice = SUBJECT_VOICE,
                 crf: int = 18) -> SyntheticSubject:
    """Renders the synthetic talking subject: `<out_name>.mp4` and `<out_name>_truth.npz`.

    face_frac: forehead-to-chin height as a fraction of the frame height at rest.
    yaw/pitch/roll_deg, shift_m: bounds of the head's rotation (degrees) and x/y
    translation (metres; z moves by twice as much). jaw_drop: lower-lip/jaw drop at
    opening 1, as a fraction of face height. torso_follow: fraction of the head's rotation
    (and 2x that of its translation) that the torso follows. crf: x264 quality.
    """
    if seconds <= 0 or size < 64 or size % 2 or fps <= 0:
        raise UsageError("make_subject needs seconds > 0, an even size >= 64 (yuv420p) "
                         "and fps > 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_frames = int(round(seconds * fps))
    ts = np.arange(n_frames) / fps

    photo = _photo()
    audio = make_audio(n_frames / fps, sample_rate, seed, voice=voice, fps=fps)
    cam = _camera(photo, size, face_frac)
    motion = _motion(ts, cam, photo, np.random.default_rng([seed, 2]), yaw_deg, pitch_deg, roll_deg, shift_m,
                     torso_follow)
    R, t, Rt, tt = motion["R"], motion["t"], motion["torso_R"], motion["torso_t"]
    blink = blink_curve(ts, np.random.default_rng([seed, 3])).astype(np.float32)
    opening = audio.opening
    look = _look(photo, cam, size, jaw_drop, np.random.default_rng([seed, 4]))

    lm_h = np.concatenate([photo.landmarks, np.ones((len(photo.landmarks), 1))], 1)
    landmarks_2d = np.empty((n_frames, len(photo.landmarks), 2), np.float32)

    def frames():
        for i in range(n_frames):
            Hh = _plane_homography(cam.K, R[i], t[i], cam.tex_to_plane, cam.plane_z)
            Ht = _plane_homography(cam.K, Rt[i], tt[i], cam.tex_to_plane, cam.plane_z)
            p = lm_h @ Hh.T
            landmarks_2d[i] = p[:, :2] / p[:, 2:]
            yield _render_frame(look, Hh, Ht, float(opening[i]), float(blink[i]))

    video_path = out_dir / f"{out_name}.mp4"
    truth_path = out_dir / f"{out_name}_truth.npz"
    _encode(video_path, frames(), n_frames, audio.samples, size, fps, sample_rate, crf)

    truth = dict(**motion, K=cam.K, tex_to_plane=cam.tex_to_plane, plane_z=np.float64(cam.plane_z),
                 opening=opening.astype(np.float32), blink=blink, audio_rms=audio.rms,
                 landmarks_tex=photo.landmarks, landmarks_2d=landmarks_2d, times=ts,
                 fps=np.int64(fps), size=np.int64(size), sample_rate=np.int64(sample_rate),
                 seed=np.int64(seed), face_height_px=np.float64(cam.focal * FACE_HEIGHT_M / REST_DEPTH_M),
                 jaw_drop=np.float64(jaw_drop))
    part_truth = out_dir / f"{out_name}_truth.partial.npz"
    with open(part_truth, "wb") as fh:
        np.savez(fh, **truth)
    os.replace(part_truth, truth_path)
    return SyntheticSubject(video_path, truth_path, fps, size, sample_rate, cam.K, R, t,
                            truth["opening"], blink, audio.rms, Rt, tt, landmarks_2d)


def _render_frame(look: _Look, Hh, Ht, opening: float, blink: float) -> np.ndarray:
    """One RGB uint8 frame: backward-map every output pixel to a photo position (head and
    torso homographies blended at the neck, then the mouth/eyelid rig), sample, composite."""
    import cv2

    pix, size, hc, hr = look.pix, look.size, look.head_centre, look.head_radii
    qh = _inv3(Hh).astype(np.float32) @ pix
    qh = qh[:2] / qh[2]
    qt = _inv3(Ht).astype(np.float32) @ pix
    qt = qt[:2] / qt[2]
    r = np.sqrt(((qh[0] - hc[0]) / hr[0]) ** 2 + ((qh[1] - hc[1]) / hr[1]) ** 2)
    w = 1.0 - _smoothstep(1.0, 1.35, r)
    qx = qt[0] + w * (qh[0] - qt[0])
    qy = qt[1] + w * (qh[1] - qt[1])
    sx, sy, inner = look.rig.warp(qx, qy, opening, blink)
    m1, m2 = cv2.convertMaps((sx * look.tex_scale).reshape(size, size),
                             (sy * look.tex_scale).reshape(size, size), cv2.CV_16SC2)
    rgba = cv2.remap(look.tex, m1, m2, look.interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    rgb = rgba[..., :3].astype(np.float32) * (1.0 / 255.0)
    if inner is not None:
        sel, a, depth = inner
        # dark mouth interior: near black under the upper teeth, dark red towards the tongue
        col = np.array([0.07, 0.025, 0.03]) + np.array([0.22, 0.06, 0.06]) * depth[:, None] ** 1.5
        flat = rgb.reshape(-1, 3)
        flat[sel] = flat[sel] * (1 - a[:, None]) + col * a[:, None]
    alpha = rgba[..., 3:].astype(np.float32) * (1.0 / 255.0)
    out = look.backdrop + alpha * (rgb - look.backdrop)
    out *= 255.0
    out += 0.5
    return out.astype(np.uint8)
