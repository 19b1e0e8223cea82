"""Stage `parse`: head / neck / torso / background label maps, a background plate and the torso
training targets (parse.h5), from frames.h5 and track.h5.

Two passes over frames.h5, streamed in chunks (memory does not grow with the clip):
  1. background plate from at most `plate_frames` evenly spread frames (bg_plate.py);
  2. every frame: labels from the parsing backend (parsing.py), written frame by frame.

The torso stage's target is not stored: it is the frame under the neck and torso labels
(parsing/torso_target.py says how, and how neck_fill and neck_extend shape it); parse records
its settings, and the preview shows one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from talkctl import artifacts, backends
from talkctl.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, Range
from talkctl.errors import ArtifactError, StageError, UsageError, command
from talkctl.jpeg_frames import frame_images
from talkctl.parsing import plate as bg_plate
from talkctl.parsing import regions as hr
from talkctl.parsing.torso_target import torso_maker

VERSION = 3  # 2: the plate's unseen pixels filled smoothly (push-pull), rarely seen ones mixed; 3: torso targets as JPEG
# (no longer stored since: they are made from frames.h5 and the labels when read; an older parse.h5 that
# holds them reads the same, so it stays valid and nothing downstream is retrained for it)
DEFAULTS = {
    "parsing": "auto",  # backend: auto | mediapipe | facexlib
    "preview": False,  # write RUN/parse_preview.png
    "selfie_model": 0,  # mediapipe selfie segmentation: 0 general (square), 1 landscape
    "person_threshold": 0.5,
    "smooth_frames": 1,  # person probability averaged over +-this many frames
    "long_hair": True,  # grow hair below the jaw line (mediapipe backend)
    "facexlib_model": "bisenet",  # bisenet | parsenet
    "plate_frames": 200,  # frames sampled for the background plate
    "plate_dilate": 0.02,  # person mask grown by this fraction of the size before counting background
    "plate_min_seen": 0.02,  # a plate pixel must be uncovered in this fraction of the samples, else inpainted
    "head_dilate": 0.03,  # torso target: head removal grown into the background by this fraction (flyaway hair)
    "neck_fill": "extend",  # extend | background (see module doc)
    "neck_extend": 0.25,  # neck continued this many face heights up under the chin
    "chunk": 16,  # frames read at once
    "batch": 8,  # frames per network call (facexlib)
    "preview_frames": 8,
}
RANGES = {"selfie_model": Range(0, 1), "person_threshold": FRACTION, "smooth_frames": NON_NEGATIVE,
          "plate_frames": AT_LEAST_1, "plate_dilate": FRACTION, "plate_min_seen": FRACTION, "head_dilate": FRACTION,
          "neck_extend": Range(0, 2), "chunk": AT_LEAST_1, "batch": AT_LEAST_1, "preview_frames": AT_LEAST_1}
PRESETS = {
    "tiny": {"plate_frames": 40},
    "fast": {},
    "paper": {"plate_frames": 300},
}
NON_SEMANTIC = {"preview", "chunk", "batch", "preview_frames"}

LABEL_COLOURS = np.array([[0, 0, 0], [230, 40, 40], [40, 210, 60], [40, 90, 240]], np.uint8)


def resolve(cfg: dict, device: str) -> dict:
    """Check the settings, and make "auto" (or $TALKCTL_PARSING) the concrete backend, so the
    choice is fingerprinted."""
    _check_config(cfg)
    return {**cfg, "parsing": backends.select("parsing", cfg["parsing"], device).name}


def _check_config(cfg: dict) -> None:
    def bad(key, what):
        raise UsageError(f"parse setting {key} must be {what}, got {cfg[key]!r}")

    if cfg["neck_fill"] not in ("extend", "background"):
        bad("neck_fill", "extend or background")
    if cfg["facexlib_model"] not in ("bisenet", "parsenet"):
        bad("facexlib_model", "bisenet or parsenet")
    if cfg["selfie_model"] not in (0, 1):
        bad("selfie_model", "0 (general) or 1 (landscape)")
    if not 0 < cfg["person_threshold"] < 1:
        bad("person_threshold", "between 0 and 1")
    for key in ("plate_frames", "chunk", "batch", "preview_frames"):
        if cfg[key] < 1:
            bad(key, "at least 1")
    for key in ("smooth_frames", "plate_dilate", "plate_min_seen", "head_dilate", "neck_extend"):
        if cfg[key] < 0:
            bad(key, "0 or more")


def run(ctx, cfg) -> dict:
    _check_config(cfg)
    backend = backends.select("parsing", cfg["parsing"], ctx.device)
    ctx.use_backend("parsing", backend.name)
    t_start = time.time()
    lms = artifacts.read_track(ctx.run, ("landmarks2d",)).landmarks2d
    with ctx.read("frames") as ff:
        frames = frame_images(ff, "frames")
        T, S = _check_inputs(ctx, frames, lms)
        _layout(lms.shape[1])  # landmarks the regions cannot use are refused before any work
        parser = backend.get()(cfg, ctx.device, lms.shape[1])
        for text in getattr(parser, "native_log", ()):
            ctx.log.debug("%s start-up output: %s", backend.name, text)
        try:
            ctx.log.info("parse: %d frames of %dx%d, backend %s", T, S, S, backend.name)
            plate, seen = _plate(ctx, parser, frames, T, S, cfg)
            ctx.log.info("background plate: %.1f%% of pixels seen, rest inpainted", 100 * seen.mean())
            with ctx.write("parse") as out:
                summary = _main_pass(ctx, cfg, parser, frames, lms, out, T, S)
                out["background"] = plate
                out["background_seen"] = seen
                out.attrs.update(parsing_backend=backend.name, neck_fill=cfg["neck_fill"], fps=ff.attrs.get("fps", 25),
                                 size=S, label_names=json.dumps(hr.LABEL_NAMES))
        finally:
            parser.close()
    summary["background_seen"] = round(float(seen.mean()), 4)
    summary["frames_per_s"] = round(T / max(time.time() - t_start, 1e-6), 2)
    summary.update(when_up_to_date(ctx.run, cfg))
    return summary


def when_up_to_date(run, cfg: dict) -> dict:
    """`--preview` (also on an up-to-date run): the contact sheet from the artifacts."""
    if cfg.get("preview"):
        return {"preview": str(write_preview(run, cfg.get("preview_frames", 8)))}
    return {}


def _check_inputs(ctx, frames, lms) -> tuple[int, int]:
    fix = f"rerun {command('track', '--run', ctx.run, '--force')}"
    if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[3] != 3:
        raise ArtifactError(f"frames.h5 holds frames of shape {frames.shape}, expected (T,S,S,3): {fix}")
    if lms is None:
        raise ArtifactError(f"track.h5 holds no landmarks2d: {fix}")
    if lms.ndim != 3 or lms.shape[2] != 2:
        raise ArtifactError(f"track.h5 holds landmarks2d of shape {lms.shape}, expected (T,L,2): {fix}")
    if frames.shape[0] != lms.shape[0]:
        raise ArtifactError(f"frames.h5 has {frames.shape[0]} frames but track.h5 has {lms.shape[0]}: {fix}")
    if frames.shape[0] == 0:
        raise StageError(f"frames.h5 in {ctx.run} holds no frames: the video had none the tracker could use")
    return frames.shape[0], frames.shape[1]


def _layout(n_landmarks: int):
    try:
        return hr.layout_for(n_landmarks)
    except ValueError as exc:
        raise StageError(f"parse cannot use track.h5's landmarks: {exc}; rerun `talkctl track --landmarks mediapipe`") from None


def _plate(ctx, parser, frames, T: int, S: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    idx = bg_plate.sample_indices(T, cfg["plate_frames"])
    builder = bg_plate.PlateBuilder(len(idx), S, S)
    dil = int(round(cfg["plate_dilate"] * S))
    with ctx.progress(len(idx), "background plate") as task:
        for t in idx:  # one frame per chunk: single-frame reads are fast (h5py point selections are not)
            fr = frames[int(t)]
            builder.add(fr, bg_plate.background_mask(parser.person(fr), dil))
            task.advance(1)
    return builder.finish(min_count=max(1, int(round(cfg["plate_min_seen"] * len(idx)))))


def _items(frames, lms, T: int, chunk: int):
    for t0 in range(0, T, chunk):
        block = frames[t0:t0 + chunk]
        lmb = lms[t0:t0 + chunk]
        for k in range(len(block)):
            yield t0 + k, block[k], lmb[k]


def _main_pass(ctx, cfg, parser, frames, lms, out, T: int, S: int) -> dict:
    d_labels = out.create_dataset("labels", (T, S, S), np.uint8, **artifacts.frame_chunks((T, S, S)))
    counts = np.zeros(4, np.float64)
    no_head = 0
    with ctx.progress(T, "parse") as task:
        for t, frame, labels in parser.stream(_items(frames, lms, T, cfg["chunk"])):
            d_labels[t] = labels
            c = np.bincount(labels.ravel(), minlength=4)[:4]
            counts += c
            no_head += c[hr.HEAD] == 0
            task.advance(1)
    frac = counts / counts.sum()
    if no_head:
        ctx.log.warning("%d frames have no head pixels (face not found there?)", no_head)
    return {"frames": T, "size": S,
            **{f"{hr.LABEL_NAMES[k]}_fraction": round(float(frac[k]), 4) for k in range(4)},
            "frames_without_head": int(no_head)}


# ---- preview -----------------------------------------------------------------
def overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    col = LABEL_COLOURS[labels].astype(np.float32)
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * col[fg]
    return out.astype(np.uint8)


PREVIEW_TILE = 256


def _tile(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (PREVIEW_TILE, PREVIEW_TILE), interpolation=cv2.INTER_AREA)


def write_preview(run, n_frames: int = 8) -> Path:
    """RUN/parse_preview.png: coloured labels over sampled frames, the background plate (its
    never-seen part outlined) and one torso target, read back from frames.h5 and parse.h5."""
    with artifacts.open_for_read(run, "frames") as ff, artifacts.open_for_read(run, "parse") as pf:
        idx = bg_plate.sample_indices(pf["labels"].shape[0], n_frames)
        tiles = []
        for t in idx:
            im = _tile(overlay(frame_images(ff, "frames")[int(t)], pf["labels"][int(t)]))
            _caption(im, f"frame {t}")
            tiles.append(im)
        plate, seen = pf["background"][()], pf["background_seen"][()]
        t0 = int(idx[0])
        lm = artifacts.read_track(run, ("landmarks2d",)).landmarks2d
        make = torso_maker(json.loads(pf.attrs["config"]), plate.shape[0], hr.layout_for(lm.shape[1]), plate)
        tt = _tile(make(frame_images(ff, "frames")[t0], pf["labels"][t0], lm[t0]))
    _caption(tt, f"torso target, frame {idx[0]}")
    pl = plate.copy()
    contours, _ = cv2.findContours((~seen).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(pl, contours, -1, (255, 255, 0), max(1, plate.shape[0] // 256))
    pl = _tile(pl)
    _caption(pl, f"background plate ({100 * (1 - seen.mean()):.0f}% inpainted)")
    half = (len(tiles) + 1) // 2
    blank = np.zeros((PREVIEW_TILE, PREVIEW_TILE, 3), np.uint8)
    row1 = tiles[:half] + [pl]
    row2 = tiles[half:] + [blank] * (half - len(tiles[half:])) + [tt]
    sheet = np.concatenate([np.concatenate(row1, 1), np.concatenate(row2, 1)], 0)
    legend = np.full((22, sheet.shape[1], 3), 255, np.uint8)
    x = 6
    for k in (1, 2, 3):
        cv2.rectangle(legend, (x, 5), (x + 12, 17), tuple(int(c) for c in LABEL_COLOURS[k]), -1)
        cv2.putText(legend, hr.LABEL_NAMES[k], (x + 16, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 90
    sheet = np.concatenate([legend, sheet], 0)
    path = run.file("parse_preview.png")
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def _caption(img: np.ndarray, text: str) -> None:
    cv2.putText(img, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
