"""The model every session shares: loaded once, rendering on a small thread pool.

    engine = Engine.load(run, device, size=256, pose="train", lookahead_ms=200)
    jpegs = engine.render(source, frames, clock)   # JPEG bytes of frames (C,) of windows `source`

The head is audio-driven; a frame is rendered once the audio `engine.lookahead_s` past its end has
arrived (the feature window of the frame the attention looks furthest ahead at, and the samples
that decide it). A model that needs more than --lookahead-ms is refused, as is a landmark-driven
head or an extractor that cannot stream: either would change what the head shows.
Head poses and blinks follow a clock that counts every frame a session shows (speech and idle):
the training clip's motion ping-ponged, or one pose held still with the clip's blinks.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from talkctl import artifacts
from talkctl.audio.recipe import FeatureRecipe
from talkctl.audio.streaming import check_streamable, lookahead_samples
from talkctl.errors import UsageError
from talkctl.head.poses import PoseSequence, pose_sequence
from talkctl.head.renderer import Renderer
from talkctl.timebase import SAMPLE_RATE, SAMPLES_PER_FRAME

POSES = ("train", "still")


@dataclass
class Engine:
    renderer: Renderer
    recipe: FeatureRecipe
    poses: PoseSequence
    lookahead: int          # samples past a frame's end needed to render it
    idle_source: np.ndarray  # (1, W, D) feature windows of silence: the mouth at rest
    jpeg_quality: int = 85
    workers: int = 1
    _pool: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self):
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="talkctl-render")

    @classmethod
    def load(cls, run, device: str = "cpu", size: int = 256, pose: str = "train", lookahead_ms: float = 200.0,
             jpeg_quality: int = 85, workers: int = 1, rasterizer: str = "auto") -> "Engine":
        if pose not in POSES:
            raise UsageError(f"--pose {pose!r} unknown for serve; use {' or '.join(POSES)}")
        if not 1 <= int(jpeg_quality) <= 100:
            raise UsageError(f"jpeg_quality={jpeg_quality} is out of range; use 1..100")
        recipe = FeatureRecipe.from_artifact(run, device)
        check_streamable(recipe)
        renderer = Renderer.load(run, device, size, rasterizer)
        if renderer.head.condition_name != "audio":
            raise UsageError(f"this run's head is driven by {renderer.head.condition_name}, not audio; "
                             "serve needs an audio-driven head (train-deform --condition audio)")
        need = lookahead_samples(recipe, renderer.context[1])
        if need > float(lookahead_ms) * SAMPLE_RATE / 1000.0:
            raise UsageError(f"this model needs {need * 1000 // SAMPLE_RATE} ms of audio past each frame (feature "
                             f"window {recipe.window}, attention {renderer.context[1]} frames ahead); --lookahead-ms "
                             f"is {lookahead_ms:g}: raise it to at least {need * 1000 // SAMPLE_RATE}")
        with artifacts.open_for_read(run, "track") as f:
            n_track = int(f["world_to_cam"].shape[0])
        period = max(1, 2 * (n_track - 1))  # one ping-pong cycle; the clock wraps seamlessly
        poses = pose_sequence(pose, period, run=run)
        idle = recipe(np.zeros(SAMPLES_PER_FRAME, np.float32))
        engine = cls(renderer, recipe, poses, need, idle, int(jpeg_quality), int(workers))
        engine.render_idle(0)  # compile / load the kernels now, not in the first session's first frame
        return engine

    @property
    def size(self) -> int:
        return self.renderer.size

    @property
    def context(self) -> tuple[int, int]:
        return self.renderer.context

    @property
    def lookahead_s(self) -> float:
        return self.lookahead / SAMPLE_RATE

    def pose_at(self, clock: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.asarray(clock) % len(self.poses)
        return self.poses.world_to_cam[k], self.poses.blink[k]

    def render(self, source: np.ndarray, frames: np.ndarray, clock: np.ndarray, image: str = "jpeg") -> list:
        """Frames (C,) of the windows `source` (T,W,D), posed at clock values (C,), as JPEG bytes
        (image="jpeg") or (S,S,3) uint8 RGB arrays ("rgb"); thread-safe."""
        import cv2

        w2c, blink = self.pose_at(clock)
        rgb = self.renderer.frames(source, np.asarray(frames), w2c, blink)
        if image == "rgb":
            return list(rgb)
        params = [int(cv2.IMWRITE_JPEG_QUALITY), self.jpeg_quality]
        return [cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), params)[1].tobytes() for f in rgb]

    def render_idle(self, clock: int, image: str = "jpeg"):
        return self.render(self.idle_source, np.zeros(1, np.int64), np.array([clock]), image)[0]

    async def run(self, fn, *args):
        """fn(*args) on the render pool (the event loop stays free for other sessions)."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def default_max_sessions() -> int:
    """About one live 25 fps stream per two cores (a 256^2 frame costs ~40 ms of a core's time)."""
    return max(1, (os.cpu_count() or 2) // 2)
