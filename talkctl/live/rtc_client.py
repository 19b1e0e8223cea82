"""A WebRTC client of `talkctl serve` (aiortc), for scripts, tests and bench/serve.py: sends audio
in real time as a microphone would, receives the head's video and the audio that comes back.

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

from talkctl.live.protocol import float_to_pcm16
from talkctl.timebase import SAMPLE_RATE

PACKET = SAMPLE_RATE // 50  # 20 ms


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
    import av
    from aiortc.mediastreams import MediaStreamError

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.perf_counter()
        if track.kind == "video":
            res.frames.append((now, frame.to_ndarray(format="rgb24")))
            continue
        for f in resampler.resample(frame):
            x = f.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
            if res.audio_t0 is None:
                res.audio_t0 = now - len(x) / SAMPLE_RATE
            res.audio.append(x)


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
