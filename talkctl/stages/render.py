"""render: a trained run + driving audio -> an .mp4 of the head saying it, with the audio muxed in.

    summary = render_to_file(run, output, audio=None | path, cfg=..., device=...)

Driving audio: features made exactly like the run's (extract_audio.features_for_audio: same
extractor, window and normalisation). Without audio: the held-out part of the training clip
(the last 1/11, never trained on), self-driven: its own audio, poses and blinks.
Head poses and blinks for new audio come from pose_sequence: "train" (the training track,
ping-pong), "still", or another run directory / track.h5 / .npz.

Frames are rendered in batches of `batch` and handed to the VideoWriter as they are made (never
collected), and the audio condition gets only the feature windows a batch needs, cut from the
(F, D) feature frames. What still grows with the audio's length: the waveform and the feature
frames (~0.1 MB per second of audio) and the feature extractor's transient arrays while it runs
once over the whole audio (measured: peak RSS 350 MB for 30 s, 810 MB for 5 min at 32 px). Speed is measured separately for the model
(deformation + rasterisation + compositing) and end to end (including reading source frames
and encoding); both go into the summary and into the output's metadata.

A landmark-driven head (train-deform --condition landmarks) gets landmarks instead of audio
(`with_landmarks`, landmark_source.landmarks_for_drive): cfg "landmarks" auto | a2l | track |
OTHER_RUN and "edit" (mouth_scale=..., eyes_open=...); both go into the summary and metadata.

Not a pipeline stage (it writes no artifact): the CLI calls `render_to_file` under the run's lock.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from talkctl.errors import InputError, StageError, UsageError

VERSION = 1
FPS = 25
SAMPLES_PER_FRAME = 640

DEFAULTS = {
    "pose": "train",        # train | still | RUN_DIR | track.h5 | poses.npz ("still:PATH" holds one frame)
    "pose_start": 0,        # first source frame of the pose sequence
    "blink": "source",      # source (follow the pose source's blinks) | open
    "size": 0,              # output side in pixels (0 = the model's training resolution)
    "batch": 8,             # frames rendered at once (memory ~ batch x size^2)
    "crf": 18,              # H.264 quality
    "encoder_preset": "medium",
    "rasterizer": "auto",
    # landmark-driven heads (train-deform --condition landmarks), landmark_source.landmarks_for_drive:
    "landmarks": "auto",    # auto (a2l on the driving audio; self-driven without a2l.h5: the track) | a2l | track | OTHER_RUN
    "edit": "",             # e.g. mouth_scale=1.5,eyes_open=1
}
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)  # render writes no artifact: nothing is fingerprinted

NEEDS = ("audio", "frames", "track", "parse", "deform", "torso")


def resolve_config(preset=None, toml=None, overrides=None) -> dict:
    from talkctl import config as configmod

    return configmod.resolve("render", DEFAULTS, PRESETS, preset, toml or {}, overrides or {})


def check_run(run) -> None:
    """Every artifact render reads is present and current; else ArtifactError naming the stage to run."""
    from talkctl.pipeline import input_fingerprints, stage_spec

    input_fingerprints(run, stage_spec("render"))


# ---- the model ----------------------------------------------------------------------
@dataclass
class Renderer:
    """The loaded head + torso + plate at one output size."""
    head: object
    torso: object
    background: np.ndarray  # (size,size,3) uint8
    K_head: np.ndarray
    K_torso: np.ndarray
    size: int
    device: str

    @classmethod
    def load(cls, run, device: str = "cpu", size: int = 0, rasterizer: str = "auto") -> "Renderer":
        from talkctl import artifacts
        from talkctl.head.models import load_head, load_torso
        from talkctl.gs.training import scale_intrinsics

        head = load_head(run, device, rasterizer)
        torso = load_torso(run, device, rasterizer)
        res = int(head.attrs.get("resolution") or head.attrs["K"][0, 2] * 2)
        size = int(size) or res
        if not 16 <= size <= 4096:
            raise UsageError(f"render size {size} is out of range; use 16..4096 (0 = training resolution {res})")
        t_res = int(torso.attrs.get("resolution") or res)
        plate = np.asarray(torso.attrs["background"])
        if plate.shape[0] != size:
            with artifacts.open_for_read(run, "parse") as f:
                plate = _resize(f["background"][()], size)
        return cls(head, torso, plate, scale_intrinsics(head.attrs["K"], res, size),
                   scale_intrinsics(torso.attrs["K"], t_res, size), size, device)

    def set_audio(self, features: np.ndarray) -> None:
        self.head.set_audio(features)

    def set_drive(self, drive: "Drive", lo: int, hi: int) -> None:
        """Give the head frames lo..hi of the drive: landmarks for a landmark-driven head, else audio."""
        if drive.landmarks is not None:
            self.head.set_landmarks(drive.landmarks[lo:hi])
        else:
            self.head.set_audio(drive.features[lo:hi])

    def render(self, frames, world_to_cam, blink, real=None) -> dict:
        """Batch of frames -> {"full": (C,S,S,3) uint8 composite, "head_alpha": (C,S,S) float,
        "head_over_real": uint8 (when real frames (C,S,S,3) uint8 are given)}."""
        import torch

        from talkctl.head.models import composite
        from talkctl.gs.splat import over

        h = self.head.render(frames, world_to_cam, self.K_head, self.size, blink=blink)
        t = self.torso.render(world_to_cam, self.K_torso, self.size, head_rgb=h.rgb, head_alpha=h.alpha)
        out = {"full": _to_uint8(composite(self.background, t, h)), "head_alpha": h.alpha[..., 0].cpu().numpy()
               if h.alpha.dim() == 4 else h.alpha.cpu().numpy()}
        if real is not None:
            r = torch.as_tensor(np.asarray(real), device=h.rgb.device).float() / 255.0
            out["head_over_real"] = _to_uint8(over(h.rgb, h.alpha, r).clamp(0, 1))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out


def _to_uint8(t) -> np.ndarray:
    return (t.clamp(0, 1) * 255.0 + 0.5).to(dtype=__import__("torch").uint8).cpu().numpy()


def _resize(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    import cv2

    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR)
    return cv2.resize(img, (size, size), interpolation=interp)


# ---- what drives the render ---------------------------------------------------------
@dataclass
class Drive:
    features: "np.ndarray | FeatureWindows"  # (T,W,D) audio features of the driving audio
    wav: np.ndarray          # 16 kHz mono waveform muxed into the output
    world_to_cam: np.ndarray  # (T,4,4)
    blink: np.ndarray        # (T,)
    pose_description: str
    audio_description: str
    source_frames: np.ndarray | None  # (T,) frames of this run's video matching each pose (full-frame paste)
    held_out: tuple[int, int] | None = None
    blink_description: str = ""
    landmarks: np.ndarray | None = None   # (T,L,3) for a landmark-driven head (with_landmarks)
    landmark_description: str = ""

    @property
    def n_frames(self) -> int:
        return len(self.features)


def held_out_range(run) -> tuple[int, int]:
    """[start, end) of the frames training never saw (as recorded by train-deform)."""
    from talkctl import artifacts
    from talkctl.gs.training import split_frames

    attrs = artifacts.read_attrs(run, "deform") or {}
    held = attrs.get("held_out")
    if held is not None and len(np.asarray(held)) == 2:
        a, b = (int(v) for v in np.asarray(held))
        if b > a:
            return a, b
    with artifacts.open_for_read(run, "track") as f:
        n = f["world_to_cam"].shape[0]
    _, h = split_frames(n)
    return int(h[0]), int(h[-1]) + 1


def with_landmarks(run, drive: Drive, cfg: dict | None = None, device: str = "cpu") -> Drive:
    """A landmark-driven head gets its landmarks here (a2l on the driving audio, the track,
    another run, an edit: landmark_source.landmarks_for_drive); an audio head is left as is."""
    from talkctl.head.landmark_source import landmarks_for_drive

    ld = landmarks_for_drive(run, drive.features, drive.source_frames, cfg, device)
    if ld is not None:
        drive.landmarks, drive.landmark_description = ld.landmarks, ld.description
    return drive


def self_drive(run) -> Drive:
    """The held-out frames with their own audio, poses and blinks."""
    from talkctl import artifacts

    a, b = held_out_range(run)
    with artifacts.open_for_read(run, "audio") as f:
        n_audio = f["features"].shape[0]
        b = min(b, n_audio)
        feats = f["features"][a:b]
        wav = f["waveform"][a * SAMPLES_PER_FRAME:b * SAMPLES_PER_FRAME]
    with artifacts.open_for_read(run, "track") as f:
        w2c, blink = f["world_to_cam"][a:b], f["blink"][a:b]
    if b <= a:
        raise StageError(f"the run has no held-out frames with audio (frames {a}..{b}); rerun extract-audio and track")
    idx = np.arange(a, b)
    return Drive(feats, wav.astype(np.float32), w2c, blink, f"held-out frames {a}..{b - 1} of the training clip (self-driven)",
                 f"held-out audio of the training clip ({(b - a) / FPS:.2f} s)", idx, (a, b),
                 "the held-out frames' own blinks (track.h5)")


class FeatureWindows:
    """(T, W, D) feature windows of the driving audio, cut on demand from the (F, D) normalised
    feature frames: 16x less memory than materialising every window (a 10-minute audio keeps
    ~20 MB of features, not ~350 MB). Slicing gives the same arrays as features_for_audio."""

    def __init__(self, norm: np.ndarray, idx: np.ndarray):
        self.norm, self.idx = norm, idx
        self.shape = (len(idx), idx.shape[1], norm.shape[1])

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key) -> np.ndarray:
        return self.norm[self.idx[key]]


def driving_features(wav: np.ndarray, run, device: str = "cpu") -> FeatureWindows:
    """Features of new audio made exactly like the run's (extract_audio.features_for_audio), lazily windowed."""
    from talkctl.stages.extract_audio import FeatureRecipe, n_video_frames, window_indices

    recipe = FeatureRecipe.from_artifact(run, device)
    raw = recipe.raw(wav)
    norm = ((raw - recipe.mean) / recipe.std).astype(np.float32)
    del raw
    idx = window_indices(n_video_frames(len(wav)), len(norm), recipe.extractor.rate, recipe.extractor.offset,
                         recipe.window)
    return FeatureWindows(norm, idx)


