"""One client's live stream: audio in as it comes, frames out as soon as their audio allows.

Audio arrives into utterances: the first chunk starts one; it ends on {"op": "stop"}, or when no
audio has come for `idle_after` seconds (then its last frames are made with the offline path's end
padding), and the next chunk starts a new one. {"op": "interrupt"} drops what is not shown yet.
A reader task takes messages (features computed off the event loop, in arrival order); a producer
task renders: speech frames as soon as they are ready (up to `batch` at a time, so a session that
fell behind catches up), else idle frames at 25 fps (mouth at rest, poses and blinks moving on),
dropped rather than queued when rendering is slower than that.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from talkctl.audio.streaming import StreamingFeatures, Tail
from talkctl.live.engine import Engine
from talkctl.live.protocol import IDLE, SPEECH, pack_frame, parse_control, pcm16_to_float
from talkctl.live.stats import Stats
from talkctl.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger("talkctl.serve")


@dataclass
class Utterance:
    feats: StreamingFeatures
    start: int                      # session sample index of its first sample
    windows: Tail
    last_audio: float
    next: int = 0                   # next frame to render
    chunks: deque = field(default_factory=deque)  # (first frame showing a chunk, its arrival time)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finished: bool = False          # set once its last windows are in (feats.finish runs off the loop)

    def ready(self, after: int) -> int:
        """Frames that can be rendered: their attention neighbours' windows have arrived."""
        return self.windows.end if self.finished else max(0, self.windows.end - after)


class Session:
    def __init__(self, engine: Engine, stats: Stats, ws, level_db: float | None = None, idle_after: float = 0.5,
                 batch: int = 4, max_pending_s: float = 60.0):
        self.engine, self.stats, self.ws = engine, stats, ws
        self.level_db, self.idle_after, self.batch = level_db, max(idle_after, engine.lookahead_s), max(1, batch)
        self.max_pending = int(max_pending_s * SAMPLE_RATE)
        self.clock = 0          # frames shown: the header index and the pose clock
        self.samples_in = 0     # session audio received
        self.speech_frames = 0
        self.utts: deque[Utterance] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.stop_requested = self.closed = False

    async def run(self) -> None:
        e = self.engine
        await self._send_json({"event": "hello", "size": e.size, "fps": FPS, "sample_rate": SAMPLE_RATE,
                               "lookahead_ms": round(e.lookahead_s * 1000), "header_bytes": 20})
        producer = asyncio.create_task(self._produce())
        try:
            await self._read()
        finally:
            self.closed = True
            self.wake.set()
            self.drained.set()
            await asyncio.gather(producer, return_exceptions=True)

    # ---- reading ---------------------------------------------------------------
    async def _read(self) -> None:
        from aiohttp import WSMsgType

        async for msg in self.ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            try:
                if msg.type == WSMsgType.BINARY:
                    await self._audio(pcm16_to_float(msg.data))
                else:
                    await (self._interrupt() if parse_control(msg.data) == "interrupt" else self._stop())
            except ValueError as exc:  # a bad message is answered, the session goes on
                await self._send_json({"event": "error", "message": str(exc)})

    def _pending(self) -> int:
        return sum(u.feats.n_samples - u.next * SAMPLES_PER_FRAME for u in self.utts)

    async def _audio(self, x: np.ndarray) -> None:
        if self.stop_requested:
            await self._send_json({"event": "error", "message": "audio after stop is ignored"})
            return
        while self._pending() > self.max_pending and not self.closed:  # backpressure: stop reading
            self.drained.clear()
            await self.drained.wait()
        arrival = time.perf_counter()
        utt = self.utts[-1] if self.utts and not self.utts[-1].finished else None
        if utt is None:
            utt = Utterance(StreamingFeatures(self.engine.recipe, self.level_db), self.samples_in,
                            Tail((self.engine.recipe.window, self.engine.recipe.extractor.dim)), arrival)
            self.utts.append(utt)
        async with utt.lock:
            if utt.finished:  # flushed by the producer meanwhile: this audio starts the next utterance
                return await self._audio(x)
            utt.chunks.append((utt.feats.n_samples // SAMPLES_PER_FRAME, arrival))
            self.samples_in += len(x)
            utt.windows.append(await asyncio.get_running_loop().run_in_executor(None, utt.feats.push, x))
            utt.last_audio = time.perf_counter()  # the pause counts from here: a slow push is no pause
        self.wake.set()

    async def _finish(self, utt: Utterance) -> None:
        async with utt.lock:
            if not utt.finished:
                utt.windows.append(await asyncio.get_running_loop().run_in_executor(None, utt.feats.finish))
                utt.finished = True

    async def _interrupt(self) -> None:
        self.utts.clear()
        self.drained.set()
        await self._send_json({"event": "interrupted", "speech_frames": self.speech_frames})
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
            await self._send_json({"event": "error", "message": f"internal error: {exc}"})
            await self.ws.close(code=1011)

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
                    await self._speech(utt, min(ready, utt.next + self.batch))
                    continue
                if utt.finished:
                    self.utts.popleft()
                    await self._send_json({"event": "end", "frames": utt.next, "speech_frames": self.speech_frames})
                    self.drained.set()
                    next_idle = time.monotonic() + 1.0 / FPS
                    continue
                await self._sleep(max(0.02, utt.last_audio + self.idle_after - now + 0.005))
                continue
            if self.stop_requested:
                await self._send_json({"event": "stopped", "speech_frames": self.speech_frames})
                await self.ws.close()
                return
            t = time.monotonic()
            if t < next_idle:
                await self._sleep(next_idle - t)
                continue
            await self._idle()
            next_idle = max(next_idle + 1.0 / FPS, time.monotonic())  # late: drop ticks, never queue them

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
        jpegs = await self.engine.run(self.engine.render, source, idx - lo, clock)
        self.stats.render_ms.extend([(time.perf_counter() - t0) * 1000 / len(idx)] * len(idx))
        if self.utts and self.utts[0] is not utt:  # interrupted while rendering
            return
        for i, jpeg in zip(idx, jpegs):
            t = (utt.start + int(i) * SAMPLES_PER_FRAME) / SAMPLE_RATE
            await self.ws.send_bytes(pack_frame(self.clock, SPEECH, t, jpeg))
            sent = time.perf_counter()
            while utt.chunks and utt.chunks[0][0] <= i:
                self.stats.latency_ms.append((sent - utt.chunks.popleft()[1]) * 1000)
            self.clock += 1
        self.speech_frames += len(idx)
        self.stats.frame("speech", len(idx))
        utt.next = hi
        utt.windows.drop_before(hi - before)

    async def _idle(self) -> None:
        t0 = time.perf_counter()
        jpeg = await self.engine.run(self.engine.render_idle, self.clock)
        self.stats.render_ms.append((time.perf_counter() - t0) * 1000)
        if self.utts or self.closed:  # speech came meanwhile: it goes first
            return
        await self.ws.send_bytes(pack_frame(self.clock, IDLE, float("nan"), jpeg))
        self.clock += 1
        self.stats.frame("idle")

    async def _send_json(self, obj: dict) -> None:
        if not self.ws.closed:
            try:
                await self.ws.send_str(json.dumps(obj))
            except ConnectionError:
                pass
