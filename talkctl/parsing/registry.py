"""Parsing backends (kind "parsing"): per-frame labels 0 background, 1 head, 2 neck, 3 torso.

  mediapipe  selfie segmentation (the model ships in the mediapipe 0.10.21 wheel) for the
             person, cut into head / neck / torso with the tracked landmarks (parsing.regions).
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
from pathlib import Path

from talkctl.backends import Backend, register
from talkctl.parsing import facexlib_weights

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


def _load_mediapipe():
    from talkctl.parsing.mediapipe_backend import MediapipeParser

    return MediapipeParser


def _load_facexlib():
    from talkctl.parsing.facexlib_backend import FacexlibParser

    return FacexlibParser


def _facexlib_probe(device: str) -> str | None:
    return facexlib_weights.probe(device)


register(Backend("parsing", "mediapipe", _mediapipe_probe, _load_mediapipe,
                 description="selfie segmentation + landmark geometry (no downloads)", devices=("cpu", "cuda"),
                 priority=20))
register(Backend("parsing", "facexlib", _facexlib_probe, _load_facexlib,
                 description="facexlib BiSeNet face parsing (needs torchvision + parsing_bisenet.pth)",
                 devices=("cpu", "cuda"), priority=10))