def audio_drive(run, audio: Path, cfg: dict, device: str = "cpu") -> Drive:
    from talkctl.head.poses import pose_sequence
    from talkctl.stages.extract_audio import load_waveform

    wav = load_waveform(audio)
    if len(wav) < SAMPLES_PER_FRAME:
        raise InputError(f"{audio} holds {len(wav) / 16000 * 1000:.0f} ms of audio, shorter than one video frame "
                         "(40 ms); give a longer audio file")
    feats = driving_features(wav, run, device)
    n = len(feats)
    pose = str(cfg["pose"])
    poses = pose_sequence(pose, n, start=int(cfg["pose_start"]), run=run, blink_mode=str(cfg["blink"]))
    blinks = "eyes open" if not np.any(poses.blink) else f"from the pose source ({pose}), following its frames"
    return Drive(feats, wav, poses.world_to_cam, poses.blink, poses.description, str(Path(audio).absolute()),
                 poses.source_frames if pose in ("train", "still") else None, blink_description=blinks)


# ---- source frames for --full-frame --------------------------------------------------
class SourceFrames:
    """Frames of the run's video at 25 fps, fetched by index in batches: read forward while the
    indices move forward (one ffmpeg stream), reopened at a seek when they jump back (ping-pong)."""

    def __init__(self, video: Path):
        from talkctl.media.ffmpeg import probe

        info = probe(video)
        if not info["video"]:
            raise InputError(f"{video} has no video stream; --full-frame needs the run's source video")
        self.video, self.w, self.h = Path(video), info["video"]["width"], info["video"]["height"]
        self._proc = None
        self._next = 0
        self._last: tuple[int, np.ndarray] | None = None

    def _open(self, start: int) -> None:
        from talkctl.media.ffmpeg import ffmpeg_exe

        self.close()
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
        if start > 0:
            args += ["-ss", f"{start / FPS:.4f}"]
        args += ["-noautorotate", "-i", str(self.video), "-vf", f"fps={FPS}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._next = start

    def _read(self) -> np.ndarray | None:
        n = self.w * self.h * 3
        buf = self._proc.stdout.read(n)
        if len(buf) < n:
            return None
        self._next += 1
        return np.frombuffer(buf, np.uint8).reshape(self.h, self.w, 3)

    def get(self, indices) -> list[np.ndarray]:
        indices = [int(i) for i in indices]
        lo, hi = min(indices), max(indices)
        if self._proc is None or lo < self._next - 1 or lo > self._next + 50:
            self._open(lo)
        got: dict[int, np.ndarray] = {}
        if self._last is not None and self._last[0] >= lo:
            got[self._last[0]] = self._last[1]
        while self._next <= hi:
            i = self._next
            fr = self._read()
            if fr is None:
                break
            if i >= lo:
                got[i] = fr
                self._last = (i, fr)
        fallback = got.get(max(got)) if got else (self._last[1] if self._last else np.zeros((self.h, self.w, 3), np.uint8))
        return [got.get(i, fallback) for i in indices]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc.stdout.close()
            self._proc = None


# ---- the loop -----------------------------------------------------------------------
def render_batches(renderer: Renderer, drive: Drive, batch: int, real_frames: Callable | None = None) -> Iterator[tuple[np.ndarray, dict, float]]:
    """Yield (frame indices, render outputs, model seconds) batch by batch. With real_frames(idx)
    -> (C,S,S,3) uint8, the outputs also hold "real" and "head_over_real".

    The audio condition gets only the windows a batch needs (its frames +- the attention window),
    with frame indices relative to that slice: the same codes as with the whole sequence (edge
    clamping included), and memory that does not grow with the audio's length."""
    batch = max(1, int(batch))
    T = drive.n_frames
    A = int(getattr(renderer.head.condition, "attn_window", 0) or 0)
    half = A // 2
    for b0 in range(0, T, batch):
        idx = np.arange(b0, min(T, b0 + batch))
        lo, hi = max(0, b0 - half), min(T, int(idx[-1]) + max(A - half, 1))
        real = real_frames(idx) if real_frames is not None else None
        t0 = time.perf_counter()
        renderer.set_drive(drive, lo, hi)
        out = renderer.render(idx - lo, drive.world_to_cam[idx], drive.blink[idx], real)
        if real is not None:
            out["real"] = real
        yield idx, out, time.perf_counter() - t0


def device_name(device: str) -> str:
    import platform

    if device.startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()})"


