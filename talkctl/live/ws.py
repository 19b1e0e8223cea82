"""The /ws transport: PCM16 and JSON control in, framed JPEGs and JSON events out (live/protocol.py)."""
from __future__ import annotations

import json
import time

from aiohttp import WSCloseCode, WSMsgType, web

from talkctl.live.hub import TRY_AGAIN_LATER, Hub
from talkctl.live.protocol import pack_frame, parse_control, pcm16_to_float


class WsSink:
    image = "jpeg"
    wants_audio = False

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws

    async def frame(self, index, kind, audio_time, image, pcm) -> float:
        await self.ws.send_bytes(pack_frame(index, kind, audio_time, image))
        return time.perf_counter()

    async def event(self, obj: dict) -> None:
        if not self.ws.closed:
            try:
                await self.ws.send_str(json.dumps(obj))
            except ConnectionError:
                pass

    async def close(self, code: int = 1000) -> None:
        await self.ws.close(code=code)


def reader(ws: web.WebSocketResponse):
    async def read(session) -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            try:
                if msg.type == WSMsgType.BINARY:
                    await session.audio(pcm16_to_float(msg.data))
                else:
                    await session.control(parse_control(msg.data))
            except ValueError as exc:  # a bad message is answered, the session goes on
                await session.sink.event({"event": "error", "message": str(exc)})
    return read


def ws_handler(hub: Hub):
    async def ws_route(request):
        try:
            params = hub.params(request.query)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        ws = web.WebSocketResponse(max_msg_size=hub.opts.max_message, heartbeat=30.0)
        await ws.prepare(request)
        busy = hub.refuse()
        if busy:
            await ws.send_str(json.dumps({"event": "error", "message": busy}))
            await ws.close(code=TRY_AGAIN_LATER, message=b"server busy")
            return ws

        async def closer():
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

        hub.reserve(closer)
        try:
            await hub.serve(WsSink(ws), reader(ws), params)
        finally:
            hub.release(closer)
        return ws
    return ws_route
