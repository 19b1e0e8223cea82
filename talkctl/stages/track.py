"""Stage `track`: video -> frames.h5 (the cropped 25 fps frames) and track.h5 (landmarks,
head pose, intrinsics, blink, mouth opening, lip and face boxes).

1. Crop pass: every `sample_every`-th frame at reduced resolution through the landmark
   backend's face detector -> one square crop for the whole clip (fixed camera).
2. Main pass: ffmpeg decodes once (fps=25, crop, resize in its filter graph) into a pipe read
   by a thread; each frame goes through the landmark detector and is compressed in a worker
   thread and written as one HDF5 chunk. Memory stays flat with the clip length.
3. Gaps: frames without a face are interpolated (valid=False) when the gaps are short;
   too many or too long gaps fail the stage with the time ranges.
4. Head pose by bundle adjustment + PnP (headpose.py), per-frame features (face_features.py).

Decisions: a second face in the picture is not an error: the subject is the largest, most
central face of the crop pass, followed frame to frame by position (a face that jumps more
than 0.3 x the crop is someone else), and a warning says how often another face was seen.
Gaps without a face up to `max_gap_s` (1 s) are interpolated and flagged valid=False, so
training can skip them; a longer gap or more than `max_missing` (10 %) of frames without a
face fails: those frames cannot train a head, and the user should trim them (the error
lists the time ranges).
"""
from __future__ import annotations

import time

import numpy as np

from talkctl import artifacts, h5files
from talkctl.backends import select
from talkctl.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, Range
from talkctl.errors import InputError, StageError, UsageError
from talkctl.frame_cache import FRAME_STORES, store_frames
from talkctl.jpeg_frames import PipelinedJpegWriter, frame_images
from talkctl.media.ffmpeg import probe
from talkctl.face import features as ff
from talkctl.face.crop import crop_pass, pick_face
from talkctl.face.headpose import fit_head_pose, rotation_steps_deg
from talkctl.timebase import FPS, MIN_HELD_OUT_FRAMES, SHORT_CLIP_SECONDS, held_out_start, min_clip_frames
from talkctl.media.video_in import FrameStream, choose_crop, crop_filter, read_still

VERSION = 2  # 2: frames stored as JPEG (jpeg_frames.py) or as the source video (frame_cache.py)
DEFAULTS = {
    "size": 512,              # side of the stored square frames, px
    "landmarks": "auto",      # landmark backend: auto | mediapipe | face-alignment
    "preview": False,         # write RUN/track_preview.png
    "crop_scale": 2.4,        # crop side = crop_scale x the face box (head and shoulders)
    "crop_shift": 0.15,       # crop centre below the face centre, in face sizes
    "sample_every": 10,       # crop pass: every n-th frame (at 25 fps)
    "min_seconds": 1.0,       # shorter clips are refused
    "min_crop_px": 64,        # a crop smaller than this in source pixels is refused (too little detail)
    "max_gap_s": 1.0,         # longest run of frames without a face that is interpolated
    "max_missing": 0.1,       # largest fraction of frames without a face
    "keyframes": 80,          # frames in the bundle adjustment
    "fov_deg": 24.0,          # prior on the camera's field of view (weak: the fit refines it)
    "smooth_sigma": 1.0,      # temporal smoothing of the poses, frames (0: none)
    "frame_store": "auto",    # frames.h5 holds: jpeg (the frames) | source (the video, decoded through a
                              # cache: frame_cache.py) | auto (whichever is smaller)
}
RANGES = {"size": Range(32, 4096), "crop_scale": Range(1, 10), "crop_shift": Range(-1, 1), "sample_every": AT_LEAST_1,
          "min_seconds": POSITIVE, "min_crop_px": AT_LEAST_1, "max_gap_s": NON_NEGATIVE, "max_missing": FRACTION,
          "keyframes": Range(2, 10000), "fov_deg": Range(1, 170), "smooth_sigma": NON_NEGATIVE}
PRESETS = {"tiny": {"size": 128, "keyframes": 30}, "fast": {}, "paper": {"keyframes": 150}}
NON_SEMANTIC = {"preview", "frame_store"}  # frame_store: the same frames either way


def resolve(cfg: dict, device: str) -> dict:
    """Fingerprint the landmark backend "auto" picks here (its landmarks differ), not "auto"."""
    return {**cfg, "landmarks": select("landmarks", cfg.get("landmarks") or "auto", device).name}


