"""WebRTC for `talkctl serve` (aiortc): a browser's (or any WebRTC client's) audio in, the head's
video and the same audio back out, in sync, at 25 fps.

    POST /offer  {"sdp": ..., "type": "offer", "level_db"?: X, "max_lag_ms"?: X}
                 -> {"sdp": ..., "type": "answer", "id": ...}
                 or WHIP/WHEP-style: Content-Type application/sdp in (level_db / max_lag_ms in the
                 query), 201 with the answer SDP and Location /offer/<id>; DELETE it to hang up.

The offer must receive video; it may send audio (a microphone, or a file the page plays), else the
head idles. A data channel the client opens carries the /ws JSON control ops in and the events out.
Same sessions, limits and token as /ws (live/session.py, live/hub.py): one more than
--max-sessions gets 503. No STUN/TURN server is configured: host candidates (localhost or a LAN).
The pacer is one 25 fps clock per peer: each tick the video track takes the next rendered frame
(the last one again when none is ready) and queues that frame's 40 ms of audio, which the audio
track sends in 20 ms packets on the same clock: sound and picture leave together.
"""
from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
import uuid

import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from talkctl.audio.streaming import Tail
from talkctl.live.hub import Hub
from talkctl.live.protocol import float_to_pcm16, parse_control
from talkctl.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

log = logging.getLogger("talkctl.serve")
VIDEO_CLOCK = 90000
AUDIO_PACKET = SAMPLE_RATE // 50   # 20 ms
QUEUE_FRAMES = 3                   # rendered frames waiting for their tick (the producer waits beyond)
CONNECT_TIMEOUT = 30.0             # s for ICE + DTLS before a reserved session is given up
RESYNC_S = 0.2                     # a track this late skips ticks instead of sending a burst


class Pacer:
    def __init__(self, size: int):
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_FRAMES)
        self.t0: float | None = None
        self.tick = 0
        self.last = np.zeros((size, size, 3), np.uint8)
        self.audio = Tail(())  # samples on the pacer's timeline (sample k plays at t0 + k / 16000)

    def start(self) -> float:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        return self.t0

    async def put(self, rgb: np.ndarray, pcm: np.ndarray | None) -> float:
        """Queue a frame (waits while QUEUE_FRAMES are queued); returns when it will be sent."""
        await self.queue.put((rgb, pcm))
        return max(time.perf_counter(), self.start() + (self.tick + self.queue.qsize() - 1) / FPS)

    async def _slot(self, k: int, rate: float, offset: float = 0.0) -> int:
        """Wait for slot k (+ offset slots) of a `rate`/s clock; one missed by more than RESYNC_S
        becomes the current one."""
        t0 = self.start()
        late = time.perf_counter() - (t0 + (k + offset) / rate)
        if late < 0:
            await asyncio.sleep(-late)
        elif late > RESYNC_S:
            k = int((time.perf_counter() - t0) * rate - offset)
        return k

    async def video(self) -> tuple[np.ndarray, int]:
        k = await self._slot(self.tick, FPS)
        try:
            rgb, pcm = self.queue.get_nowait()
            self.last = rgb
        except asyncio.QueueEmpty:
            rgb, pcm = self.last, None
        at = k * SAMPLES_PER_FRAME
        if at > self.audio.end:  # skipped ticks: silence
            self.audio.append(np.zeros(at - self.audio.end, np.float32))
        self.audio.append(pcm if pcm is not None else np.zeros(SAMPLES_PER_FRAME, np.float32))
        self.tick = k + 1
        return rgb, k

    async def audio_packet(self, m: int) -> tuple[np.ndarray, int]:
        m = await self._slot(m, SAMPLE_RATE / AUDIO_PACKET, 0.25)  # a little after the video tick that fills it
        lo = m * AUDIO_PACKET
        x = self.audio.span(max(lo, self.audio.start), lo + AUDIO_PACKET)
        self.audio.drop_before(lo + AUDIO_PACKET)
        return np.pad(x, (AUDIO_PACKET - len(x), 0)), m


class VideoOut(MediaStreamTrack):
    kind = "video"

    def __init__(self, pacer: Pacer):
        super().__init__()
        self.pacer = pacer

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        rgb, k = await self.pacer.video()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = k * VIDEO_CLOCK // FPS, fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class AudioOut(MediaStreamTrack):
    kind = "audio"

    def __init__(self, pacer: Pacer):
        super().__init__()
        self.pacer, self.m = pacer, 0

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        x, m = await self.pacer.audio_packet(self.m)
        self.m = m + 1
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_PACKET)
        frame.planes[0].update(float_to_pcm16(x))
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, m * AUDIO_PACKET, fractions.Fraction(1, SAMPLE_RATE)
        return frame


