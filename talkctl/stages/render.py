"""render: a trained run + driving audio -> an .mp4 of the head saying it, with the audio muxed in.

    talkctl render --run RUN [--audio FILE] [-o OUT.mp4]    (through the stage runner, like every verb)

Driving audio: features made exactly like the run's (audio.recipe: same extractor, window and
normalisation). Without audio: the held-out part of the training clip (the last 1/11, never
trained on), self-driven: its own audio, poses and blinks (head.drive).

Frames are rendered in batches of `batch` and handed to the VideoWriter as they are made (never
collected), and the audio condition gets only the feature windows a batch needs, cut from the
(F, D) feature frames. What still grows with the audio's length: the waveform and the feature
frames (~0.1 MB per second of audio) and the feature extractor's transient arrays while it runs
once over the whole audio (measured: peak RSS 350 MB for 30 s, 810 MB for 5 min at 32 px). Speed is
measured separately for the model (deformation + rasterisation + compositing) and end to end
(including reading source frames and encoding); both go into the summary and the output's metadata.

Composite (head.composite): "portrait" blends the rendered lower face (portrait_region "head": the
whole head) into the run's own video frames, the template, cycled forward and backward with their
head poses; "model" is the rendered head over the rendered torso over the background plate; "auto"
(default) is portrait whenever the poses come from this run's video (pose train or still, or the
self-driven held-out frames), model otherwise. With --full-frame, portrait keeps the source video's
resolution everywhere outside the feathered face mask.

A landmark-driven head (train-deform --condition landmarks) gets landmarks instead of audio
(head.drive.with_landmarks): cfg "landmarks" auto | a2l | track | OTHER_RUN and "edit"
(mouth_scale=..., eyes_open=...); both go into the summary and metadata.

It writes no artifact: the runner checks its inputs and holds the run's lock, nothing is fingerprinted.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from talkctl import artifacts, memory
from talkctl.config import NON_NEGATIVE, Range
from talkctl.devices import device_name
from talkctl.errors import InputError, UsageError
from talkctl.head.composite import composited_batches, compositor_for
from talkctl.head.drive import audio_drive, self_drive, with_landmarks
from talkctl.head.renderer import Renderer
from talkctl.media.video_in import SourceFrames
from talkctl.media.video_out import VideoWriter, paste_full_frame, tag_mp4
from talkctl.progress import null_progress
from talkctl.timebase import FPS

VERSION = 1

DEFAULTS = {
    "audio": None,          # driving audio file (None: the held-out part of the training clip, self-driven)
    "output": None,         # output .mp4 (None: RUN/render.mp4)
    "full_frame": False,    # paste the render back into the source video's frames
    "composite": "auto",    # auto | portrait (the source video's frames, the face blended in) | model (head + torso + plate)
    "portrait_region": "lower",  # portrait: lower (nose, mouth, chin, jaw) | head (the whole head)
    "pose": "train",        # train | still | RUN_DIR | track.h5 | poses.npz ("still:PATH" holds one frame)
    "pose_start": 0,        # first source frame of the pose sequence
    "blink": "source",      # source (follow the pose source's blinks) | open
    "size": 0,              # output side in pixels (0 = the model's training resolution)
    "batch": 4,             # frames rendered at once (memory ~ batch x size^2: 8 held 20 MB more, no faster)
    "crf": 18,              # H.264 quality
    "encoder_preset": "medium",
    "rasterizer": "auto",   # auto: the compiled forward-only numba rasteriser on the CPU (gs.splat.inference_rasterizer)
    # landmark-driven heads (train-deform --condition landmarks), landmark_source.landmarks_for_drive:
    "landmarks": "auto",    # auto (a2l on the driving audio; self-driven without a2l.h5: the track) | a2l | track | OTHER_RUN
    "edit": "",             # e.g. mouth_scale=1.5,eyes_open=1
}
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)  # render writes no artifact: nothing is fingerprinted
RANGES = {"pose_start": NON_NEGATIVE, "size": Range(0, 4096), "batch": Range(1, 256), "crf": Range(0, 51)}


def run(ctx, cfg: dict) -> dict:
    output = cfg["output"] if cfg["output"] is not None else ctx.run.file("render.mp4")
    return render_to_file(ctx.run, Path(output), audio=cfg["audio"], cfg=cfg, device=ctx.device,
                          full_frame=bool(cfg["full_frame"]), progress=ctx.progress, log=ctx.log)


def _crop_attrs(run) -> tuple[list[int], list[int]]:
    attrs = artifacts.read_attrs(run, "frames") or {}
    return [int(v) for v in np.asarray(attrs["crop"])], [int(v) for v in np.asarray(attrs["source_size"])]


def _source_frames(run) -> tuple[SourceFrames, list[int]]:
    crop, _ = _crop_attrs(run)
    video = run.video()
    if video is None or not video[0].is_file():
        raise InputError(f"--full-frame needs the run's source video, which is missing "
                         f"({video[0] if video else 'never recorded'}); render without --full-frame")
    return SourceFrames(video[0]), crop


def render_to_file(run, output: Path, audio: Path | None = None, cfg: dict | None = None, device: str = "cpu",
                   full_frame: bool = False, progress=None, log=None) -> dict:
    """Render and encode; returns the summary (speeds, counts, sources). Caller holds the run's lock
    and has checked the run's artifacts (the stage runner does both)."""
    cfg = {**DEFAULTS, **(cfg or {})}
    progress = progress or null_progress
    output = Path(output).expanduser().absolute()
    if output.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise UsageError(f"output {output} should end in .mp4 (H.264 + AAC in an MP4 container)")
    t_start = time.perf_counter()
    drive = self_drive(run) if audio is None else audio_drive(run, Path(audio), cfg, device)
    drive = with_landmarks(run, drive, cfg, device)
    memory.release_free_memory()  # the features' temporaries: memory stays flat in the audio's length
    if drive.silent and log is not None:  # as extract-audio warns for a silent training clip
        log.warning("the driving audio %s is silent (speech level %.0f dBFS): the mouth will not move",
                    audio, drive.speech_level_db)
    renderer = Renderer.load(run, device, int(cfg["size"]), str(cfg["rasterizer"]))
    comp = compositor_for(run, str(cfg["composite"]), str(cfg["portrait_region"]), drive, renderer.size)
    src, crop = _source_frames(run) if full_frame else (None, None)
    out_size = (src.w, src.h) if src is not None else (renderer.size, renderer.size)
    still = int(cfg["pose_start"])
    meta_src = {"talkctl_pose": drive.pose_description, "talkctl_blink": drive.blink_description,
                "talkctl_audio": drive.audio_description, "talkctl_run": str(run),
                "talkctl_composite": comp.describe()}
    if drive.landmarks is not None:
        meta_src["talkctl_landmarks"] = drive.landmark_description
    model_s, n_done = 0.0, 0
    try:
        with VideoWriter(output, fps=FPS, size=out_size, audio=drive.wav, crf=int(cfg["crf"]),
                         preset=str(cfg["encoder_preset"])) as vw, progress(drive.n_frames, "render") as task:
            drive.wav = None  # the writer has it on disk: memory stays flat in the audio's length
            for idx, _, frames, masks, secs in composited_batches(renderer, drive, comp, int(cfg["batch"])):
                model_s += secs
                if src is not None:
                    where = drive.source_frames[idx] if drive.source_frames is not None else np.full(len(idx), still)
                    # portrait: the colour-matched render through the feathered mask, the source's
                    # own pixels (at its resolution) everywhere else
                    frames = [paste_full_frame(f, s, crop) if m is None else paste_full_frame(m[1], s, crop, m[0])
                              for f, s, m in zip(frames, src.get(where), masks or [None] * len(idx))]
                for f in frames:
                    vw.write(f)
                if n_done == 0:  # loading the compiled rasteriser leaves a burst of freed temporaries
                    memory.release_free_memory()
                n_done += len(idx)
                task.advance(len(idx))
        stats = vw.stats()
    finally:
        comp.close()
        if src is not None:
            src.close()
    total_s = time.perf_counter() - t_start
    summary = {
        "output": str(output), "frames": stats["frames"], "rendered_frames": n_done,
        "frames_padded": stats["frames_padded"], "duration_s": round(stats["frames"] / FPS, 3),
        "audio": drive.audio_description, "pose": drive.pose_description, "blink": drive.blink_description,
        "composite": comp.mode, "size": list(out_size),
        "render_size": renderer.size, "full_frame": bool(full_frame), "device": device_name(device),
        "rasterizer": renderer.rasterizer,
        "model_fps": round(n_done / model_s, 2) if model_s > 0 else None,
        "end_to_end_fps": round(n_done / total_s, 2) if total_s > 0 else None,
        "seconds": round(total_s, 3), "audio_silent": drive.silent,
    }
    if drive.landmarks is not None:
        summary["landmarks"] = drive.landmark_description
    tag_mp4(output, {**meta_src, "talkctl_speed": f"model {summary['model_fps']} fps, end to end {summary['end_to_end_fps']} fps "
                                               f"on {summary['device']}",
                  "comment": json.dumps({k: summary[k] for k in ("audio", "pose", "composite", "model_fps",
                                                                 "end_to_end_fps", "device")})})
    if log is not None:
        log.info("render: %s", summary)
    return summary
