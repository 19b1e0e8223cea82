"""The `mediapipe` parsing backend: selfie segmentation for the person, landmark geometry for
head / neck / torso (head_regions.py), with the person probability smoothed over time."""
from __future__ import annotations

from collections import deque
from typing import Iterable, Iterator

import numpy as np

from talkctl.errors import MissingToolError
from talkctl.native_log import native_stderr
from talkctl.parsing import regions as hr


class MediapipeParser:
    def __init__(self, config: dict, device: str, n_landmarks: int):
        import cv2

        # the images here are small: OpenCV's thread pool costs more than it gives, above all
        # on a loaded machine (restored in close())
        self._cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self.native_log: list[str] = []
        try:
            import mediapipe as mp

            with native_stderr(self.native_log):  # the graph logs on start and first frame
                self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=config["selfie_model"])
                self._seg.process(np.zeros((64, 64, 3), np.uint8))
        except (ImportError, AttributeError) as exc:
            raise MissingToolError(f"mediapipe selfie segmentation unavailable ({exc}); pip install mediapipe==0.10.21") from None
        self.threshold = float(config["person_threshold"])
        self.radius = int(config["smooth_frames"])
        self.layout = hr.layout_for(n_landmarks)
        self.params = hr.RegionParams(long_hair=bool(config["long_hair"]))
        self.state = hr.RegionState()

    def probability(self, frame: np.ndarray) -> np.ndarray:
        return self._seg.process(np.ascontiguousarray(frame)).segmentation_mask

    def person(self, frame: np.ndarray) -> np.ndarray:
        return self.probability(frame) > self.threshold

    def stream(self, items: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Labels per frame; the person probability is a centred weighted mean over
        2*radius+1 frames (weights 1, 2, 1 for radius 1): flicker of the soft edges goes."""
        r = self.radius
        weights = np.array([r + 1 - abs(k) for k in range(-r, r + 1)], np.float32)
        buf: deque = deque()
        pending: deque = deque()  # items whose labels are not out yet

        def emit(centre_pos: int):
            t, frame, lm = pending.popleft()
            probs = list(buf)
            lo = max(0, centre_pos - r)
            hi = min(len(probs), centre_pos + r + 1)
            w = weights[r - (centre_pos - lo): r + (hi - centre_pos)]
            p = probs[lo] * w[0]
            for k in range(lo + 1, hi):
                p = p + probs[k] * w[k - lo]
            person = p > self.threshold * w.sum()
            return t, frame, hr.split_person(frame, person, lm, self.layout, self.params, self.state)

        for t, frame, lm in items:
            buf.append(self.probability(frame))
            pending.append((t, frame, lm))
            if len(buf) > 2 * r + 1:
                buf.popleft()
            if len(pending) > r:
                yield emit(len(buf) - 1 - r)
        while pending:
            yield emit(len(buf) - len(pending))

    def close(self) -> None:
        import cv2

        self._seg.close()
        cv2.setNumThreads(self._cv_threads)