class PeerSink:
    """A session's output into a peer: frames to the pacer, events on the client's data channel."""
    image = "rgb"
    wants_audio = True

    def __init__(self, pacer: Pacer, pc: RTCPeerConnection):
        self.pacer, self.pc = pacer, pc
        self.channel = None
        self.pending: list[str] = []  # events before the channel opened (the hello)
        self.controls: asyncio.Queue = asyncio.Queue(64)

    async def frame(self, index, kind, audio_time, image, pcm) -> float:
        return await self.pacer.put(image, pcm)

    async def event(self, obj: dict) -> None:
        msg = json.dumps(obj)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(msg)
        elif len(self.pending) < 64:
            self.pending.append(msg)

    def attach(self, channel) -> None:
        self.channel = channel

        @channel.on("message")
        def on_message(msg):
            if isinstance(msg, str) and not self.controls.full():
                self.controls.put_nowait(msg)

        for msg in self.pending:
            channel.send(msg)
        self.pending.clear()

    async def close(self, code: int = 1000) -> None:
        await self.pc.close()


async def mono16k(track):
    """A remote audio track's samples as float32 16 kHz mono chunks, until it ends."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        for f in resampler.resample(frame):
            x = f.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
            if len(x):
                yield x


async def _pump_audio(track, session) -> None:
    """Packets are taken as they come and handed over in one piece each time the session is ready
    for more: a session slowed by a busy CPU gets fewer, larger chunks (stamped with when the first
    one came, so its lateness shows) instead of a growing queue of 20 ms ones."""
    backlog: list[tuple[np.ndarray, float]] = []
    more = asyncio.Event()

    async def take():
        async for x in mono16k(track):
            if not session.stop_requested:  # a track keeps sending after {"op": "stop"}: not an error here
                backlog.append((x, time.perf_counter()))
                more.set()
        backlog.append((None, 0.0))
        more.set()

    taker = asyncio.create_task(take())
    try:
        while True:
            await more.wait()
            more.clear()
            got, backlog[:] = list(backlog), []
            chunks = [x for x, _ in got if x is not None]
            if chunks:
                await session.audio(np.concatenate(chunks), got[0][1])
            if len(chunks) < len(got):  # the track ended
                return
    finally:
        taker.cancel()


async def _pump_controls(sink: PeerSink, session) -> None:
    while True:
        msg = await sink.controls.get()
        try:
            await session.control(parse_control(msg))
        except ValueError as exc:
            await sink.event({"event": "error", "message": str(exc)})


def _reader(pc: RTCPeerConnection, sink: PeerSink, incoming: list, gone: asyncio.Event):
    async def read(session) -> None:
        tasks = [asyncio.create_task(_pump_audio(t, session)) for t in incoming]
        tasks.append(asyncio.create_task(_pump_controls(sink, session)))
        try:
            try:
                await asyncio.wait_for(_connected(pc, gone), CONNECT_TIMEOUT)
            except asyncio.TimeoutError:
                log.info("a WebRTC peer did not connect within %g s", CONNECT_TIMEOUT)
                return
            await gone.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return read


async def _connected(pc, gone: asyncio.Event) -> None:
    while pc.connectionState != "connected" and not gone.is_set():
        await asyncio.sleep(0.05)


async def _parse_offer(request, hub: Hub):
    """(sdp, session params, whip) of a POST /offer; ValueError says what is wrong."""
    if request.content_type == "application/sdp":
        return await request.text(), hub.params(request.query), True
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise ValueError('POST /offer takes JSON {"sdp": ..., "type": "offer"} or an application/sdp body')
    return body["sdp"], hub.params(body), False


def add_routes(app: web.Application, hub: Hub) -> None:
    peers: dict[str, RTCPeerConnection] = {}

    async def offer(request):
        try:
            sdp, params, whip = await _parse_offer(request, hub)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        busy = hub.refuse()
        if busy:
            return web.json_response({"error": busy}, status=503)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pacer, gone, incoming = Pacer(hub.engine.size), asyncio.Event(), []
        sink = PeerSink(pacer, pc)
        pc.on("track", lambda t: incoming.append(t) if t.kind == "audio" else None)
        pc.on("datachannel", sink.attach)

        @pc.on("connectionstatechange")
        def on_state():
            if pc.connectionState in ("failed", "closed"):
                gone.set()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            if not any(t.kind == "video" for t in pc.getTransceivers()):
                raise ValueError("the offer must receive video (add a recvonly video transceiver)")
            pc.addTrack(VideoOut(pacer))
            if any(t.kind == "audio" for t in pc.getTransceivers()):
                pc.addTrack(AudioOut(pacer))
            await pc.setLocalDescription(await pc.createAnswer())
        except ValueError as exc:  # aiortc says what it cannot use in the SDP with ValueError too
            await pc.close()
            return web.json_response({"error": f"cannot answer this offer: {exc}"}, status=400)
        pid = uuid.uuid4().hex
        peers[pid] = pc
        hub.reserve(pc.close)

        async def run():
            try:
                await hub.serve(sink, _reader(pc, sink, incoming, gone), params)
            finally:
                hub.release(pc.close)
                peers.pop(pid, None)
                await pc.close()

        asyncio.get_running_loop().create_task(run())
        answer = pc.localDescription
        if whip:
            return web.Response(status=201, text=answer.sdp, content_type="application/sdp",
                                headers={"Location": f"/offer/{pid}"})
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "id": pid})

    async def hang_up(request):
        pc = peers.get(request.match_info["pid"])
        if pc is None:
            return web.json_response({"error": "no such session"}, status=404)
        await pc.close()
        return web.Response(status=200)

    app.router.add_post("/offer", offer)
    app.router.add_delete("/offer/{pid}", hang_up)
