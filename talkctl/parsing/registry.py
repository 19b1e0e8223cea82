"""Parsing backends (kind "parsing"): per-frame labels 0 background, 1 head, 2 neck, 3 torso.

  mediapipe  selfie segmentation (the model ships in the mediapipe 0.10.21 wheel) for the
             person, cut into head / neck / torso with the tracked landmarks (head_regions.py).
  facexlib   BiSeNet / ParseNet face parsing (19 CelebAMask-HQ classes) from facexlib, when it,
             torchvision and the weight file are installed.

Importing this module is cheap: probes look for files and packages without importing them;
the heavy imports happen in load(). A loaded backend is a factory `make(config, device) -> Parser`:
  parser.person(frame) -> (S,S) bool          person mask of one frame (for the background plate)
  parser.stream(items) -> iterator            items: (t, frame, landmarks) in frame order;
                                              yields (t, frame, labels (S,S) uint8) in order
  parser.close()
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from talkctl.backends import Backend, register

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


def _mediapipe_probe(device: str) -> str | None:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return "mediapipe is not installed: pip install mediapipe==0.10.21"
    root = Path(list(spec.submodule_search_locations)[0])
    model = root / "modules" / "selfie_segmentation" / "selfie_segmentation.tflite"
    if not model.is_file():
        return (f"this mediapipe has no bundled selfie-segmentation model ({model.name}); "
                "install mediapipe==0.10.21, the last release that ships it")
    return None


def _facexlib_probe(device: str) -> str | None:
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


def _load_mediapipe():
    from talkctl.parsing.mediapipe_backend import MediapipeParser

    return MediapipeParser


def _load_facexlib():
    from talkctl.parsing.facexlib_backend import FacexlibParser

    return FacexlibParser


register(Backend("parsing", "mediapipe", _mediapipe_probe, _load_mediapipe,
                 description="selfie segmentation + landmark geometry (no downloads)", devices=("cpu", "cuda"),
                 priority=20))
register(Backend("parsing", "facexlib", _facexlib_probe, _load_facexlib,
                 description="facexlib BiSeNet face parsing (needs torchvision + parsing_bisenet.pth)",
                 devices=("cpu", "cuda"), priority=10))
