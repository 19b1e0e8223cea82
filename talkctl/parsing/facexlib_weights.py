"""Where facexlib's face-parsing weights are looked for, and whether they (and facexlib) are here.

Cheap to import: nothing of facexlib or torchvision is imported, only looked up.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

FACEXLIB_WEIGHTS = {"bisenet": "parsing_bisenet.pth", "parsenet": "parsing_parsenet.pth"}
FACEXLIB_URL = "https://github.com/xinntao/facexlib/releases/download/{tag}/{file}"
FACEXLIB_TAGS = {"bisenet": "v0.2.0", "parsenet": "v0.2.2"}


def weights_dirs() -> list[Path]:
    """Where weight files are looked for, in order: $TALKCTL_WEIGHTS, ~/.cache/talkctl/weights,
    and facexlib's own folder (site-packages/facexlib/weights, where it downloads to)."""
    dirs = []
    if os.environ.get("TALKCTL_WEIGHTS"):
        dirs.append(Path(os.environ["TALKCTL_WEIGHTS"]).expanduser())
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "talkctl" / "weights")
    spec = importlib.util.find_spec("facexlib")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "weights")
    return dirs


def find_weights(filename: str) -> Path | None:
    for d in weights_dirs():
        if (d / filename).is_file():
            return d / filename
    return None


def probe(device: str) -> str | None:
    files = " or ".join(FACEXLIB_WEIGHTS.values())
    if importlib.util.find_spec("torchvision") is None:
        return ("needs facexlib and torchvision, and torchvision is not installed (there is no working "
                f"CPU torchvision build for this torch here); with both, put {files} in {weights_dirs()[0]}")
    if importlib.util.find_spec("facexlib") is None:
        return f"facexlib is not installed: pip install facexlib, then put {files} in {weights_dirs()[0]}"
    if not any(find_weights(f) for f in FACEXLIB_WEIGHTS.values()):
        urls = " or ".join(FACEXLIB_URL.format(tag=FACEXLIB_TAGS[m], file=f) for m, f in FACEXLIB_WEIGHTS.items())
        return f"weight file {files} not found in {', '.join(map(str, weights_dirs()))}; download it from {urls}"
    return None
