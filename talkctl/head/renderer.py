"""The loaded head + torso + background plate of a run, rendering batches of frames of a Drive.

    renderer = Renderer.load(run, device, size)
    for idx, out, seconds in render_batches(renderer, drive, batch): ...   # out["full"]: (C,S,S,3) uint8

Used by render and eval alike, so both show exactly the same pixels.

Live use (a server): load once, then render any frames from the driving data directly; thread-safe,
so sessions can share one Renderer:
    rgb = renderer.frames(features, frames, world_to_cam, blink)   # (C,S,S,3) uint8
where features (T,W,D) are the audio feature windows around the frames (landmarks (T,L,3) for a
landmark-driven head) and frames (C,) index into them; the audio condition looks at
`renderer.context` = (frames before, frames after) neighbours of each frame (clamped to the array).
Poses taken from the training clip can name their source frames (source_frames=) so a torso fitted
stabilised sits where it was tracked, as in render_batches.

Rendering is inference only: torch.inference_mode, the per-Gaussian inputs that do not change
from frame to frame made once (head.models.FrameConstants), and on the CPU the compiled
forward-only rasteriser unless another is asked for (gs.splat.inference_rasterizer).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from talkctl import artifacts
from talkctl.errors import UsageError
from talkctl.gs.splat import inference_rasterizer, over
from talkctl.gs.training import scale_intrinsics
from talkctl.head.drive import Drive, context, feed
from talkctl.head.models import composite, load_head, load_torso
from talkctl.images import resize_square


@dataclass
class Renderer:
    """The loaded head + torso + plate at one output size."""
    head: object
    torso: object
    background: np.ndarray  # (size,size,3) uint8
    K_head: np.ndarray
    K_torso: np.ndarray
    size: int
    device: str
    rasterizer: str = ""  # the rasteriser backend in use
    _plate: torch.Tensor = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self):
        self._plate = torch.as_tensor(np.asarray(self.background), dtype=torch.float32, device=self.device) / 255.0

    @classmethod
    def load(cls, run, device: str = "cpu", size: int = 0, rasterizer: str = "auto") -> "Renderer":
        rasterizer = inference_rasterizer(rasterizer, device)
        head = load_head(run, device, rasterizer)
        torso = load_torso(run, device, rasterizer)
        res = int(head.attrs.get("resolution") or head.attrs["K"][0, 2] * 2)
        size = int(size) or res
        if not 16 <= size <= 4096:
            raise UsageError(f"render size {size} is out of range; use 16..4096 (0 = training resolution {res})")
        t_res = int(torso.attrs.get("resolution") or res)
        plate = np.asarray(torso.attrs["background"])
        if plate.shape[0] != size:
            with artifacts.open_for_read(run, "parse") as f:
                plate = resize_square(f["background"][()], size)
        return cls(head, torso, plate, scale_intrinsics(head.attrs["K"], res, size),
                   scale_intrinsics(torso.attrs["K"], t_res, size), size, device, rasterizer)

    @property
    def context(self) -> tuple[int, int]:
        """(before, after): neighbouring frames of driving data the condition reads for one frame."""
        return context(self.head)

    def set_audio(self, features: np.ndarray, speech: np.ndarray | None = None) -> None:
        self.head.set_audio(features, speech)

    def _set_source(self, source) -> None:
        if self.head.condition_name == "landmarks":
            self.head.set_landmarks(source)
        else:
            self.head.set_audio(source)

    def _layers(self, code, world_to_cam, blink, source_frames=None):
        h = self.head.render(None, world_to_cam, self.K_head, self.size, blink=blink, code=code)
        t = self.torso.render(world_to_cam, self.torso_K(source_frames), self.size, head_rgb=h.rgb,
                              head_alpha=h.alpha)
        return h, t

    def frames(self, source, frames, world_to_cam, blink=None, source_frames=None) -> np.ndarray:
        """(C,S,S,3) uint8 RGB of frames (C,) of `source` (see the module doc); thread-safe.
        source_frames: the training-clip frame each pose came from (the torso's tracked position,
        see torso_K), or None."""
        with torch.inference_mode():
            with self._lock:  # the condition holds the source from set to encode
                self._set_source(source)
                code = self.head.codes(frames)
            h, t = self._layers(code, world_to_cam, blink, source_frames)
            return to_uint8(composite(self._plate, t, h))

    def torso_K(self, source) -> np.ndarray:
        """The torso camera(s): at the tracked torso shift of each pose's source frame (source: (C,)
        frame indices of the training clip) when the torso was fitted stabilised (a Gaussian torso,
        or an image torso's base), else the one K."""
        shift = self.torso.attrs.get("torso_shift")
        if source is None or shift is None:
            return self.K_torso
        from talkctl.gs.torso_track import shifted_intrinsics

        src = np.clip(np.asarray(source, np.int64), 0, len(shift) - 1)
        return shifted_intrinsics(self.K_torso, np.asarray(shift)[src] * self.size)

    def render(self, frames, world_to_cam, blink, real=None, torso: bool = True, source=None) -> dict:
        """Batch of frames of the source given by head.drive.feed -> {"head_rgb": (C,S,S,3) float32
        premultiplied, "head_alpha": (C,S,S) float32, "full": (C,S,S,3) uint8 model composite and
        "coverage" (C,S,S) (head and torso together; unless torso=False), "head_over_real":
        uint8 (when real frames (C,S,S,3) uint8 are given), "seconds": {"head", "model"}}.
        source: the training-clip frame each pose came from (the torso's tracked position), or None."""
        with torch.inference_mode():
            t0 = time.perf_counter()
            h = self.head.render(None, world_to_cam, self.K_head, self.size, blink=blink, code=self.head.codes(frames))
            alpha = h.alpha[..., 0] if h.alpha.dim() == 4 else h.alpha
            out = {"head_rgb": h.rgb.float().cpu().numpy(), "head_alpha": alpha.float().cpu().numpy()}
            t1 = time.perf_counter()
            if torso:
                t = self.torso.render(world_to_cam, self.torso_K(source), self.size, head_rgb=h.rgb,
                                      head_alpha=h.alpha)
                out["full"] = to_uint8(composite(self._plate, t, h))
                t_alpha = t.alpha[..., 0] if t.alpha.dim() == 4 else t.alpha
                # how much of each pixel the person covers (1 - what the plate shows through)
                out["coverage"] = (1.0 - (1.0 - alpha) * (1.0 - t_alpha)).float().cpu().numpy()
            t2 = time.perf_counter()
            if real is not None:
                r = torch.as_tensor(np.asarray(real), device=h.rgb.device).float() / 255.0
                out["head_over_real"] = to_uint8(over(h.rgb, h.alpha, r).clamp(0, 1))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        out["seconds"] = {"head": t1 - t0, "model": t2 - t1}
        return out


def to_uint8(t) -> np.ndarray:
    """(…,3) float image(s) in [0,1] (a tensor on any device) -> uint8 numpy."""
    return (t.clamp(0, 1) * 255.0 + 0.5).to(dtype=__import__("torch").uint8).cpu().numpy()


def render_batches(renderer: Renderer, drive: Drive, batch: int, real_frames: Callable | None = None,
                   torso: bool = True) -> Iterator[tuple[np.ndarray, dict, float]]:
    """Yield (frame indices, render outputs, model seconds) batch by batch. With real_frames(idx)
    -> (C,S,S,3) uint8, the outputs also hold "real" and "head_over_real"; torso=False renders
    the head only (portrait composite: the template frames hold the torso).

    The head gets only what a batch needs (head.drive.feed), so memory does not grow with the
    audio's length."""
    batch = max(1, int(batch))
    T = drive.n_frames
    for b0 in range(0, T, batch):
        idx = np.arange(b0, min(T, b0 + batch))
        real = real_frames(idx) if real_frames is not None else None
        t0 = time.perf_counter()
        rel = feed(renderer.head, drive, idx)
        fed = time.perf_counter() - t0
        source = drive.source_frames[idx] if drive.source_frames is not None else None
        out = renderer.render(rel, drive.world_to_cam[idx], drive.blink[idx], real, torso=torso, source=source)
        out["seconds"]["head"] += fed  # the head's share of a render includes handing it its inputs
        if real is not None:
            out["real"] = real
        yield idx, out, time.perf_counter() - t0