def _min_seconds(cfg: dict) -> float:
    """min_seconds, and never less than the held-out split needs."""
    return max(float(cfg["min_seconds"]), min_clip_frames() / FPS)


def _too_short(cfg: dict) -> str:
    return (f"track needs at least {_min_seconds(cfg):.2f} s of one person talking (ideally minutes; the last "
            f"1/11 is held out for evaluation and needs {MIN_HELD_OUT_FRAMES} frames)")


def _check_video(video, cfg: dict) -> float:
    """The video's duration (0 when unknown); InputError for what track cannot use (the size's
    range is checked with the settings: RANGES)."""
    info = probe(video)
    if info["video"] is None:  # e.g. an audio file
        raise InputError(f"{video} has no video stream; give a video of one person talking")
    duration = info["duration"] or 0.0
    if duration and duration < _min_seconds(cfg):
        raise InputError(f"{video.name} is {duration:.2f} s long; {_too_short(cfg)}")
    return duration


def _crop(ctx, video, Detector, width: int, height: int, cfg: dict, warn):
    """1. The crop pass: (crop, crop-pass record)."""
    size = int(cfg["size"])
    t0 = time.perf_counter()
    det = Detector(max_faces=4, video=False, device=ctx.device)
    try:
        cp = crop_pass(video, width, height, det, int(cfg["sample_every"]))
    finally:
        det.close()
    crop = choose_crop(cp["boxes"], width, height, size, cfg["crop_scale"], cfg["crop_shift"])
    if crop.side < cfg["min_crop_px"]:
        raise InputError(f"the face region of {video.name} is only {crop.side} px ({width}x{height} video); "
                         f"track needs at least {cfg['min_crop_px']} px: use a higher-resolution video")
    upscale = size / crop.side
    if upscale > 2.0:
        warn(f"the crop is {crop.side} px in the source and is upscaled {upscale:.1f}x to {size} px: "
             "renders will look soft; a higher-resolution video (or a smaller --size) fits better")
    if cp["multi"] > 0:  # then the main pass looks for 2 faces and follows the subject's position
        warn(f"more than one face in {cp['multi']} of {cp['with_face']} sampled frames; tracking the largest, "
             f"most central one (around x={cp['centre'][0]:.0f}, y={cp['centre'][1]:.0f} source px)")
    ctx.log.info("crop pass: %d samples, %d with a face, crop %s of %dx%d (%.2f s)", cp["samples"], cp["with_face"],
                 crop.as_list(), width, height, time.perf_counter() - t0)
    return crop, cp


def _main_pass(ctx, jf, video, Detector, crop, cp: dict, crop_graph: str, est_frames, cfg: dict) -> list:
    """2. Decode the crop once (ffmpeg filter graph crop_graph): each frame JPEG-encoded into the open
    file jf (a worker thread) and through the landmark detector. Returns the subject's landmarks per
    frame (None: no face)."""
    size = int(cfg["size"])
    two_faces = cp["multi"] > 0
    near = (cp["centre"] - [crop.x0, crop.y0]) * size / crop.side
    lms: list[np.ndarray | None] = []
    det = Detector(max_faces=2 if two_faces else 1, video=True, device=ctx.device)
    try:
        with PipelinedJpegWriter(jf, "frames", size, size) as out, \
                FrameStream(video, crop_graph, size, size) as stream, ctx.progress(est_frames, "track") as task:
            for frame in stream:
                out.put(frame)
                faces = det.faces(frame)
                face = pick_face(faces, near, 0.3 * size if two_faces else None) if faces else None
                if face is not None:
                    near = face[:, :2].mean(0)
                lms.append(face)
                task.advance(1)
    finally:
        det.close()
    return lms


