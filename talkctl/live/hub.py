"""What every transport of `talkctl serve` shares: the options, admission (the session limit),
a session's parameters from its request, and the registry that closes sessions at shutdown."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

from talkctl.live.engine import Engine
from talkctl.live.session import Session, Sink
from talkctl.live.stats import Stats

TRY_AGAIN_LATER = 1013
WEBRTC_EXTRA = "pip install 'talkctl[live]'"


def webrtc_missing() -> str | None:
    """Why WebRTC cannot be served here (one line naming the extra), or None."""
    import importlib.util

    if importlib.util.find_spec("aiortc") is None:
        return f"WebRTC (POST /offer) needs aiortc: {WEBRTC_EXTRA}"
    return None


@dataclass
class ServeOptions:
    max_sessions: int = 1
    token: str | None = None
    max_message: int = 1 << 20      # bytes per WebSocket message / request body (1 MiB: 32 s of PCM16)
    idle_after: float = 0.5         # s without audio that end an utterance
    batch: int = 4                  # frames rendered at once by a session that fell behind
    max_lag: float = 0.5            # s a speech frame may be late before the session skips ahead (0: never)
    webrtc: bool | None = None      # POST /offer; None: when aiortc is installed


@dataclass(frozen=True)
class SessionParams:
    level_db: float | None
    max_lag: float


class Hub:
    def __init__(self, engine: Engine, opts: ServeOptions):
        self.engine, self.opts = engine, opts
        self.stats = Stats(opts.max_sessions)
        self.closers: set[Callable[[], Awaitable]] = set()

    def params(self, q: Mapping) -> SessionParams:
        """level_db / max_lag_ms from a request's query (or offer JSON); ValueError says what is wrong."""
        level = _number(q, "level_db", "a number of dBFS in -150..10", -150.0, 10.0)
        lag = _number(q, "max_lag_ms", "a number of ms in 0..60000 (0: never skip frames)", 0.0, 60000.0)
        return SessionParams(level, self.opts.max_lag if lag is None else lag / 1000.0)

    def refuse(self) -> str | None:
        """The refusal when every session is in use (counted), else None."""
        if self.stats.active < self.opts.max_sessions:
            return None
        self.stats.refused += 1
        return f"server busy: {self.stats.active} of {self.opts.max_sessions} sessions in use; try again later"

    def reserve(self, closer: Callable[[], Awaitable]) -> None:
        self.stats.active += 1
        self.stats.total += 1
        self.closers.add(closer)

    def release(self, closer: Callable[[], Awaitable]) -> None:
        self.closers.discard(closer)
        self.stats.active -= 1

    async def serve(self, sink: Sink, read, p: SessionParams) -> None:
        """One session on a reserved slot, until read(session) returns."""
        o = self.opts
        await Session(self.engine, self.stats, sink, p.level_db, o.idle_after, o.batch, p.max_lag).run(read)

    async def close_all(self) -> None:
        for close in list(self.closers):
            await close()


def _number(q: Mapping, key: str, what: str, lo: float, hi: float) -> float | None:
    if q.get(key) is None:
        return None
    try:
        v = float(q[key])
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and lo <= v <= hi):
        raise ValueError(f"{key} must be {what}")
    return v
