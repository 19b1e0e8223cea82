"""One client's live stream: audio in as it comes, frames out as soon as their audio allows.

The transport (the /ws socket, a WebRTC peer: live/ws.py, live/webrtc.py) feeds `audio()` and
`control()` and gives a Sink that carries the frames and events out; everything else is here.
Audio arrives into utterances: the first chunk starts one; it ends on {"op": "stop"}, or when no
audio has come for `idle_after` seconds (then its last frames are made with the offline path's end
padding), and the next chunk starts a new one. {"op": "interrupt"} drops what is not shown yet.
A producer task renders: speech frames as soon as they are ready (up to `batch` at a time, so a
session that fell behind catches up), else idle frames at 25 fps (mouth at rest, poses and blinks
moving on), dropped rather than queued when rendering is slower than that.
Bounded latency: a speech frame is due when its audio is ready and not before its real-time slot
(first frame's readiness + i/25 s); one more than `max_lag` s late makes the session skip ahead
to frames half that late (counted as dropped), so an overloaded server shows fewer frames, never
ever older ones. max_lag 0: never skip (a script that wants every frame).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

import numpy as np

from talkctl.audio.streaming import StreamingFeatures, Tail
from talkctl.live.engine import Engine
from talkctl.live.protocol import IDLE, SPEECH
from talkctl.live.stats import Stats
from talkctl.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger("talkctl.serve")


class Sink(Protocol):
    """Where a session's frames and events go."""
    image: str          # "jpeg" (bytes) or "rgb" ((S,S,3) uint8): what the engine makes for it
    wants_audio: bool   # frames carry the 40 ms of session audio they show (float32; zeros when idle)

    async def frame(self, index: int, kind: int, audio_time: float, image, pcm) -> float:
        """Send one frame; returns the perf_counter time it is (or will be) shown."""

    async def event(self, obj: dict) -> None: ...

    async def close(self, code: int = 1000) -> None: ...


@dataclass
class Utterance:
    feats: StreamingFeatures
    start: int                      # session sample index of its first sample
    windows: Tail
    last_audio: float
    pcm: Tail | None = None         # its samples, for sinks that send the audio back
    next: int = 0                   # next frame to render
    chunks: deque = field(default_factory=deque)    # (first frame showing a chunk, its arrival time)
    ready_at: deque = field(default_factory=deque)  # (frames ready, since when)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: bool = False          # set once its last windows are in (feats.finish runs off the loop)
    t_first: float = 0.0            # when its first frame became ready

    def ready(self, after: int) -> int:
        """Frames that can be rendered: their attention neighbours' windows have arrived."""
        return self.windows.end if self.finished else max(0, self.windows.end - after)

    def note_ready(self, after: int, t: float) -> None:
        n = self.ready(after)
        if n and (not self.ready_at or n > self.ready_at[-1][0]):
            if not self.ready_at and not self.next:
                self.t_first = t
            self.ready_at.append((n, t))

    def due(self, frames: np.ndarray) -> np.ndarray:
        """perf_counter time each frame is due: ready, and not before its real-time slot."""
        while len(self.ready_at) > 1 and self.ready_at[0][0] <= self.next:
            self.ready_at.popleft()
        counts = np.array([c for c, _ in self.ready_at])
        times = np.array([t for _, t in self.ready_at])
        r = times[np.minimum(np.searchsorted(counts, frames, side="right"), len(times) - 1)]
        return np.maximum(r, self.t_first + frames / FPS)