def _fill_gaps(lms: list, scheme, video, cfg: dict, warn) -> tuple[np.ndarray, np.ndarray]:
    """3. (landmarks3d (T,L,3) with short gaps interpolated, valid (T,)); StageError for too many
    or too long gaps."""
    T = len(lms)
    valid = np.array([m is not None for m in lms])
    n_missing = int((~valid).sum())
    runs = ff.missing_runs(valid)
    longest = max((b - a for a, b in runs), default=0)
    if n_missing == T:
        raise StageError(f"no face found in any of the {T} frames of {video.name}; "
                         "talkctl needs a video of one person facing the camera")
    if n_missing > cfg["max_missing"] * T or longest > cfg["max_gap_s"] * FPS:
        raise StageError(
            f"no face in {n_missing} of {T} frames ({100 * n_missing / T:.0f}%, longest gap {longest / FPS:.2f} s) "
            f"at {ff.describe_runs([r for r in runs if r[1] - r[0] > 1] or runs, FPS)}; trim those parts "
            f"(e.g. ffmpeg -ss/-to) or allow it with --set max_gap_s=... / --set max_missing=...")
    if T < SHORT_CLIP_SECONDS * FPS:
        warn(f"{video.name} is only {T / FPS:.1f} s long: below ~{SHORT_CLIP_SECONDS:.0f} s the head learns "
             f"little and the held-out evaluation ({T - held_out_start(T)} frames) says little; minutes of "
             "video work best")
    if n_missing:
        warn(f"no face in {n_missing} frames (gaps up to {longest / FPS:.2f} s at "
             f"{ff.describe_runs(runs, FPS)}): interpolated and marked valid=False")
    empty = np.full((scheme.n, 3), np.nan, np.float32)
    lm3d = np.stack([m if m is not None else empty for m in lms]).astype(np.float32, copy=False)
    ff.fill_gaps(lm3d, valid, out=lm3d)
    return lm3d, valid


def _features(lm2d: np.ndarray, valid: np.ndarray, scheme, size: int) -> dict[str, np.ndarray]:
    area = ff.eye_area(lm2d, scheme)
    return {
        "blink": ff.blink_from_area(area, valid),
        "eye_area": area,
        "mouth_open": ff.mouth_open(lm2d, scheme),
        "lip_box": ff.lip_boxes(lm2d, scheme, size),
        "face_box": ff.face_boxes(lm2d, size),
    }


def _write_track(tr, lm3d: np.ndarray, valid: np.ndarray, pose, features: dict, attrs: dict) -> None:
    big = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    tr.create_dataset("landmarks2d", data=lm3d[..., :2].astype(np.float32), **big)
    tr.create_dataset("landmarks3d", data=lm3d, **big)
    tr.create_dataset("valid", data=valid)
    tr.create_dataset("world_to_cam", data=pose.world_to_cam())
    tr.create_dataset("intrinsics", data=pose.K.astype(np.float32))
    tr.create_dataset("canonical_shape", data=pose.shape.astype(np.float32))
    tr.create_dataset("reproj_error", data=pose.reproj.astype(np.float32))
    for name, arr in features.items():
        tr.create_dataset(name, data=arr)
    tr.attrs.update({**attrs, "focal": pose.focal, "keyframes": pose.keyframes.astype(np.int64),
                     "ba_rms_px": pose.ba_rms})


def _pose_figures(pose, valid: np.ndarray) -> dict:
    steps = rotation_steps_deg(pose.R)
    rep_valid = pose.reproj[valid]
    return {
        "focal_px": round(pose.focal, 1),
        "median_reproj_px": round(float(np.median(rep_valid)), 3),
        "p95_reproj_px": round(float(np.percentile(rep_valid, 95)), 3),
        "max_rotation_step_deg": round(float(steps.max()) if len(steps) else 0.0, 3),
        "max_rotation_step_at_s": round((int(steps.argmax()) + 1) / FPS, 2) if len(steps) else 0.0,
        "p99_rotation_step_deg": round(float(np.percentile(steps, 99)) if len(steps) else 0.0, 3),
    }


