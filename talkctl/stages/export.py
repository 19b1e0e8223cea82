"""export: the head's Gaussians as files other 3DGS tools read (INRIA .ply, web .splat).

    talkctl export --run RUN [--format ply|splat] [--frame N | --audio FILE --frames a:b] [-o OUT]

Without --frame/--frames: the canonical head (deform.h5's Gaussians, undeformed). With --frame N:
the head deformed as in frame N of the training clip (its own audio and blink). With --frames a:b:
frames a..b-1, of --audio FILE when given (poses and blinks as `render` borrows them), else of the
training clip; one file per frame, `head_<frame>.<format>` in the output folder. Positions are
in the canonical head space (the head pose is the camera's, as in every talkctl artifact).
Landmark-driven heads take their landmarks as render does (--landmarks, --edit).

It writes no artifact: the runner checks its inputs and holds the run's lock.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from talkctl.errors import UsageError
from talkctl.gs.gaussians import write_ply, write_splat
from talkctl.head.drive import audio_drive, clip_drive, feed, with_landmarks
from talkctl.head.models import load_head

VERSION = 1
FORMATS = {"ply": write_ply, "splat": write_splat}
DEFAULTS = {
    "format": "ply",        # ply (INRIA 3DGS, every viewer) | splat (32 bytes a splat, web viewers)
    "frame": -1,            # one frame of the training clip (-1: the canonical head)
    "frames": "",           # a:b, a range of frames (of --audio when given, else of the training clip)
    "audio": None,          # driving audio for --frames
    "output": None,         # a file (one export) or a folder (--frames); default RUN/export/
    "pose": "train", "pose_start": 0, "blink": "source",  # how --audio borrows poses and blinks (as render)
    "landmarks": "auto", "edit": "",                      # landmark-driven heads (as render)
}
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)


def frame_range(text: str) -> tuple[int, int]:
    """"a:b" -> (a, b) with 0 <= a < b; UsageError otherwise."""
    try:
        a, b = (int(v) for v in str(text).split(":"))
    except ValueError:
        raise UsageError(f"--frames {text!r} is not a:b (first frame, one past the last), e.g. --frames 0:25") from None
    if not 0 <= a < b:
        raise UsageError(f"--frames {text}: need 0 <= a < b")
    return a, b


def run(ctx, cfg: dict) -> dict:
    fmt = str(cfg["format"])
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if cfg["audio"] is not None and not cfg["frames"]:
        raise UsageError("--audio needs --frames a:b (which frames of that audio to export)")
    head = load_head(ctx.run, ctx.device, "torch")
    out = Path(cfg["output"]).expanduser() if cfg["output"] else ctx.run.file("export")
    if not cfg["frames"] and int(cfg["frame"]) < 0:
        target = out if out.suffix else out / f"head.{fmt}"
        target.parent.mkdir(parents=True, exist_ok=True)
        FORMATS[fmt](target, head.gaussians.state_arrays())
        return {"format": fmt, "files": [str(target)], "what": "canonical head", "gaussians": head.gaussians.num}
    frames = (int(cfg["frame"]), int(cfg["frame"]) + 1) if not cfg["frames"] else frame_range(cfg["frames"])
    drive = _drive(ctx, cfg, *frames)
    idx = np.arange(frames[0], frames[1]) - (0 if cfg["audio"] is not None else frames[0])
    if cfg["audio"] is not None and frames[1] > drive.n_frames:
        raise UsageError(f"--frames {cfg['frames']}: the audio has {drive.n_frames} frames")
    single = not cfg["frames"] and out.suffix
    folder = out.parent if single else out
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, len(idx), 8):  # a few frames at a time: memory flat in the range's length
        part = idx[start:start + 8]
        rel = feed(head, drive, part)
        for i, arrays in zip(part, head.deformed_arrays(rel, drive.blink[part])):
            frame = int(i) + (0 if cfg["audio"] is not None else frames[0])
            target = out if single else folder / f"head_{frame:05d}.{fmt}"
            FORMATS[fmt](target, arrays)
            files.append(str(target))
    return {"format": fmt, "files": files, "what": drive.audio_description, "gaussians": head.gaussians.num}


def _drive(ctx, cfg, a: int, b: int):
    if cfg["audio"] is not None:
        drive = audio_drive(ctx.run, Path(cfg["audio"]), cfg, ctx.device)
    else:
        drive = clip_drive(ctx.run, a, b)
        if drive.n_frames < b - a:
            raise UsageError(f"frames {a}..{b - 1}: the training clip has {a + drive.n_frames} frames with audio")
    return with_landmarks(ctx.run, drive, cfg, ctx.device)
