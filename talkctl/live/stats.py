"""Rolling figures of a live server, for GET /stats."""
from __future__ import annotations

import time
from collections import deque

import numpy as np

WINDOW_S = 5.0  # fps over the last few seconds


def percentiles(values, ps=(50, 90, 99)) -> dict | None:
    if not len(values):
        return None
    v = np.percentile(np.asarray(values, dtype=np.float64), ps)
    return {f"p{p}": round(float(x), 1) for p, x in zip(ps, v)}


class Stats:
    def __init__(self, max_sessions: int):
        self.max_sessions = max_sessions
        self.active = 0
        self.total = 0
        self.refused = 0
        self.frames = {"speech": 0, "idle": 0, "dropped": 0}  # dropped: skipped to keep latency bounded
        self.started = time.time()
        self._sent: deque[float] = deque()
        self.latency_ms: deque[float] = deque(maxlen=2000)   # audio chunk arrival -> first frame showing it
        self.render_ms: deque[float] = deque(maxlen=2000)    # per frame: model + JPEG on the pool

    def frame(self, kind: str, n: int = 1) -> None:
        self.frames[kind] += n
        if kind == "dropped":
            return
        now = time.monotonic()
        self._sent.extend([now] * n)
        while self._sent and self._sent[0] < now - WINDOW_S:
            self._sent.popleft()

    def fps(self) -> float:
        now = time.monotonic()
        while self._sent and self._sent[0] < now - WINDOW_S:
            self._sent.popleft()
        return len(self._sent) / WINDOW_S

    def as_dict(self) -> dict:
        return {"sessions": self.active, "max_sessions": self.max_sessions, "sessions_total": self.total,
                "refused": self.refused, "frames": dict(self.frames), "fps": round(self.fps(), 2),
                "latency_ms": percentiles(self.latency_ms), "render_ms_per_frame": percentiles(self.render_ms),
                "uptime_s": round(time.time() - self.started, 1)}