def run(ctx, cfg: dict) -> dict:
    t_start = time.perf_counter()
    video = ctx.video_path()
    size = int(cfg["size"])
    if cfg["frame_store"] not in FRAME_STORES:
        raise UsageError(f"frame_store must be one of {', '.join(FRAME_STORES)}, got {cfg['frame_store']!r}")
    duration = _check_video(video, cfg)
    backend = select("landmarks", cfg["landmarks"], ctx.device)
    ctx.use_backend("landmarks", backend.name)
    Detector = backend.get()
    scheme = Detector.scheme
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        ctx.log.warning(msg)

    still = read_still(video)
    height, width = still.shape[:2]
    t0 = time.perf_counter()
    crop, cp = _crop(ctx, video, Detector, width, height, cfg, warn)
    t_crop = time.perf_counter() - t0
    t0 = time.perf_counter()
    est_frames = max(1, int(round(duration * FPS))) if duration else None
    # the JPEG frames until frames.h5 takes them (or the source, and they go to the cache); named
    # .partial so that a killed track leaves nothing artifacts.remove_partials does not clear
    staged = ctx.run.file("frames.jpeg.partial")
    crop_graph = crop_filter(crop, width, height, size)  # what frames.h5 records, when it keeps the source
    try:
        with h5files.atomic(staged) as jf:
            lms = _main_pass(ctx, jf, video, Detector, crop, cp, crop_graph, est_frames, cfg)
        T = len(lms)
        t_main = time.perf_counter() - t0
        if T < _min_seconds(cfg) * FPS:
            raise InputError(f"{video.name} gave {T} frames at {FPS} fps ({T / FPS:.2f} s); {_too_short(cfg)}")
        with ctx.write("frames") as fr:
            stored = store_frames(fr, "frames", staged, video, crop_graph, cfg["frame_store"], ctx.log)
            geometry = {"fps": FPS, "size": size, "crop": np.array(crop.as_list(), np.int64),
                        "source_size": np.array([width, height], np.int64)}
            fr.attrs.update(geometry)
            lm3d, valid = _fill_gaps(lms, scheme, video, cfg, warn)
            del lms
            lm2d = lm3d[..., :2]  # a view: no second copy of the landmarks
            # 4. head pose and features
            t0 = time.perf_counter()
            pose = fit_head_pose(lm2d, lm3d, valid, scheme.rigid, scheme.eye_outer, scheme.chin, size,
                                 nose_tip=scheme.nose_tip, keyframes=int(cfg["keyframes"]),
                                 fov_deg=float(cfg["fov_deg"]), smooth_sigma=float(cfg["smooth_sigma"]), log=ctx.log)
            t_pose = time.perf_counter() - t0
            features = _features(lm2d, valid, scheme, size)
            with ctx.write("track") as tr:
                _write_track(tr, lm3d, valid, pose, features, {
                    "landmark_backend": backend.name, "landmark_scheme": scheme.name, "n_landmarks": scheme.n,
                    "rigid_indices": np.array(scheme.rigid, np.int64), **geometry})
    finally:
        staged.unlink(missing_ok=True)
    t_total = time.perf_counter() - t_start
    preview = str(write_preview(ctx.run, still=still)) if cfg["preview"] else None
    return {
        "frames": T,
        "frame_store": stored,
        "video_seconds": round(T / FPS, 2),
        "source": f"{width}x{height}",
        "crop": crop.as_list(),
        "face_rate": round(float(valid.mean()), 4),
        "gap_frames": int((~valid).sum()),
        "two_faces": bool(cp["multi"] > 0),
        **_pose_figures(pose, valid),
        "blink_frames": int((features["blink"] > 0.5).sum()),
        "frames_per_s": round(T / t_total, 1),
        "timings_s": {"crop_pass": round(t_crop, 2), "decode_landmarks_write": round(t_main, 2),
                      "pose": round(t_pose, 2), "total": round(t_total, 2)},
        "warnings": warnings,
        **({"preview": preview} if preview else {}),
    }


def when_up_to_date(run, cfg: dict) -> dict:
    """`--preview` on an up-to-date run: draw the sheet from the existing artifacts."""
    if cfg.get("preview"):
        return {"preview": str(write_preview(run))}
    return {}


def write_preview(run, still: np.ndarray | None = None, path=None):
    """Contact sheet from a run's frames.h5 and track.h5 (RUN/track_preview.png)."""
    from talkctl.face.preview import contact_sheet

    if still is None:
        v = run.video()
        still = read_still(v[0]) if v and v[0].exists() else None
    tr = artifacts.read_track(run, ("landmarks2d", "world_to_cam", "intrinsics", "lip_box", "valid"))
    with artifacts.open_for_read(run, "frames") as fr:
        crop = [int(v) for v in fr.attrs["crop"]]
        if still is None:  # no source video at hand: show the first crop as the "source"
            still = frame_images(fr, "frames")[0]
            crop = [0, 0, still.shape[0]]
        w2c = tr.world_to_cam
        return contact_sheet(path or run.file("track_preview.png"), frame_images(fr, "frames"), tr.landmarks2d,
                             tr.attrs["rigid_indices"], w2c[:, :3, :3], w2c[:, :3, 3], tr.intrinsics,
                             tr.lip_box, tr.valid, crop, still, float(fr.attrs["fps"]))
