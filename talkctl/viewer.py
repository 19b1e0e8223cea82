"""The 3D viewer behind `talkctl view`: a trained head (and torso) as Gaussian splats in a browser.

Rendering is client-side: viser's Gaussian-splat node draws the splats in the browser (WebGL),
so orbiting is as smooth as the browser can draw and the server needs no GPU; per frame the
server only deforms the Gaussians (the field's MLP) and sends them (32 bytes a splat).
Everything is in the canonical head space (where the head's Gaussians live): the torso, the
background plate and the camera are moved there by the inverse head pose of the current frame,
so the camera path is the track's head motion seen from the head.

    viewer = Viewer(run, device); url = viewer.listen(host, port); viewer.build(); viewer.serve(seconds)
"""
from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
import wave
from dataclasses import dataclass

import numpy as np
import torch

from talkctl import artifacts
from talkctl.gs.gaussians import SH_C0, quat_to_rotmat
from talkctl.head.drive import Drive, audio_drive, clip_drive, feed, held_out_range, with_landmarks
from talkctl.head.models import load_head, load_torso
from talkctl.timebase import FPS, SAMPLE_RATE


@dataclass
class Splats:
    centers: np.ndarray      # (N,3)
    covariances: np.ndarray  # (N,3,3)
    rgbs: np.ndarray         # (N,3) in [0,1]
    opacities: np.ndarray    # (N,1)


@torch.no_grad()
def splats(means, quats, scales, sh_dc, opacity_logits, to_head=None) -> Splats:
    """Deformed Gaussians (N,·) -> what the splat node draws; `to_head` (4,4) moves them first."""
    R = quat_to_rotmat(quats)
    cov = R @ torch.diag_embed(scales ** 2) @ R.transpose(-1, -2)
    if to_head is not None:
        A = torch.as_tensor(to_head[:3, :3], dtype=means.dtype)
        means = means @ A.T + torch.as_tensor(to_head[:3, 3], dtype=means.dtype)
        cov = A @ cov @ A.T
    rgb = (sh_dc * SH_C0 + 0.5).clamp(0, 1)
    return Splats(means.cpu().numpy(), cov.cpu().numpy(), rgb.cpu().numpy(),
                  torch.sigmoid(opacity_logits).reshape(-1, 1).cpu().numpy())