def _crop_attrs(run) -> tuple[list[int], list[int]]:
    from talkctl import artifacts

    attrs = artifacts.read_attrs(run, "frames") or {}
    return [int(v) for v in np.asarray(attrs["crop"])], [int(v) for v in np.asarray(attrs["source_size"])]


def render_to_file(run, output: Path, audio: Path | None = None, cfg: dict | None = None, device: str = "cpu",
                   full_frame: bool = False, progress=None, log=None) -> dict:
    """Render and encode; returns the summary (speeds, counts, sources). Caller holds the run's lock."""
    from talkctl.pipeline import null_progress
    from talkctl.media.video_out import VideoWriter, paste_full_frame

    cfg = {**DEFAULTS, **(cfg or {})}
    progress = progress or null_progress
    output = Path(output).expanduser().absolute()
    if output.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise UsageError(f"output {output} should end in .mp4 (H.264 + AAC in an MP4 container)")
    check_run(run)
    t_start = time.perf_counter()
    drive = self_drive(run) if audio is None else audio_drive(run, Path(audio), cfg, device)
    drive = with_landmarks(run, drive, cfg, device)
    renderer = Renderer.load(run, device, int(cfg["size"]), str(cfg["rasterizer"]))
    size = renderer.size
    src = None
    if full_frame:
        crop, (w, h) = _crop_attrs(run)
        video = run.video()
        if video is None or not video[0].is_file():
            raise InputError(f"--full-frame needs the run's source video, which is missing "
                             f"({video[0] if video else 'never recorded'}); render without --full-frame")
        src = SourceFrames(video[0])
        out_size = (src.w, src.h)
        still = int(cfg["pose_start"])
    else:
        out_size = (size, size)
    meta_src = {"talkctl_pose": drive.pose_description, "talkctl_blink": drive.blink_description,
                "talkctl_audio": drive.audio_description, "talkctl_run": str(run)}
    if drive.landmarks is not None:
        meta_src["talkctl_landmarks"] = drive.landmark_description
    model_s = 0.0
    n_done = 0
    try:
        with VideoWriter(output, fps=FPS, size=out_size, audio=drive.wav, crf=int(cfg["crf"]),
                         preset=str(cfg["encoder_preset"])) as vw, progress(drive.n_frames, "render") as task:
            for idx, out, secs in render_batches(renderer, drive, int(cfg["batch"])):
                model_s += secs
                frames = out["full"]
                if src is not None:
                    where = drive.source_frames[idx] if drive.source_frames is not None else np.full(len(idx), still)
                    frames = [paste_full_frame(f, s, crop) for f, s in zip(frames, src.get(where))]
                for f in frames:
                    vw.write(f)
                n_done += len(idx)
                task.advance(len(idx))
        stats = vw.stats()
    finally:
        if src is not None:
            src.close()
    total_s = time.perf_counter() - t_start
    summary = {
        "output": str(output), "frames": stats["frames"], "rendered_frames": n_done,
        "frames_padded": stats["frames_padded"], "duration_s": round(stats["frames"] / FPS, 3),
        "audio": drive.audio_description, "pose": drive.pose_description, "blink": drive.blink_description,
        "size": list(out_size),
        "render_size": size, "full_frame": bool(full_frame), "device": device_name(device),
        "model_fps": round(n_done / model_s, 2) if model_s > 0 else None,
        "end_to_end_fps": round(n_done / total_s, 2) if total_s > 0 else None,
        "seconds": round(total_s, 3),
    }
    if drive.landmarks is not None:
        summary["landmarks"] = drive.landmark_description
    _tag(output, {**meta_src, "talkctl_speed": f"model {summary['model_fps']} fps, end to end {summary['end_to_end_fps']} fps "
                                               f"on {summary['device']}",
                  "comment": json.dumps({k: summary[k] for k in ("audio", "pose", "model_fps", "end_to_end_fps", "device")})})
    if log is not None:
        log.info("render: %s", summary)
    return summary


def _tag(path: Path, tags: dict) -> None:
    """Write the metadata (known only once rendering is done) by a stream-copy remux, atomically."""
    from talkctl.media.ffmpeg import run_ffmpeg

    tmp = path.with_name(f"{path.stem}.tagging{path.suffix}")
    args = ["-y", "-i", str(path), "-map", "0", "-c", "copy"]
    for k, v in tags.items():
        args += ["-metadata", f"{k}={v}"]
    args += ["-movflags", "+faststart+use_metadata_tags", str(tmp)]
    try:
        run_ffmpeg(args, f"write the metadata of {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_tags(path: Path) -> dict:
    """The container tags of an mp4 (what render wrote), via ffmpeg's ffmetadata output."""
    from talkctl.media.ffmpeg import run_ffmpeg

    text = run_ffmpeg(["-i", str(path), "-f", "ffmetadata", "-"], f"read the metadata of {path}").decode(errors="replace")
    tags = {}
    for line in text.splitlines()[1:]:
        if "=" in line and not line.startswith(";"):
            k, v = line.split("=", 1)
            tags[k] = v.replace("\\=", "=").replace("\\;", ";").replace("\\#", "#").replace("\\\\", "\\")
    return tags
