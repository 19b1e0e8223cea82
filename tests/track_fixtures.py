"""Small generated clips for the track tests: the astronaut photo as a textured plane moved by
known head poses (rendered by the exact homography), plus bad inputs (no face, two faces,
a face that leaves the picture, portrait, tiny, short)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

FPS = 25
FACE_CENTRE_PX = (222.0, 130.0)   # the astronaut's face in the 512x512 photo
METRES_PER_PX = 0.0014            # the face (~130 px in the photo) is ~18 cm
PIVOT_BEHIND = 0.10               # the head turns about a point 10 cm behind the face plane


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def euler_to_matrix(yaw, pitch, roll) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("yxz", np.stack([yaw, pitch, roll], -1), degrees=True).as_matrix()


def write_video(path: Path, frames, width: int, height: int, fps: int = FPS) -> Path:
    """Encode an iterable of (H, W, 3) uint8 frames as H.264 with ffmpeg (argument list)."""
    from talkctl.media.ffmpeg import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{width}x{height}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
           "-crf", "14", "-pix_fmt", "yuv420p", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for f in frames:
        proc.stdin.write(np.ascontiguousarray(f, dtype=np.uint8).tobytes())
    proc.stdin.close()
    assert proc.wait() == 0, "ffmpeg could not encode the test clip"
    return path


def plane_poses(n: int, seed: int = 0, amplitude: float = 1.0):
    """Smooth head rotations (degrees: yaw +-15, pitch +-8, roll +-5) and small translations."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FPS
    ph = rng.uniform(0, 2 * np.pi, 5)
    yaw = amplitude * 15 * np.sin(2 * np.pi * t / 2.0 + ph[0])
    pitch = amplitude * 8 * np.sin(2 * np.pi * t / 1.3 + ph[1])
    roll = amplitude * 5 * np.sin(2 * np.pi * t / 2.7 + ph[2])
    shift = np.stack([0.02 * np.sin(2 * np.pi * t / 3.1 + ph[3]), 0.015 * np.sin(2 * np.pi * t / 2.3 + ph[4]),
                      np.zeros(n)], -1)
    return euler_to_matrix(yaw, pitch, roll), shift


def render_plane(photo, R, t_head, K, width, height, depth, centre_px=FACE_CENTRE_PX, scale=1.0, background=90):
    """The photo as a plane facing the camera at `depth` m, turned by R about a pivot behind it."""
    import cv2

    m = METRES_PER_PX * scale
    A = np.array([[m, 0, -m * centre_px[0]], [0, m, -m * centre_px[1]], [0, 0, 1.0]])
    zp = -PIVOT_BEHIND
    t = np.asarray(t_head, float) + np.array([0, 0, depth])
    H = K @ np.column_stack([R[:, 0], R[:, 1], zp * R[:, 2] + t]) @ A
    return cv2.warpPerspective(photo, H, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(background,) * 3)


def face_clip(path: Path, n: int, width: int, height: int, depth: float = 1.4, focal: float | None = None,
              visible=None, two_faces: bool = False, seed: int = 1) -> Path:
    """A moving astronaut in a `width` x `height` clip. `visible(i) -> bool` hides the face (the
    plane slides out of the picture) on frames where it is False; `two_faces` moves the subject
    to the left and shows a second, smaller astronaut in the right third of the picture."""
    photo = astronaut()
    focal = focal or 700.0 * max(width, height) / 256
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    R, shift = plane_poses(n, seed, amplitude=0.5)
    third = (2 * width) // 3

    def frame(i):
        t = shift[i].copy()
        if two_faces:
            t[0] -= 0.08 * depth
        if visible is not None and not visible(i):
            t[0] += 5.0  # far out of the picture
        img = render_plane(photo, R[i], t, K, width, height, depth)
        if two_faces:
            x_other = (width * 5 / 6 - width / 2) * depth * 2.0 / focal
            other = render_plane(photo, R[n - 1 - i], np.array([x_other, 0.0, 0.0]), K, width, height, depth * 2.0)
            img[:, third:] = other[:, third:]
        return img

    return write_video(path, (frame(i) for i in range(n)), width, height)


def lavfi_clip(path: Path, seconds: float = 2.0, size: str = "256x256") -> Path:
    """A test pattern with no face at all."""
    from talkctl.media.ffmpeg import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate={FPS}", "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    rel = np.einsum("...ij,...kj->...ik", Ra, Rb)
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def render_bump(photo, R, t_head, K, width, height, depth, centre_px=FACE_CENTRE_PX, bulge=0.07,
                axes=(0.075, 0.1), background=90):
    """The photo on a height field: a smooth bump (the face, `bulge` m high, semi-axes `axes` m)
    on the plane, so turning the head shows parallax like a real face. Ray-cast per pixel."""
    import cv2

    m = METRES_PER_PX
    zp = -PIVOT_BEHIND
    t = np.asarray(t_head, float) + np.array([0, 0, depth])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(xx + 0.5 - K[0, 2]) / K[0, 0], (yy + 0.5 - K[1, 2]) / K[1, 1], np.ones_like(xx)], -1)
    # camera centre and rays in head coordinates: X = R^T (x_cam - t)
    o = -R.T @ t
    d = rays @ R  # (R^T r) for each ray
    a, b = axes

    def height_at(X, Y):
        r2 = (X / a) ** 2 + (Y / b) ** 2
        return -bulge * np.clip(1 - r2, 0, None) ** 2  # towards the camera (negative z)

    lam = (zp - o[2]) / d[..., 2]
    for _ in range(12):
        X, Y = o[0] + lam * d[..., 0], o[1] + lam * d[..., 1]
        lam = (zp + height_at(X, Y) - o[2]) / d[..., 2]
    X, Y = o[0] + lam * d[..., 0], o[1] + lam * d[..., 1]
    map_x = (X / m + centre_px[0] - 0.5).astype(np.float32)
    map_y = (Y / m + centre_px[1] - 0.5).astype(np.float32)
    return cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(background,) * 3)


def bump_clip(path: Path, n: int = 60, size: int = 192, focal: float = 230.0, depth: float = 0.6, seed: int = 0):
    """A square clip of the astronaut on a face-like bump, with known head rotations."""
    photo = astronaut()
    R, shift = plane_poses(n, seed)
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    write_video(path, (render_bump(photo, R[i], shift[i], K, size, size, depth) for i in range(n)), size, size)
    return {"R": R, "t": shift, "K": K}