def wav_data_url(wav: np.ndarray) -> str:
    """16 kHz mono float samples as a data: URL the browser's <audio> plays."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Viewer:
    def __init__(self, run, device: str = "cpu", audio=None, cfg: dict | None = None, log=None):
        self.run, self.device, self.cfg, self.log = run, device, dict(cfg or {}), log
        self.head = load_head(run, device, "torch")
        torso = load_torso(run, device, "torch")
        self.torso = torso if torso.mode == "gaussian" else None  # the image torso has no 3D
        self.plate = np.asarray(torso.attrs["background"])
        self.K = np.asarray(torso.attrs["K"], np.float64)
        with artifacts.open_for_read(run, "track") as f:
            self.track_w2c = f["world_to_cam"][()].astype(np.float64)
        a, b = held_out_range(run)
        self.drives = {"held-out clip": lambda: clip_drive(run, a, b, held_out=True),
                       "training clip": lambda: clip_drive(run, 0, a)}
        if audio is not None:
            self.drives[f"audio: {audio.name}"] = lambda: audio_drive(run, audio, self.cfg, device)
        self.frame, self.server, self.handles = 0, None, {}
        self.stats = {"shown": 0, "spent": 0.0}
        self.lock = threading.Lock()
        self.set_drive(list(self.drives)[-1] if audio is not None else "held-out clip")

    # ---- what is shown --------------------------------------------------------------------
    def set_drive(self, name: str) -> None:
        drive = self.drives[name]()
        self.drive: Drive = with_landmarks(self.run, drive, self.cfg, self.device)
        self.drive_name, self.frame = name, 0

    def head_splats(self, i: int) -> Splats:
        idx = np.array([i])
        rel = feed(self.head, self.drive, idx)
        means, quats, scales = self.head.deformed(rel, self.drive.blink[idx])
        g = self.head.gaussians.params
        return splats(means[0], quats[0], scales[0], g["sh_dc"], g["opacity_logits"])

    def torso_splats(self, i: int) -> Splats | None:
        if self.torso is None:
            return None
        means, quats, scales = self.torso.deformed(self.drive.world_to_cam[i:i + 1])
        g = self.torso.gaussians.params
        return splats(means[0], quats[0], scales[0], g["sh_dc"], g["opacity_logits"],
                      to_head=np.linalg.inv(self.drive.world_to_cam[i]))

    # ---- the server -----------------------------------------------------------------------
    def listen(self, host: str, port: int) -> str:
        """Start the server (it serves the page at once); returns its URL."""
        import viser

        with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: stdout is for --json
            self.server = viser.ViserServer(host=host, port=port, label="talkctl view", verbose=False)
        return f"http://{host}:{self.server.get_port()}"

    def build(self) -> None:
        """The scene and the controls."""
        self.server.scene.set_up_direction("-y")  # OpenCV axes: y down
        cam = np.linalg.inv(self.drive.world_to_cam[0])[:3, 3]  # a step back and aside from the tracked camera
        self.server.initial_camera.position = tuple(cam * 1.4 + np.array([0.4, -0.2, 0.0]) * np.linalg.norm(cam))
        self.server.initial_camera.look_at = (0.0, 0.0, 0.0)
        self._static_scene()
        self._gui()

    def _static_scene(self) -> None:
        sc = self.server.scene
        cams = np.linalg.inv(self.track_w2c)[:, :3, 3]
        self.handles["path"] = sc.add_spline_catmull_rom("/camera_path", cams, color=(240, 120, 20), line_width=2.0)
        h, w = self.plate.shape[:2]
        fy = self.K[1, 1]
        dist = float(np.median(np.linalg.norm(cams, axis=1)))
        self.handles["frustum"] = sc.add_camera_frustum("/camera", fov=2 * np.arctan(h / 2 / fy), aspect=w / h,
                                                        scale=0.1 * dist, color=(240, 120, 20))
        # the plate as a backdrop: an image plane in the camera's frame, a bit behind the head
        depth = 1.6 * dist
        self.handles["plate_frame"] = sc.add_frame("/camera_frame", show_axes=False)
        self.handles["plate"] = sc.add_image("/camera_frame/plate", self.plate, depth * w / self.K[0, 0],
                                             depth * h / fy, position=(0.0, 0.0, depth))

    def _gui(self) -> None:
        gui = self.server.gui
        self.g_drive = gui.add_dropdown("drive", tuple(self.drives), initial_value=self.drive_name)
        self.g_frame = gui.add_slider("frame", min=0, max=max(1, self.drive.n_frames - 1), step=1, initial_value=0)
        self.g_play = gui.add_checkbox("play", False)
        self.g_fps = gui.add_markdown("")
        toggles = {}
        for name in ("head", "torso", "plate", "centres", "camera path"):
            toggles[name] = gui.add_checkbox(name, name not in ("centres",))
        self.toggles = toggles
        self.g_audio = gui.add_html(self._audio_html())
        if self.head.condition_name == "landmarks":
            self.g_edit = gui.add_text("edit (mouth_scale=1.5,eyes_open=1)", "")

            @self.g_edit.on_update
            def _(_):
                with self.lock:
                    self.cfg["edit"] = self.g_edit.value
                    self.set_drive(self.drive_name)
                self.show(self.frame)

        @self.g_drive.on_update
        def _(_):
            with self.lock:
                self.set_drive(self.g_drive.value)
                self.g_frame.max = max(1, self.drive.n_frames - 1)
                self.g_audio.content = self._audio_html()
            self.g_frame.value = 0

        @self.g_frame.on_update
        def _(_):
            if int(self.g_frame.value) != self.frame:
                self.show(int(self.g_frame.value))

        for t in toggles.values():
            t.on_update(lambda _: self._visibility())

    def _audio_html(self) -> str:
        return (f"<div style='font-size:12px'>sound of “{self.drive_name}” (play it with the frames):</div>"
                f"<audio controls style='width:100%' src='{wav_data_url(self.drive.wav)}'></audio>")

    def _visibility(self) -> None:
        t = {k: v.value for k, v in self.toggles.items()}
        for key, on in (("head", t["head"]), ("torso", t["torso"]), ("plate", t["plate"]), ("centres", t["centres"]),
                        ("path", t["camera path"]), ("frustum", t["camera path"])):
            if key in self.handles:
                self.handles[key].visible = on

    def show(self, i: int) -> float:
        """Put frame i on screen; returns the seconds it took (deformation + sending)."""
        t0 = time.perf_counter()
        with self.lock:
            i = int(np.clip(i, 0, self.drive.n_frames - 1))
            self.frame = i
            h = self.head_splats(i)
            t = self.torso_splats(i)
            c2h = np.linalg.inv(self.drive.world_to_cam[i])
        sc = self.server.scene
        self._put("head", h, lambda s: sc.add_gaussian_splats("/head", s.centers, s.covariances, s.rgbs, s.opacities))
        if t is not None:
            self._put("torso", t, lambda s: sc.add_gaussian_splats("/torso", s.centers, s.covariances, s.rgbs, s.opacities))
        if "centres" not in self.handles:
            self.handles["centres"] = sc.add_point_cloud("/centres", h.centers, (h.rgbs * 255).astype(np.uint8),
                                                         point_size=0.01, visible=False)
        else:
            self.handles["centres"].points = h.centers
        wxyz = _wxyz(c2h[:3, :3])
        for key in ("frustum", "plate_frame"):
            self.handles[key].wxyz, self.handles[key].position = wxyz, c2h[:3, 3]
        self._visibility()
        return time.perf_counter() - t0

    def _put(self, key: str, s: Splats, add) -> None:
        if key in self.handles:
            self.handles[key].set_gaussians(s.centers, s.covariances, s.rgbs, s.opacities)
        else:
            self.handles[key] = add(s)

    def serve(self, seconds: float = 0.0) -> dict:
        """Play while `play` is ticked, for `seconds` (0: until Ctrl-C, which the caller catches)."""
        end = time.monotonic() + seconds if seconds > 0 else None
        self.show(self.frame)
        while end is None or time.monotonic() < end:
            if not self.g_play.value:
                time.sleep(0.05)
                continue
            t0 = time.perf_counter()
            nxt = (self.frame + 1) % self.drive.n_frames
            self.stats["spent"] += self.show(nxt)
            self.stats["shown"] += 1
            self.g_frame.value = nxt
            if self.stats["shown"] % 25 == 0:
                self.g_fps.content = f"playing at {self.play_fps():.1f} frames/s (deform + send)"
            time.sleep(max(0.0, 1.0 / FPS - (time.perf_counter() - t0)))

    def play_fps(self) -> float | None:
        return self.stats["shown"] / self.stats["spent"] if self.stats["spent"] else None

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # viser's farewell: stdout is for --json
                self.server.stop()
            self.server = None


def _wxyz(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z)."""
    w = np.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = np.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2
    y = np.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2
    z = np.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2
    x, y, z = np.copysign(x, R[2, 1] - R[1, 2]), np.copysign(y, R[0, 2] - R[2, 0]), np.copysign(z, R[1, 0] - R[0, 1])
    return np.array([w, x, y, z])
