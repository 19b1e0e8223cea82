"""The frame the viewer gets, per composite mode:

  portrait  the run's own video frames are the template (for new audio: the training clip played
            forward then backward, with its own head poses: head.poses "train"); the rendered face
            is blended into them (head.portrait_blend: feathered mask along the template's face,
            colour matched at the border). What dubbing wants: the original video, only the face
            speaking the new audio.
  model     the head over the torso over the background plate, all rendered (free viewpoint,
            poses from elsewhere).

    comp = compositor_for(run, "auto", "lower", drive, size)   # or Compositor(run, "portrait", size)
    frames, masks, seconds = comp.compose(out, source_frames)   # out: Renderer.render's dict
    for idx, out, frames, masks, secs in composited_batches(renderer, drive, comp, batch): ...

render and eval both go through here, so eval scores exactly the pixels render writes.
"""
from __future__ import annotations

import json
import time
from contextlib import ExitStack
from typing import Callable, Iterator

import numpy as np

from talkctl import artifacts
from talkctl.errors import UsageError
from talkctl.head.portrait_blend import BlendSettings, blend, portrait_mask
from talkctl.images import resize_square
from talkctl.jpeg_frames import frame_images
from talkctl.lru import Lru
from talkctl.parsing.regions import HEAD, face_height
from talkctl.parsing.torso_target import extend_neck

COMPOSITES = ("portrait", "model")


def check_composite(mode: str, region: str = "lower") -> None:
    from talkctl.head.portrait_blend import REGIONS

    if mode not in COMPOSITES:
        raise UsageError(f"composite {mode!r} is unknown; use auto, {' or '.join(COMPOSITES)}")
    if region not in REGIONS:
        raise UsageError(f"portrait_region {region!r} is unknown; use {' or '.join(REGIONS)}")


class Template:
    """The template frames of a run at `size` px, by source frame index: the frame, what lies under
    the rendered face (_under), the parse labels and the tracked landmarks.
    A small cache serves held frames (pose still) and the turns of a ping-pong without re-reading;
    small because a sweep of the clip never comes back to a frame until the next turn (64 entries
    held ~28 MB at 256^2 for a few percent fewer reads)."""

    def __init__(self, run, size: int, cache: int = 8):
        from talkctl.parsing.regions import layout_for

        self._stack = ExitStack()
        self._frames = frame_images(self._stack.enter_context(artifacts.open_for_read(run, "frames")), "frames")
        parse = self._stack.enter_context(artifacts.open_for_read(run, "parse"))
        track = artifacts.read_track(run, ("landmarks2d", "valid"))
        self._labels = parse["labels"]
        config = json.loads(parse.attrs["config"])
        self._neck_extend = config["neck_extend"] if config["neck_fill"] == "extend" else 0.0
        self._lm = track.landmarks2d
        self._valid = track.valid if track.valid is not None else np.ones(len(self._lm), bool)
        self.n = int(self._frames.shape[0])
        self.size, self.scale = int(size), size / float(self._frames.shape[1])
        self.layout = layout_for(int(self._lm.shape[1]))
        self._cache = Lru(cache)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(frame (s,s,3) uint8, head-less frame, labels (s,s) uint8, landmarks (L,2) px or None)."""
        return self._cache.fetch(int(min(max(i, 0), self.n - 1)), self._read)

    def _read(self, i: int) -> tuple:
        s = self.size
        lm = np.asarray(self._lm[i], np.float64) * self.scale if self._valid[i] else None
        frame, labels = resize_square(self._frames[i], s), resize_square(self._labels[i], s, nearest=True)
        return frame, self._under(frame, labels, lm), labels, lm

    def _under(self, frame: np.ndarray, labels: np.ndarray, lm: np.ndarray | None) -> np.ndarray:
        """The frame with the neck continued up under the chin (parse's neck_fill=extend, into the
        head pixels); the real frame elsewhere, so a rendered jaw edge that is not fully opaque
        meets the real jaw, not the plate."""
        under = frame.copy()
        if lm is not None and self._neck_extend > 0:
            length = int(round(self._neck_extend * face_height(lm, self.layout)))
            extend_neck(under, frame, labels, labels == HEAD, length)
        return under

    def close(self) -> None:
        self._stack.close()


class Compositor:
    """Makes the output frames of one composite mode from Renderer.render's outputs."""

    def __init__(self, run, mode: str, size: int, settings: BlendSettings = BlendSettings()):
        check_composite(mode, settings.region)
        self.mode, self.settings = mode, settings
        self.template = Template(run, size) if mode == "portrait" else None

    @property
    def needs_torso(self) -> bool:
        return self.mode == "model"

    def describe(self) -> str:
        if self.mode == "model":
            return "model: rendered head over the rendered torso over the background plate"
        what = "lower face" if self.settings.region == "lower" else "head"
        return f"portrait: the rendered {what} blended into the source video's frames"

    def compose(self, out: dict, source_frames: np.ndarray | None) -> tuple[np.ndarray, list | None, float]:
        """(frames (C,S,S,3) uint8, None or (portrait) [(feathered mask (S,S), the colour-matched
        render before feathering (S,S,3) uint8)] per frame, for pasting into full frames; seconds)."""
        if self.mode == "model":
            return out["full"], None, 0.0
        if source_frames is None:
            raise UsageError("composite portrait needs poses from this run's own video (pose train or still) "
                             "to use its frames as the template; use --composite model for poses from elsewhere")
        t0 = time.perf_counter()
        frames, masks = [], []
        for j, i in enumerate(source_frames):
            frame, under, labels, lm = self.template.get(int(i))
            mask, face_h = portrait_mask(labels, lm, self.template.layout, self.settings)
            face = frame.copy()
            frames.append(blend(out["head_rgb"][j], out["head_alpha"][j], frame, under, labels, mask, face_h,
                                self.settings, face))
            masks.append((mask, face))
        return np.stack(frames), masks, time.perf_counter() - t0

    def close(self) -> None:
        if self.template is not None:
            self.template.close()


def resolve_composite(mode: str, drive) -> str:
    """"auto" -> portrait when the drive's poses come from this run's own frames, else model."""
    mode = str(mode or "auto")
    return ("portrait" if drive.source_frames is not None else "model") if mode == "auto" else mode


def compositor_for(run, mode: str, region: str, drive, size: int) -> Compositor:
    """The Compositor of composite `mode` (auto | portrait | model) for this drive."""
    mode = resolve_composite(mode, drive)
    if mode == "portrait" and drive.source_frames is None:
        raise UsageError("--composite portrait needs poses from this run's own video (--pose train or still), "
                         "whose frames are the template; use --composite model for poses from elsewhere")
    return Compositor(run, mode, size, BlendSettings(region=str(region)))


def composited_batches(renderer, drive, compositor: Compositor, batch: int,
                       real_frames: Callable | None = None) -> Iterator[tuple]:
    """Yield (frame indices, render outputs, composited frames, masks (Compositor.compose), seconds) batch by batch;
    seconds = rendering (head, plus torso in model mode) + compositing: what render reports as
    the model's speed."""
    from talkctl.head.renderer import render_batches

    for idx, out, secs in render_batches(renderer, drive, batch, real_frames, torso=compositor.needs_torso):
        src = drive.source_frames[idx] if drive.source_frames is not None else None
        frames, masks, c_secs = compositor.compose(out, src)
        yield idx, out, frames, masks, secs + c_secs
