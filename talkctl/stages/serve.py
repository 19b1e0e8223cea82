"""serve: a trained run speaking audio as it arrives, live, over HTTP and a WebSocket.

    talkctl serve --run RUN [--host 127.0.0.1] [--port 8000] [--size 256] [--max-sessions N] [--token T]
        [--max-lag-ms 500] [--webrtc auto|on|off]

Loads the run once (talkctl.live.engine) and serves the page, /ws, POST /offer (WebRTC, with
aiortc: the `live` extra), /health and /stats
(talkctl.live.app) until Ctrl-C or SIGTERM, which close the sessions cleanly. Binds to 127.0.0.1
unless --host says otherwise; with --token (or TALKCTL_SERVE_TOKEN) every request must carry it.

It writes no artifact: the runner checks its inputs and holds the run's lock while it serves.
"""
from __future__ import annotations

import importlib.util
import os

from talkctl.config import NON_NEGATIVE, Range
from talkctl.errors import MissingToolError, UsageError

VERSION = 1
DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8000,
    "size": 256,            # frame side in pixels (0 = the training resolution)
    "max_sessions": 0,      # 0: one per two cores
    "token": None,          # None: TALKCTL_SERVE_TOKEN if set, else no token
    "lookahead_ms": 200,    # most audio past a frame the server may wait for (the model's need is checked)
    "pose": "train",        # train (the clip's head motion, ping-pong) | still (one pose, the clip's blinks)
    "idle_after_ms": 500,   # no audio this long ends an utterance (its last frames are made, then idle)
    "batch": 4,             # frames rendered at once by a session that fell behind
    "jpeg_quality": 85,
    "max_message_bytes": 1 << 20,
    "workers": 1,           # render threads shared by the sessions (each frame already uses every core)
    "rasterizer": "auto",
    "seconds": 0.0,         # serve this long, then stop (0: until Ctrl-C)
    "max_lag_ms": 500,      # a speech frame this late makes its session skip ahead (0: never; ?max_lag_ms= per session)
    "webrtc": "auto",       # POST /offer: auto (when aiortc is installed) | on (required) | off
}
WEBRTC = ("auto", "on", "off")
RANGES = {"port": Range(0, 65535), "size": Range(0, 4096), "max_sessions": Range(0, 1024), "lookahead_ms": NON_NEGATIVE,
          "idle_after_ms": NON_NEGATIVE, "batch": Range(1, 256), "jpeg_quality": Range(1, 100),
          "max_message_bytes": Range(1024, 1 << 30), "workers": Range(1, 64), "seconds": NON_NEGATIVE,
          "max_lag_ms": Range(0, 60000)}
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _options(cfg: dict):
    from talkctl.live.app import ServeOptions
    from talkctl.live.engine import default_max_sessions

    if not 0 <= int(cfg["port"]) <= 65535:
        raise UsageError(f"--port {cfg['port']} is not a port number (0..65535; 0 = any free port)")
    n = int(cfg["max_sessions"]) or default_max_sessions()
    if not 1 <= n <= 256:
        raise UsageError(f"--max-sessions {n} is out of range; use 1..256 (0 = one per two cores)")
    size = int(cfg["max_message_bytes"])
    if not 1024 <= size <= 64 << 20:
        raise UsageError(f"max_message_bytes={size} is out of range; use 1024..67108864")
    token = cfg["token"] if cfg["token"] is not None else os.environ.get("TALKCTL_SERVE_TOKEN") or None
    if not 0 <= float(cfg["max_lag_ms"]) <= 60000:
        raise UsageError(f"--max-lag-ms {cfg['max_lag_ms']} is out of range; use 0..60000 (0 = never skip frames)")
    return ServeOptions(max_sessions=n, token=str(token) if token else None, max_message=size,
                        idle_after=float(cfg["idle_after_ms"]) / 1000.0, batch=int(cfg["batch"]),
                        max_lag=float(cfg["max_lag_ms"]) / 1000.0, webrtc=_webrtc(str(cfg["webrtc"]).lower()))


def _webrtc(mode: str) -> bool:
    """Whether to serve POST /offer; --webrtc on without aiortc is an error naming the extra."""
    from talkctl.live.hub import webrtc_missing

    if mode not in WEBRTC:
        raise UsageError(f"--webrtc {mode!r} unknown; use {', '.join(WEBRTC)}")
    missing = webrtc_missing() if mode != "off" else None
    if missing and mode == "on":
        raise MissingToolError(missing)
    return mode != "off" and not missing


def run(ctx, cfg: dict) -> dict:
    if importlib.util.find_spec("aiohttp") is None:
        raise MissingToolError("`talkctl serve` needs aiohttp: pip install 'talkctl[serve]'")
    from talkctl.live.app import run_server
    from talkctl.live.engine import Engine
    from talkctl.live.hub import webrtc_missing

    opts = _options(cfg)
    host = str(cfg["host"])
    engine = Engine.load(ctx.run, ctx.device, int(cfg["size"]), str(cfg["pose"]), float(cfg["lookahead_ms"]),
                         int(cfg["jpeg_quality"]), int(cfg["workers"]), str(cfg["rasterizer"]))
    if str(cfg["webrtc"]).lower() == "auto" and not opts.webrtc:
        ctx.log.warning("%s; serving the page over /ws only", webrtc_missing())
    if host not in LOOPBACK and not opts.token:
        ctx.log.warning("serving on %s without a token: anyone who can reach this port can use it", host)
    urls = []
    with ctx.progress(None, "talkctl serve (Ctrl-C stops)") as task:
        def ready(url: str) -> None:
            urls.append(url)
            ctx.log.info("talkctl serve: %s (size %d, look-ahead %d ms, %d sessions, WebRTC %s)", url, engine.size,
                         round(engine.lookahead_s * 1000), opts.max_sessions, "on" if opts.webrtc else "off")
            task.update(open=url + (f"?token={opts.token}" if opts.token else ""))

        try:
            stats = run_server(engine, opts, host, int(cfg["port"]), ready, float(cfg["seconds"]))
        except OSError as exc:
            if urls:
                raise
            raise UsageError(f"cannot listen on {host}:{cfg['port']}: {exc.strerror or exc}; "
                             "choose another --port") from None
        finally:
            engine.close()
    return {"url": urls[0] if urls else None, "size": engine.size, "sessions_total": stats["sessions_total"],
            "frames": stats["frames"], "latency_ms": stats["latency_ms"]}
