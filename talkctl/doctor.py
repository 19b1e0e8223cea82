"""`talkctl doctor`: ffmpeg, torch and devices, and every backend's probe."""
from __future__ import annotations

import os
import platform


def _live(add) -> None:
    """`talkctl serve`'s optional packages: aiohttp (the server), aiortc (its WebRTC)."""
    import importlib.metadata as md

    for pkg, what, extra in (("aiohttp", "serve: HTTP + WebSocket", "serve"), ("aiortc", "serve: WebRTC", "live")):
        try:
            add("live", pkg, True, f"{what} ({md.version(pkg)})")
        except md.PackageNotFoundError:
            add("live", pkg, False, f"{what}: not installed; pip install 'talkctl[{extra}]'")


def checks() -> list[dict]:
    rows = []

    def add(kind, name, usable, detail):
        rows.append({"kind": kind, "name": name, "usable": bool(usable), "detail": detail})

    add("python", platform.python_implementation(), True, platform.python_version())
    from talkctl.media.ffmpeg import ffmpeg_exe

    try:
        add("tool", "ffmpeg", True, ffmpeg_exe())
    except Exception as exc:
        add("tool", "ffmpeg", False, getattr(exc, "message", str(exc)))
    try:
        import torch

        wait = os.environ.get("OMP_WAIT_POLICY", "unset")  # PASSIVE: see cli.main
        add("torch", "torch", True, f"{torch.__version__}, {torch.get_num_threads()} CPU threads, OMP_WAIT_POLICY={wait}")
        cuda = torch.cuda.is_available()
        add("device", "cuda", cuda, torch.cuda.get_device_name(0) if cuda else "no CUDA GPU visible")
    except ImportError as exc:
        add("torch", "torch", False, str(exc))
        cuda = False
    _live(add)
    from talkctl import backends, frame_cache

    add("cache", "frames", *frame_cache.describe())

    device = "cuda" if cuda else "cpu"
    for kind in backends.KINDS:
        for b in backends.available(kind):
            reasons = {d: b.why_unusable(d) for d in b.devices}
            usable_on = [d for d, r in reasons.items() if r is None and (d == "cpu" or cuda)]
            detail = b.description
            no_weights = b.why_no_weights() if usable_on else None
            if no_weights:  # usable means usable: installed is not enough without the weights
                usable_on, detail = [], f"{detail} -- {no_weights}"
            elif not usable_on:
                why = reasons.get(device) or next(iter(reasons.values()))
                detail = f"{why}" if not detail else f"{detail} -- {why}"
            else:
                detail = f"{detail} (usable on {', '.join(usable_on)})".strip()
            add(kind, b.name, bool(usable_on), detail)
    return rows