class Session:
    def __init__(self, engine: Engine, stats: Stats, sink: Sink, level_db: float | None = None,
                 idle_after: float = 0.5, batch: int = 4, max_lag: float = 0.5, max_pending_s: float = 60.0):
        self.engine, self.stats, self.sink = engine, stats, sink
        self.level_db, self.idle_after, self.batch = level_db, max(idle_after, engine.lookahead_s), max(1, batch)
        self.max_lag = max(0.0, max_lag)
        self.max_pending = int(max_pending_s * SAMPLE_RATE)
        self.clock = 0          # frames shown: the header index and the pose clock
        self.samples_in = 0     # session audio received
        self.speech_frames = self.dropped = 0
        self.utts: deque[Utterance] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.stop_requested = self.closed = False

    async def run(self, read: Callable[["Session"], Awaitable[None]]) -> None:
        """Serve until read(self) returns (the client is gone or closed)."""
        e = self.engine
        await self.sink.event({"event": "hello", "size": e.size, "fps": FPS, "sample_rate": SAMPLE_RATE,
                               "lookahead_ms": round(e.lookahead_s * 1000), "header_bytes": 20,
                               "max_lag_ms": round(self.max_lag * 1000)})
        producer = asyncio.create_task(self._produce())
        try:
            await read(self)
        finally:
            self.closed = True
            self.wake.set()
            self.drained.set()
            producer.cancel()  # it may wait on a sink that no one reads any more
            await asyncio.gather(producer, return_exceptions=True)

    # ---- input -----------------------------------------------------------------
    async def control(self, op: str) -> None:
        await (self._interrupt() if op == "interrupt" else self._stop())

    def _pending(self) -> int:
        return sum(u.feats.n_samples - u.next * SAMPLES_PER_FRAME for u in self.utts)

    async def audio(self, x: np.ndarray, arrival: float | None = None) -> None:
        """Float32 samples in [-1, 1] at 16 kHz, in order; arrival: their perf_counter time of arrival
        when the transport knows it (a backlog read at once), else now."""
        if self.stop_requested:
            await self.sink.event({"event": "error", "message": "audio after stop is ignored"})
            return
        while self._pending() > self.max_pending and not self.closed:  # backpressure: stop reading
            self.drained.clear()
            await self.drained.wait()
        arrival = time.perf_counter() if arrival is None else arrival
        utt = self.utts[-1] if self.utts and not self.utts[-1].finished else None
        if utt is None:
            utt = Utterance(StreamingFeatures(self.engine.recipe, self.level_db), self.samples_in,
                            Tail((self.engine.recipe.window, self.engine.recipe.extractor.dim)), arrival,
                            Tail(()) if self.sink.wants_audio else None)
            self.utts.append(utt)
        async with utt.lock:
            if utt.finished:  # flushed by the producer meanwhile: this audio starts the next utterance
                return await self.audio(x, arrival)
            utt.chunks.append((utt.feats.n_samples // SAMPLES_PER_FRAME, arrival))
            self.samples_in += len(x)
            if utt.pcm is not None:
                utt.pcm.append(x)
            utt.windows.append(await asyncio.get_running_loop().run_in_executor(None, utt.feats.push, x))
            utt.last_audio = time.perf_counter()  # the pause counts from here: a slow push is no pause
            utt.note_ready(self.engine.context[1], arrival)  # lateness counts from the audio's arrival
        self.wake.set()

    async def _finish(self, utt: Utterance) -> None:
        async with utt.lock:
            if not utt.finished:
                utt.windows.append(await asyncio.get_running_loop().run_in_executor(None, utt.feats.finish))
                utt.finished = True
                utt.note_ready(self.engine.context[1], time.perf_counter())

    async def _interrupt(self) -> None:
        self.utts.clear()
        self.drained.set()
        await self.sink.event({"event": "interrupted", "speech_frames": self.speech_frames})
        self.wake.set()

    async def _stop(self) -> None:
        self.stop_requested = True
        if self.utts:
            await self._finish(self.utts[-1])
        self.wake.set()

    # ---- producing -------------------------------------------------------------
    async def _produce(self) -> None:
        try:
            await self._produce_loop()
        except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:  # the client went away
            log.debug("session ended while sending: %s", exc)
        except Exception as exc:  # a bug: tell the client, close, keep the server up
            log.exception("session failed")
            await self.sink.event({"event": "error", "message": f"internal error: {exc}"})
            await self.sink.close(1011)

    async def _produce_loop(self) -> None:
        after = self.engine.context[1]
        next_idle = time.monotonic()
        while not self.closed:
            now = time.perf_counter()
            if self.utts:
                utt = self.utts[0]
                if not utt.finished and not utt.lock.locked() and now - utt.last_audio > self.idle_after:  # paused
                    await self._finish(utt)
                ready = utt.ready(after)
                if utt.next < ready:
                    self._skip_late(utt, ready, now)
                    await self._speech(utt, min(ready, utt.next + self.batch))
                    continue
                if utt.finished:
                    self.utts.popleft()
                    await self.sink.event({"event": "end", "frames": utt.next, "speech_frames": self.speech_frames})
                    self.drained.set()
                    next_idle = time.monotonic() + 1.0 / FPS
                    continue
                await self._sleep(max(0.02, utt.last_audio + self.idle_after - now + 0.005))
                continue
            if self.stop_requested:
                await self.sink.event({"event": "stopped", "speech_frames": self.speech_frames})
                await self.sink.close()
                return
            t = time.monotonic()
            if t < next_idle:
                await self._sleep(next_idle - t)
                continue
            await self._idle()
            next_idle = max(next_idle + 1.0 / FPS, time.monotonic())  # late: drop ticks, never queue them

    def _skip_late(self, utt: Utterance, ready: int, now: float) -> None:
        """Over max_lag behind: jump to the first ready frame at most max_lag/2 late (the last one at worst)."""
        if not self.max_lag or now - utt.due(np.array([utt.next]))[0] <= self.max_lag:
            return
        frames = np.arange(utt.next, ready)
        ok = np.nonzero(now - utt.due(frames) <= self.max_lag / 2)[0]
        to = int(frames[ok[0]]) if len(ok) else ready - 1
        if to > utt.next:
            n = to - utt.next
            self.dropped += n
            self.stats.frame("dropped", n)
            utt.next = to
            utt.windows.drop_before(to - self.engine.context[0])
            if utt.pcm is not None:
                utt.pcm.drop_before(to * SAMPLES_PER_FRAME)

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=max(0.001, seconds))
        except asyncio.TimeoutError:
            pass

    async def _speech(self, utt: Utterance, hi: int) -> None:
        before, after = self.engine.context
        idx = np.arange(utt.next, hi)
        lo, top = max(0, utt.next - before), min(utt.windows.end, hi + after)
        source = utt.windows.span(lo, top)
        clock = self.clock + np.arange(len(idx))
        t0 = time.perf_counter()
        images = await self.engine.run(self.engine.render, source, idx - lo, clock, self.sink.image)
        self.stats.render_ms.extend([(time.perf_counter() - t0) * 1000 / len(idx)] * len(idx))
        if self.utts and self.utts[0] is not utt:  # interrupted while rendering
            return
        for i, image in zip(idx, images):
            t = (utt.start + int(i) * SAMPLES_PER_FRAME) / SAMPLE_RATE
            pcm = utt.pcm.span(int(i) * SAMPLES_PER_FRAME, (int(i) + 1) * SAMPLES_PER_FRAME) if utt.pcm else None
            shown = await self.sink.frame(self.clock, SPEECH, t, image, pcm)
            while utt.chunks and utt.chunks[0][0] <= i:  # chunks of skipped frames count from here too
                self.stats.latency_ms.append((shown - utt.chunks.popleft()[1]) * 1000)
            self.clock += 1
        self.speech_frames += len(idx)
        self.stats.frame("speech", len(idx))
        utt.next = hi
        utt.windows.drop_before(hi - before)
        if utt.pcm is not None:
            utt.pcm.drop_before(hi * SAMPLES_PER_FRAME)

    async def _idle(self) -> None:
        t0 = time.perf_counter()
        image = await self.engine.run(self.engine.render_idle, self.clock, self.sink.image)
        self.stats.render_ms.append((time.perf_counter() - t0) * 1000)
        if self.utts or self.closed:  # speech came meanwhile: it goes first
            return
        silence = np.zeros(SAMPLES_PER_FRAME, np.float32) if self.sink.wants_audio else None
        await self.sink.frame(self.clock, IDLE, float("nan"), image, silence)
        self.clock += 1
        self.stats.frame("idle")
