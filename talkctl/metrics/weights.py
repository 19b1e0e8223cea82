"""Where downloaded model weights are looked up: $TALKCTL_WEIGHTS or ~/.cache/talkctl/weights."""
from __future__ import annotations

import os
from pathlib import Path


def weights_dir() -> Path:
    """Where talkctl looks for model weight files first."""
    env = os.environ.get("TALKCTL_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "talkctl" / "weights"


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)
