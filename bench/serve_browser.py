"""Headless Chromium opens the `talkctl serve` page with a fake microphone fed from a WAV, and
takes a screenshot: the face should be on the canvas, with the page's live fps and latency.

Skips (exit 0, says so) when Chromium is absent. Drives Chromium through its DevTools protocol
(aiohttp's WebSocket client), in real time: the page streams the WAV as microphone audio
(?autostart=mic) over WebRTC (the default when the server has aiortc) or /ws (--transport ws),
the head speaks it, and after `--seconds` the page's figures and the server's /stats are read and
the screenshot saved.

    python bench/serve_browser.py --run RUN [--size 256] [--seconds 8] [--transport webrtc|ws]
        [--out bench/results/serve_page.png]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import RESULTS, load_avg, write_json
from serve import free_port, server_stats, speech, start_server, wait_ready


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


async def cdp_target(port: int, timeout: float = 60) -> str:
    import aiohttp

    t_end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < t_end:
            try:
                async with s.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t.get("type") == "page"]
                    if pages:
                        return pages[0]["webSocketDebuggerUrl"]
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.3)
    raise SystemExit("chromium's DevTools endpoint did not come up")


async def drive(debug_url: str, page_url: str, seconds: float, out: Path) -> dict:
    import aiohttp

    ids = iter(range(1, 1 << 30))

    async with aiohttp.ClientSession() as s, s.ws_connect(debug_url, max_msg_size=0) as ws:
        async def call(method: str, **params):
            i = next(ids)
            await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
            async for msg in ws:
                m = json.loads(msg.data)
                if m.get("id") == i:
                    return m.get("result", {})

        await call("Emulation.setDeviceMetricsOverride", width=900, height=560, deviceScaleFactor=1, mobile=False)
        await call("Page.enable")
        await call("Page.navigate", url=page_url)
        await asyncio.sleep(seconds)
        figures = await call("Runtime.evaluate", returnByValue=True, expression=(
            "JSON.stringify(Object.fromEntries(['transport','state','fps','latency','server','counts','srvsize','log']"
            ".map(k => [k, document.getElementById(k).textContent])))"))
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        return json.loads(figures["result"]["value"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--transport", choices=("webrtc", "ws"), default="webrtc")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_page.png")
    a = ap.parse_args()
    chrome = chromium()
    if chrome is None:
        print("skipped: no chromium here (apt-get install chromium)")
        return
    from talkctl.media.ffmpeg import write_wav

    tmp = Path(tempfile.mkdtemp(prefix="talkctl_page_"))
    wav, source = speech(a.seconds + 5)
    fake_mic = write_wav(tmp / "mic.wav", wav, 16000)
    server, url = start_server(a.run, a.size, 2)
    port = free_port()
    browser = None
    try:
        asyncio.run(wait_ready(url, server))
        browser = subprocess.Popen([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                                    f"--remote-debugging-port={port}", "--window-size=900,560",
                                    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                    f"--use-file-for-fake-audio-capture={fake_mic}",
                                    "--autoplay-policy=no-user-gesture-required", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        query = "?autostart=mic" + ("&transport=ws" if a.transport == "ws" else "")
        figures = asyncio.run(drive(asyncio.run(cdp_target(port)), url + query, a.seconds, a.out))
        stats = asyncio.run(server_stats(url))
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(30)
        server.terminate()
        server.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"page figures: {figures}\nserver: {stats}\nscreenshot: {a.out}")
    write_json(a.out.with_suffix(".json"), {"chromium": chrome, "audio": source, "size": a.size, "seconds": a.seconds,
                                            "transport": a.transport, "figures": figures, "server_stats": stats,
                                            "screenshot": str(a.out.name), "load_avg": load_avg()})


if __name__ == "__main__":
    main()
