"""Clients of `talkctl serve` for scripts, tests and bench/serve.py, both sending audio in real
time as a microphone would.

    sent, got = await ws_stream("http://127.0.0.1:8000/", wav16k)   # /ws: PCM16 in 40 ms chunks, then stop
    sent   [(first sample of a chunk, perf_counter when sent)]
    got    [(first sample a speech frame shows, perf_counter when it arrived)]

    res = await call("http://127.0.0.1:8000/", wav16k, seconds=6.0, token=None, level_db=None)
    res.frames   [(arrival perf_counter, (S,S,3) uint8 RGB)]
    res.audio    float32 16 kHz mono received, from `res.audio_t0` (perf_counter of its first sample)
    res.sent_t0  perf_counter when the first sent sample was captured
    res.events   the session's JSON events (hello, end, stopped, ...)
"""
from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field

import numpy as np

from talkctl.live.protocol import SPEECH, float_to_pcm16, unpack_frame
from talkctl.timebase import SAMPLE_RATE, SAMPLES_PER_FRAME

PACKET = SAMPLE_RATE // 50  # 20 ms


async def ws_stream(url: str, wav: np.ndarray, query: str = "") -> tuple[list, list]:
    """Stream `wav` to url + "ws" + query in real time, 40 ms a message, then {"op": "stop"}; collect
    the speech frames until the server closes."""
    import aiohttp

    sent, got = [], []

    async def send(ws):
        t0 = time.perf_counter()
        for k, i in enumerate(range(0, len(wav), SAMPLES_PER_FRAME)):
            await asyncio.sleep(max(0.0, t0 + k * SAMPLES_PER_FRAME / SAMPLE_RATE - time.perf_counter()))
            sent.append((i, time.perf_counter()))
            await ws.send_bytes(float_to_pcm16(wav[i:i + SAMPLES_PER_FRAME]))
        await ws.send_str(json.dumps({"op": "stop"}))

    async with aiohttp.ClientSession() as s, s.ws_connect(url + "ws" + query, max_msg_size=0) as ws:
        sender = asyncio.create_task(send(ws))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                h, _ = unpack_frame(msg.data)
                if h.kind == SPEECH:
                    got.append((round(h.audio_time * SAMPLE_RATE), time.perf_counter()))
        await sender
    return sent, got


@dataclass
class CallResult:
    frames: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    audio_t0: float | None = None
    sent_t0: float | None = None
    events: list = field(default_factory=list)
    status: int = 0
    error: str | None = None

    def audio_array(self) -> np.ndarray:
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)


def wav_track(wav: np.ndarray, res: CallResult):
    """An audio track that plays `wav` (16 kHz mono float) in real time, then silence."""
    import av
    from aiortc import MediaStreamTrack

    class WavTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self):
            super().__init__()
            self.m = 0

        async def recv(self):
            if res.sent_t0 is None:
                res.sent_t0 = time.perf_counter()
            await asyncio.sleep(max(0.0, res.sent_t0 + self.m * PACKET / SAMPLE_RATE - time.perf_counter()))
            x = np.zeros(PACKET, np.float32)
            chunk = wav[self.m * PACKET:(self.m + 1) * PACKET]
            x[:len(chunk)] = chunk
            frame = av.AudioFrame(format="s16", layout="mono", samples=PACKET)
            frame.planes[0].update(float_to_pcm16(x))
            frame.sample_rate, frame.pts = SAMPLE_RATE, self.m * PACKET
            frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
            self.m += 1
            return frame

    return WavTrack()


async def _consume(track, res: CallResult) -> None:
    from aiortc.mediastreams import MediaStreamError

    from talkctl.live.webrtc import mono16k

    if track.kind == "audio":
        async for x in mono16k(track):
            if res.audio_t0 is None:
                res.audio_t0 = time.perf_counter() - len(x) / SAMPLE_RATE
            res.audio.append(x)
        return
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        res.frames.append((time.perf_counter(), frame.to_ndarray(format="rgb24")))


async def call(url: str, wav: np.ndarray | None, seconds: float, token: str | None = None,
               level_db: float | None = None, stop_after: bool = False) -> CallResult:
    """POST an offer to url + "offer", stream `wav` (None: send no audio), collect for `seconds`."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    res = CallResult()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("control")
    channel.on("message", lambda m: res.events.append(json.loads(m)))
    if wav is not None:
        pc.addTrack(wav_track(np.asarray(wav, np.float32), res))
    pc.addTransceiver("video", direction="recvonly")
    tasks = []
    pc.on("track", lambda t: tasks.append(asyncio.ensure_future(_consume(t, res))))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if level_db is not None:
            body["level_db"] = level_db
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.post(url + "offer", json=body, headers=headers) as r:
            res.status = r.status
            answer = await r.json()
        if r.status != 200:
            res.error = answer.get("error")
            return res
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.sleep(seconds)
        if stop_after and channel.readyState == "open":
            channel.send(json.dumps({"op": "stop"}))
            await asyncio.sleep(1.0)
        return res
    finally:
        await pc.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
