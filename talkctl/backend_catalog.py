"""Imports every module that registers backends, so registries are complete.

Each import must be cheap: owner modules register `Backend` entries whose heavy
imports happen inside `probe`/`load`, never at module import time.
"""
from __future__ import annotations

import importlib

OWNERS = (
    "talkctl.kernels.raster",
    "talkctl.kernels.hashgrid",
    "talkctl.audio.registry",
    "talkctl.face.landmarks",
    "talkctl.parsing.registry",
)

for _mod in OWNERS:
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as exc:  # owner not written yet
        if not (exc.name and _mod.startswith(exc.name)):
            raise
