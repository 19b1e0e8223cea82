"""The HTTP side of `talkctl serve`: aiohttp routes, the token check, the session limit, shutdown.

    GET /        the page (talkctl/live/static, bundled: works offline)
    GET /ws      the WebSocket stream (live/ws.py, live/protocol.py); ?level_db=X fixes the speech
                 level, ?max_lag_ms=X the lateness that makes a session skip frames (0: never)
    POST /offer  WebRTC (live/webrtc.py, needs aiortc): audio in, video + the same audio out
    GET /health  {"status": "ok", ...}
    GET /stats   sessions, fps, latency and render-time percentiles

With a token every request must carry it: `Authorization: Bearer T` or `?token=T` (a browser's
WebSocket cannot set headers). The page is read from the package once, at start: nothing a
request says reaches the file system. One session more than max_sessions is told so and closed (code 1013).
SIGINT / SIGTERM (or `should_stop`) close every session with code 1001, then the listener.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import math
import signal
import threading
import time
from importlib import resources
from typing import Callable

from aiohttp import web

from talkctl.live.engine import Engine
from talkctl.live.hub import Hub, ServeOptions, webrtc_missing  # noqa: F401 (ServeOptions: the app's options)
from talkctl.live.stats import Stats
from talkctl.live.ws import ws_handler

log = logging.getLogger("talkctl.serve")
SCRIPTS = ("page.js", "rtc.js")

STATS = web.AppKey("stats", Stats)


def page_html() -> bytes:
    """The page with its scripts inlined: one request, which carries the token in its URL."""
    static = resources.files("talkctl.live").joinpath("static")
    html = static.joinpath("index.html").read_text(encoding="utf-8")
    for name in SCRIPTS:
        script = static.joinpath(name).read_text(encoding="utf-8")
        html = html.replace(f'<script src="{name}"></script>', f"<script>\n{script}</script>")
    return html.encode("utf-8")


def make_app(engine: Engine, opts: ServeOptions) -> web.Application:
    hub = Hub(engine, opts)
    rtc = webrtc_missing() is None if opts.webrtc is None else opts.webrtc
    stats = hub.stats
    html = page_html()

    @web.middleware
    async def require_token(request, handler):
        if opts.token:
            auth = request.headers.get("Authorization", "")
            given = auth[7:] if auth.startswith("Bearer ") else request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), opts.token.encode()):
                return web.json_response({"error": "missing or wrong token"}, status=401)
        return await handler(request)

    async def page(request):
        return web.Response(body=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def health(request):
        return web.json_response({"status": "ok", "size": engine.size, "sessions": stats.active,
                                  "max_sessions": opts.max_sessions, "webrtc": rtc})

    async def stats_route(request):
        return web.json_response({**stats.as_dict(), "size": engine.size,
                                  "lookahead_ms": round(engine.lookahead_s * 1000)})

    async def close_sessions(app):
        await hub.close_all()

    app = web.Application(middlewares=[require_token], client_max_size=opts.max_message)
    app.router.add_get("/", page)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats_route)
    app.router.add_get("/ws", ws_handler(hub))
    if rtc:
        from talkctl.live.webrtc import add_routes

        add_routes(app, hub)
    else:
        async def no_webrtc(request):
            why = webrtc_missing() or "WebRTC is off (--webrtc off)"
            return web.json_response({"error": why}, status=501)

        app.router.add_post("/offer", no_webrtc)
    app.on_shutdown.append(close_sessions)
    app[STATS] = stats
    return app


def run_server(engine: Engine, opts: ServeOptions, host: str = "127.0.0.1", port: int = 8000,
               on_ready: Callable[[str], None] | None = None, seconds: float = 0.0,
               should_stop: threading.Event | None = None) -> dict:
    """Serve until SIGINT/SIGTERM, `seconds` (0: no limit) or `should_stop`; returns the final stats."""
    return asyncio.run(_serve(engine, opts, host, port, on_ready, seconds, should_stop))


async def _serve(engine, opts, host, port, on_ready, seconds, should_stop) -> dict:
    app = make_app(engine, opts)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests, embedding)
            pass
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]
        if on_ready is not None:
            on_ready(f"http://{host}:{bound}/")
        t_end = time.monotonic() + seconds if seconds > 0 else math.inf
        while not stop.is_set() and time.monotonic() < t_end and not (should_stop and should_stop.is_set()):
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.2)
            except asyncio.TimeoutError:
                pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (ValueError, RuntimeError, NotImplementedError):
                pass
        await runner.cleanup()  # on_shutdown closes the sessions first
    return app[STATS].as_dict()
