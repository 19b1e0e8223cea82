"""The /ws wire format.

Client -> server:
  binary  16 kHz mono little-endian PCM16, any length (even number of bytes); the first one starts
          speech, no handshake
  text    JSON control: {"op": "interrupt"} (drop what is not shown yet, idle now),
          {"op": "stop"} (finish the audio sent, then close)
Server -> client:
  binary  HEADER + one JPEG: magic b"TKF1", uint32 frame index (every frame of the session),
          uint8 kind (0 speech, 1 idle), 3 pad bytes, float64 audio time (s) of the start of the
          40 ms of the session's audio the frame shows (NaN for idle frames); little-endian
  text    JSON events: {"event": "hello", ...}, {"event": "end", "frames": N} (an utterance is done),
          {"event": "interrupted"}, {"event": "stopped"}, {"event": "error", "message": ...}
Session audio time counts every sample received, so a client maps frames to what it sent.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"TKF1"
HEADER = struct.Struct("<4sIB3xd")
SPEECH, IDLE = 0, 1
OPS = ("interrupt", "stop")


@dataclass(frozen=True)
class FrameHeader:
    index: int
    kind: int
    audio_time: float


def pack_frame(index: int, kind: int, audio_time: float, jpeg: bytes) -> bytes:
    return HEADER.pack(MAGIC, index & 0xFFFFFFFF, kind, audio_time) + jpeg


def unpack_frame(msg: bytes) -> tuple[FrameHeader, bytes]:
    if len(msg) < HEADER.size or msg[:4] != MAGIC:
        raise ValueError("not a talkctl frame message")
    magic, index, kind, t = HEADER.unpack_from(msg)
    return FrameHeader(index, kind, t), msg[HEADER.size:]


def is_idle_time(t: float) -> bool:
    return math.isnan(t)


def pcm16_to_float(data: bytes) -> np.ndarray:
    if len(data) % 2:
        raise ValueError(f"PCM16 audio comes in whole 2-byte samples; got {len(data)} bytes")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(np.asarray(x, dtype=np.float64), -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


def parse_control(text: str) -> str:
    """The op of a control message; ValueError with the reason otherwise."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise ValueError("control messages are JSON, e.g. {\"op\": \"interrupt\"}") from None
    op = msg.get("op") if isinstance(msg, dict) else None
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    return op
