"""Send a WAV to `talkctl serve` and save the frames: python ws_client.py speech.wav [ws://127.0.0.1:8000/ws?max_lag_ms=0]
(max_lag_ms=0: every frame, however late; a live viewer leaves it out and late frames are skipped)"""
import asyncio, json, struct, sys, wave, aiohttp  # noqa: E401

async def main(path, url):
    with wave.open(path) as w:  # 16 kHz mono 16-bit PCM
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), "want 16 kHz mono PCM16"
        pcm = w.readframes(w.getnframes())
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.send_bytes(pcm)  # any chunking works; a live source sends as it records
        await ws.send_str(json.dumps({"op": "stop"}))  # finish what was sent, then close
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                _, index, kind, t = struct.unpack_from("<4sIB3xd", msg.data)  # 20-byte header, then a JPEG
                if kind == 0:  # 0 speech, 1 idle
                    open(f"frame_{index:05d}.jpg", "wb").write(msg.data[20:])

asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ws://127.0.0.1:8000/ws?max_lag_ms=0"))
