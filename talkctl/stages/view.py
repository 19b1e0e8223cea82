"""view: the trained head (and torso) in 3D in a browser, speaking, with orbit / zoom / pan.

    talkctl view --run RUN [--audio FILE] [--host 127.0.0.1] [--port 8080]

A local viser server (talkctl.viewer); it prints the URL and serves until Ctrl-C. Drives: the
held-out clip, the training clip, and --audio FILE; a frame slider, play, toggles for head,
torso, background plate, Gaussian centres and the tracked camera path; landmark-driven heads
take --edit values live. Binds to 127.0.0.1 unless --host says otherwise.

It writes no artifact: the runner checks its inputs and holds the run's lock while it serves.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from talkctl.errors import MissingToolError, UsageError

VERSION = 1
DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8080,
    "audio": None,          # another drive: this audio file (poses and blinks borrowed as render does)
    "seconds": 0.0,         # serve this long, then stop (0: until Ctrl-C)
    "pose": "train", "pose_start": 0, "blink": "source",
    "landmarks": "auto", "edit": "",
}
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)


def run(ctx, cfg: dict) -> dict:
    if importlib.util.find_spec("viser") is None:
        raise MissingToolError("`talkctl view` needs viser: pip install 'talkctl[view]'")
    if not 0 <= int(cfg["port"]) <= 65535:
        raise UsageError(f"--port {cfg['port']} is not a port number (0..65535; 0 = any free port)")
    from talkctl.viewer import Viewer

    viewer = Viewer(ctx.run, ctx.device, Path(cfg["audio"]) if cfg["audio"] else None, cfg, ctx.log)
    url = None
    try:
        url = viewer.listen(str(cfg["host"]), int(cfg["port"]))
        ctx.log.info("talkctl view: %s", url)
        viewer.build()
        with ctx.progress(None, f"talkctl view: open {url} in a browser (Ctrl-C stops)"):
            viewer.serve(float(cfg["seconds"]))
    except OSError as exc:
        if url is not None:
            raise
        raise UsageError(f"cannot listen on {cfg['host']}:{cfg['port']}: {exc.strerror or exc}; "
                         "choose another --port") from None
    except KeyboardInterrupt:  # Ctrl-C is how a viewer ends
        pass
    finally:
        viewer.stop()
    fps = viewer.play_fps()
    return {"url": url, "frames_played": viewer.stats["shown"], "play_fps": round(fps, 1) if fps else None}
