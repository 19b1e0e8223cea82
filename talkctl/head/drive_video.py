"""Lip sync with a ground truth: drive a head with the audio of another video and compare the
rendered mouth opening, frame by frame, with the mouth opening of the real person in that video.

    out = rendered_mouth(renderer, drive, compositor, reader, batch, progress, "eval (new audio)")
    fig = drive_video_figures(run, renderer, "other.mp4", reader, cfg, device, progress)

Both mouths go through the same landmark backend (the run's) at the same size: the other video
is cropped around the face the way `track` crops (face.reader.video_mouth), the render is the
composite render would write for the drive (head.composite, cfg "composite" / "portrait_region")
at the renderer's size.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from talkctl.face.reader import MouthTrack, video_mouth
from talkctl.head.drive import audio_drive, with_landmarks
from talkctl.head.composite import composited_batches, compositor_for
from talkctl.metrics.lipsync import correlation_at_lag, fill_gaps, mouth_follow

MAX_LAG = 3  # frames either side searched for the best lag


def rendered_mouth(renderer, drive, comp, reader, batch: int, progress, label: str, keep_frames: bool = False) -> dict:
    """Render every frame of `drive` through the Compositor `comp` (closed here) and read its mouth:
    {"track": MouthTrack, "frames": [...] when keep_frames, "model_s", "n_rendered"}."""
    track = MouthTrack(reader)
    kept, model_s, n = [], 0.0, 0
    with progress(drive.n_frames, label) as task, contextlib.closing(comp):
        for idx, _, frames, _, secs in composited_batches(renderer, drive, comp, batch):
            model_s += secs
            n += len(idx)
            track.add(frames)
            if keep_frames:
                kept.extend(frames)
            task.advance(len(idx))
    return {"track": track, "frames": kept, "model_s": model_s, "n_rendered": n}


def own_offset_figures(video: Path, rendered: np.ndarray, real: np.ndarray) -> dict:
    """The drive video's own picture-to-sound offset (audio.av_offset: its real speaker is a ground
    truth only up to it) and the correlation of the render against that speaker at the lag the
    offset implies (a render in sync with the sound trails a picture that leads it). rendered,
    real: mouth openings per frame, nan where no face was found."""
    from talkctl.audio.av_offset import estimate_offset
    from talkctl.errors import MissingToolError
    from talkctl.media.audio import load_waveform

    try:
        est = estimate_offset(load_waveform(video), real, np.isfinite(real))
    except MissingToolError as exc:
        return {"av_offset_ms": None, "av_offset_reason": str(exc)}
    if est is None:
        return {"av_offset_ms": None, "av_offset_reason": "too little speech with a visible face to place it"}
    lag = int(np.clip(est.frames(), -MAX_LAG, MAX_LAG))
    return {**est.as_dict(), "offset_lag": lag, "offset_corr": correlation_at_lag(fill_gaps(rendered), fill_gaps(real), lag)}


def _enough(found: np.ndarray) -> bool:
    return bool(found.sum() >= max(5, 0.5 * len(found)))


def drive_video_figures(run, renderer, video, reader, cfg: dict, device: str, progress) -> dict:
    """Drive the head with `video`'s audio; mouth_follow figures against its real speaker
    (corr at lag 0, best lag within +-MAX_LAG and its corr, amplitude ratio), the video's own
    picture-to-sound offset and the corr at the lag it implies (own_offset_figures), both curves."""
    video = Path(video)
    drive = with_landmarks(run, audio_drive(run, video, cfg, device), cfg, device)
    with progress(None, f"eval (real mouth of {video.name})") as task:
        real = video_mouth(video, reader, renderer.size, progress=task)
    comp = compositor_for(run, str(cfg["composite"]), str(cfg["portrait_region"]), drive, renderer.size)
    mode = comp.mode
    rend = rendered_mouth(renderer, drive, comp, reader, int(cfg["batch"]), progress, f"eval (driven by {video.name})")
    n = min(drive.n_frames, len(real.lms))
    m_real, m_rend = real.mouth_open()[:n], rend["track"].mouth_open()[:n]
    f_real, f_rend = real.found[:n], rend["track"].found[:n]
    out = {"video": str(video.absolute()), "frames": n, "pose": drive.pose_description, "composite": mode,
           "frames_with_face_real": int(f_real.sum()), "frames_with_face_rendered": int(f_rend.sum()),
           "model_s": rend["model_s"], "n_rendered": rend["n_rendered"],
           "mouth_gain": drive.mouth_gain,  # this audio's mouth-state gain (None: the trained one)
           "mouth_render_gain": getattr(renderer.head, "render_gain", None)}  # times the field's (head.mouth_render)
    if n < 5 or not (_enough(f_real) and _enough(f_rend)):
        return {**out, "corr": None, "best_lag": None, "best_corr": None, "amp": None,
                "reason": f"a face was found in {int(f_real.sum())} real and {int(f_rend.sum())} rendered "
                          f"of {n} frames: too few to compare"}
    rendered, real_open = np.where(f_rend, m_rend, np.nan), np.where(f_real, m_real, np.nan)
    fig = mouth_follow(rendered, real_open, MAX_LAG)
    fig.pop("frames")
    fig.update(own_offset_figures(video, rendered, real_open))
    return {**out, **fig, "mouth_real": fill_gaps(real_open).tolist(), "mouth_rendered": fill_gaps(rendered).tolist()}
