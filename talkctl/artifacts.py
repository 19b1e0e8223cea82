"""The HDF5 artifact contract, implemented once.

Every stage output is one HDF5 file with these root attributes:
  schema, schema_version, producer ("<stage> v<version>"), talkctl_version, created (ISO time),
  config (canonical JSON of the semantic config), inputs (JSON: name -> fingerprint),
  fingerprint, backend (JSON: kind -> backend name), seconds (stage wall time).

Fingerprint = sha256(stage name, stage version, semantic config, input fingerprints).
Same fingerprint and a readable file -> "up to date". An input whose current fingerprint
differs from the one recorded -> the artifact is stale.

Files are written as `name.h5.partial` and renamed when complete, so an interrupted stage
leaves nothing that looks finished; the root attribute `checksums` holds a CRC-32 of every
object's stored bytes (h5files.py), checked whenever a stage reads the file or decides it is
up to date, so a corrupted file is rebuilt, never used. Video-like image sequences (frames,
torso targets) are JPEG frame groups (jpeg_frames.py), or frames.h5 holds the source video
they decode to, read through a cache of those JPEG frames (frame_cache.py); label maps are
chunked one frame per chunk and deflated.

The layout of each artifact (datasets, shapes, units) is documented in `ARTIFACTS` below:
it is the one place that says what a file holds.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from talkctl import __version__, h5files
from talkctl.errors import ArtifactError, command
from talkctl.rundir import RunDir


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    filename: str
    schema: str
    version: int
    stage: str  # the stage that writes it (the one to rerun)
    layout: dict[str, str] = field(default_factory=dict)  # dataset -> "shape dtype: meaning"

    def path(self, run: RunDir) -> Path:
        return run.file(self.filename)


# T = frames (25 fps), S = audio samples (16 kHz), N = Gaussians, L = landmarks, H=W=size.
ARTIFACTS: dict[str, ArtifactSpec] = {
    a.name: a
    for a in [
        ArtifactSpec("audio", "audio.h5", "talkctl.audio", 1, "extract-audio", {
            "waveform": "(S,) float32 in [-1,1]: 16 kHz mono, the whole audio track (first stream)",
            "features": "(T, W, D) float32: normalised feature frames; row t = the window of video frame t "
                        "(frame t covers [t/25, (t+1)/25) s = samples [640t, 640t+640); T = S // 640). "
                        "Feature frame j is centred at feature_offset + j/feature_rate s; window t holds "
                        "frames m-W//2 .. m+W-W//2-1 with m = floor((((t+0.5)/25) - feature_offset) * "
                        "feature_rate + 0.5), the frame nearest the video frame's centre; indices outside "
                        "[0, F-1] repeat the edge frame (phonetic, mel-formant: m = 4t+2, W=16 = 0.16 s)",
            "feature_frames": "(F, D) float32: the normalised feature sequence the windows are cut from",
            "norm_mean": "(D,) float32: per-dim mean of the raw features of this clip's speech frames "
                         "(features = (raw - norm_mean) / norm_std); new audio gets its own (attr norm = "
                         "utterance) or these (norm = clip, or too little speech): audio.recipe",
            "norm_std": "(D,) float32: per-dim std of the same frames, floored per channel",
            "rms_db": "(T,) float32: loudness of each video frame's 640 samples, dBFS",
            "attrs": "sample_rate=16000, fps=25, n_frames=T, window=W, feature_dim=D, feature_rate "
                     "(frames/s: 100 phonetic and mel-formant, 50 hubert/wav2vec2), feature_offset (s), n_feature_frames=F, "
                     "extractor, model (neural extractors), feature_names (JSON list), norm (utterance | clip; absent = clip), duration (audio s = S/16000), "
                     "speech_level_dbfs, silent, source, source_sample_rate, source_channels, source_video_fps "
                     "(0 = audio only; track resamples video to 25 fps so its T matches)",
        }),
        ArtifactSpec("frames", "frames.h5", "talkctl.frames", 2, "track", {
            "frames": "(T, S, S, 3) uint8 RGB at 25 fps as a JPEG frame group (jpeg_frames.py: each frame at the "
                      "lowest quality with PSNR >= 45 dB against the decoded crop), or, when smaller (track's "
                      "frame_store), the source video's bytes with the crop filter that decodes them to those same "
                      "JPEG frames through a cache (frame_cache.py); read either with jpeg_frames.frame_images",
            "attrs": "fps=25, size=S, crop=[x0, y0, side] in source pixels (may reach outside the "
                     "source: that part is padded black; paste renders back by scaling S -> side), "
                     "source_size=[w, h] of the decoded source (rotation metadata applied)",
        }),
        ArtifactSpec("track", "track.h5", "talkctl.track", 1, "track", {
            "landmarks2d": "(T, L, 2) float32: landmark x, y in crop pixels (pixel centres at i + 0.5)",
            "landmarks3d": "(T, L, 3) float32: the backend's own 3D estimate; x, y as landmarks2d, z "
                           "depth in the same pixel scale (larger = farther)",
            "valid": "(T,) bool: False = no face found, the frame's values are interpolated",
            "world_to_cam": "(T, 4, 4) float32: OpenCV camera (x right, y down, z forward); world = "
                            "canonical head space (camera = inverse head pose)",
            "intrinsics": "(3, 3) float32: pinhole K in crop pixels, principal point (S/2, S/2)",
            "canonical_shape": "(L, 3) float32: the face's landmarks in canonical head space: x towards "
                               "image right of a frontal view, y down (to the chin), z into the head; origin "
                               "~ head centre (just below the eye line, ~7.5 cm behind the eyes); outer eye corners 0.62 "
                               "apart (1 unit ~ 14.5 cm): the head fits in [-1, 1]^3",
            "reproj_error": "(T,) float32: mean reprojection error of the rigid landmarks, px",
            "blink": "(T,) float32: eye closedness, 0 = open as usual, 1 = closed (per-subject normalised)",
            "eye_area": "(T,) float32: area of both eye contours / face-oval area (raw)",
            "mouth_open": "(T,) float32: inner-lip gap / face height (raw)",
            "lip_box": "(T, 4) int32: x0, y0, x1, y1 (x1, y1 exclusive) square padded lip box, crop px",
            "face_box": "(T, 4) int32: x0, y0, x1, y1 bounding box of all landmarks, crop px",
            "attrs": "landmark_backend, landmark_scheme (mediapipe-478 | ibug-68), n_landmarks=L, "
                     "rigid_indices (landmarks used for the pose), fps=25, size=S, crop, source_size, "
                     "focal (px), keyframes (bundle-adjusted frames), ba_rms_px",
        }),
        ArtifactSpec("parse", "parse.h5", "talkctl.parse", 2, "parse", {
            "labels": "(T, H, W) uint8, one frame per chunk: 0 background, 1 head (face, hair, ears), 2 neck, 3 torso",
            "background": "(H, W, 3) uint8 RGB: background plate (per-pixel median where uncovered, rest inpainted)",
            "background_seen": "(H, W) bool: plate pixels seen uncovered often enough (plate_min_seen of the samples) (False = inpainted)",
            "torso_frames": "only in files of older talkctl versions, and ignored: the torso target is made from "
                            "frames.h5 and the labels when read (parsing/torso_target.py)",
            "attrs": "parsing_backend, neck_fill (extend | background), fps, size, label_names (JSON id -> name), "
                     "config (JSON: neck_extend, head_dilate, ... for the torso target, parsing/torso_target.py)",
        }),
        ArtifactSpec("static", "static.h5", "talkctl.static", 1, "init-static", {
            "head/<gaussians>": "canonical head Gaussians (see GAUSSIANS below), attrs sh_degree, n_gaussians, train_seconds",
            "head/val_psnr": "(K, 2) float64: (step, held-out head-region PSNR dB) during training",
            "head/loss_curve": "(N, 2) float64: (step, mean training loss over the steps up to it), N <= 200, since the last (re)start",
            "torso/<gaussians>": "torso Gaussians in the fixed camera's space (OpenCV, world_to_cam = identity)",
            "torso/val_psnr": "(K, 2) float64: (step, held-out torso-region PSNR dB)",
            "torso/loss_curve": "(N, 2) float64: as head/loss_curve",
            "torso/world_to_cam": "(4, 4) float32: the fixed torso camera (identity)",
            "intrinsics": "(3, 3) float32: pinhole K at the training resolution",
            "attrs": "resolution, crop_size, psnr_head, psnr_torso, n_head, n_torso, train_seconds, head_depth, held_out [start, end)",
            "side file": "RUN/static.ply: the canonical head as a standard 3DGS PLY",
        }),
        ArtifactSpec("deform", "deform.h5", "talkctl.deform", 1, "train-deform", {
            "head/<gaussians>": "canonical head Gaussians trained with the field",
            "field/<param>": "DeformField state_dict, one dataset per tensor (hash grid + MLP)",
            "condition/<param>": "condition state_dict (audio: conv + attention weights, mean, std; landmarks: "
                                 "indices, neutral)",
            "audio_mean, audio_std": "condition=audio: (D,) float32 per-dimension normalisation of audio.h5 features used in training",
            "landmark_indices": "condition=landmarks: (P,) int64 moving landmarks (mouth, jaw, eyelids) driving the head",
            "landmark_neutral": "condition=landmarks: (L, 3) float32 neutral face (mean canonical landmarks of the training frames)",
            "val_psnr": "(K, 2) float64: (step, held-out head-region PSNR dB)",
            "loss_curve": "(N, 2) float64: (step, mean training loss over the steps up to it), N <= 200, since the last (re)start",
            "intrinsics": "(3, 3) float32: K at the training resolution",
            "attrs": "field_spec, condition_spec (JSON, to rebuild the networks), condition, encoding, perceptual_loss "
                     "(lpips|dssim|none: the one actually used), lip_loss, init_from, audio_extractor, resolution, "
                     "crop_size, psnr_head, n_gaussians, train_seconds, held_out; condition=landmarks also "
                     "landmark_sigma, landmark_k, landmark_scale (offset unit), landmark_alignment, landmark_parts",
        }),
        ArtifactSpec("torso", "torso.h5", "talkctl.torso", 1, "train-torso", {
            "torso/<gaussians>": "torso Gaussians (fixed camera space)",
            "field/<param>": "pose-conditioned DeformField state_dict",
            "pose/<param>": "PoseCondition buffers (pose mean, std)",
            "world_to_cam": "(4, 4) float32: the fixed camera (identity)",
            "intrinsics": "(3, 3) float32: K at the training resolution",
            "background": "(R, R, 3) uint8: background plate at the training resolution",
            "val_psnr": "(K, 2) float64: (step, held-out full-composite PSNR dB)",
            "loss_curve": "(N, 2) float64: (step, mean training loss over the steps up to it), N <= 200, since the last (re)start",
            "net/<param>": "mode=image: StyleUNet state_dict (torso_image.py) instead of torso/ and field/",
            "attrs": "mode (gaussian | image), field_spec (gaussian) or net_spec (image), condition_spec, resolution, "
                     "crop_size, psnr_full, n_gaussians (gaussian) or n_parameters (image), train_seconds, held_out",
        }),
        ArtifactSpec("a2l", "a2l.h5", "talkctl.a2l", 1, "train-a2l", {
            "weights/<name>": "float32 arrays: the Transformer's state_dict (a2l_model.AudioToLandmarks), one "
                              "dataset per parameter or buffer (`basis` (K, 3P): coefficients -> offsets)",
            "channels": "(D',) int64: feature channels of audio.h5 the model reads (formants dropped if off)",
            "landmark_indices": "(P,) int64: landmarks predicted (mouth, jaw, eyelids; no rigid points)",
            "neutral": "(L, 3) float32: the subject's mean face in track's canonical head space "
                       "(mean of the training frames' pose-free landmarks)",
            "heldout_offsets": "(Th, P, 3) float32: predicted offsets from neutral for the held-out frames",
            "curve/step, curve/train_loss, curve/heldout_mouth_lmd": "(E,) float64: training curve",
            "attrs": "model (JSON hyper-parameters), seq_len, formants, feature_names (JSON), feature_dim, "
                     "window, extractor, n_landmarks, interocular (canonical units), basis (JSON: pca, "
                     "components), parts (JSON), held_start, metrics (JSON: mouth_lmd and mouth_lmd_baseline "
                     "(mean 3D mouth-point distance / inter-ocular distance), mouth_lmd_2d (metrics.lmd), "
                     "mouth_open_corr (Pearson of inner-lip gap), all_lmd, jitter, jitter_truth), train_seconds",
        }),
    ]
}


# Every <gaussians> group: means (N,3), quats (N,4) wxyz unnormalised, log_scales (N,3),
# opacity_logits (N,), sh_dc (N,3), sh_rest (N,K-1,3) float32 (stages/gaussians.py).
GAUSSIANS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")


def spec(name: str) -> ArtifactSpec:
    return ARTIFACTS[name]


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, stage_version: int, config: dict, inputs: dict[str, str]) -> str:
    payload = canonical_json({"stage": stage, "version": stage_version, "config": config, "inputs": inputs})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _h5py():
    import h5py  # deferred: keeps `talkctl --help` fast

    return h5py


def read_attrs(run: RunDir, name: str) -> dict | None:
    """Root attributes of an artifact, or None when missing or unreadable."""
    path = spec(name).path(run)
    if not path.exists():
        return None
    try:
        with _h5py().File(path, "r") as f:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError:
        return None


def current_fingerprint(run: RunDir, name: str, verify: bool = False) -> str | None:
    """The fingerprint of a readable artifact of the current schema (with `verify`, also one
    whose bytes match their checksums), else None: the stage that makes it must run."""
    attrs = read_attrs(run, name)
    if not attrs or attrs.get("schema") != spec(name).schema or int(attrs.get("schema_version", -1)) != spec(name).version:
        return None
    if verify and h5files.verify_path(spec(name).path(run)) is not None:
        return None
    return attrs.get("fingerprint")


def state(run: RunDir, name: str, verify: bool = False) -> tuple[str, str]:
    """('done'|'stale'|'missing'|'invalid', why) for one artifact; `verify` also checks its
    bytes against their checksums (a mismatch is 'invalid')."""
    s = spec(name)
    attrs = read_attrs(run, name)
    if attrs is None:
        if s.path(run).exists():
            return "invalid", "unreadable file"
        return "missing", ""
    if attrs.get("schema") != s.schema or int(attrs.get("schema_version", -1)) != s.version:
        return "invalid", f"schema {attrs.get('schema')} v{attrs.get('schema_version')}, expected {s.schema} v{s.version}"
    if verify and (problem := h5files.verify_path(s.path(run))):
        return "invalid", problem
    recorded = json.loads(attrs.get("inputs", "{}"))
    for inp, fp in recorded.items():
        if inp == "video":
            now = run.video_fingerprint()
        else:
            now = current_fingerprint(run, inp)
        if now is None:
            return "stale", f"input {inp} is missing"
        if now != fp:
            return "stale", f"input {inp} changed"
    return "done", ""


def rebuild_hint(run: RunDir, name: str) -> str:
    """What to run to (re)make an artifact: its stage, which rebuilds anything not up to date."""
    return command(spec(name).stage, "--run", run)


def open_for_read(run: RunDir, name: str, verify: bool = True):
    """Open an artifact for reading, refusing a missing, unreadable, wrong-schema or (with
    `verify`) corrupt file: one whose bytes do not match the checksums written with it."""
    s = spec(name)
    path = s.path(run)
    fix = rebuild_hint(run, name)
    if not path.exists():
        raise ArtifactError(f"{s.filename} is missing in {run}: run {fix} first")
    try:
        f = _h5py().File(path, "r")
    except OSError:
        raise ArtifactError(f"{path} is unreadable (corrupt or not HDF5): rebuild it with {fix}") from None
    got, ver = f.attrs.get("schema"), f.attrs.get("schema_version")
    if got != s.schema or ver is None or int(ver) != s.version:
        f.close()
        raise ArtifactError(
            f"{path} has schema {got} v{ver}, this talkctl reads {s.schema} v{s.version}: rebuild it with {fix}"
        )
    if verify and (problem := h5files.verify(f)):
        f.close()
        raise ArtifactError(f"{path} is corrupt ({problem}): rebuild it with {fix}")
    return f


@contextmanager
def write(run: RunDir, name: str, *, producer: str, fingerprint: str, config: dict,
          inputs: dict[str, str], backend: dict[str, str] | None = None) -> Iterator:
    """Write an artifact atomically and checksummed (h5files.atomic): yields an open h5py.File
    on `<file>.partial`."""
    s = spec(name)

    def finish(f):
        f.attrs.update({
            "schema": s.schema,
            "schema_version": s.version,
            "producer": producer,
            "talkctl_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": canonical_json(config),
            "inputs": canonical_json(inputs),
            "fingerprint": fingerprint,
            "backend": canonical_json(backend or {}),
        })

    with h5files.atomic(s.path(run), finish=finish) as f:
        yield f


def frame_chunks(shape: tuple[int, ...]) -> dict:
    """h5py dataset options for per-frame data: one frame per chunk, compressed."""
    return {"chunks": (1, *shape[1:]), "compression": "gzip", "compression_opts": 1, "shuffle": True}


def remove_partials(run: RunDir) -> list[Path]:
    """Delete leftovers of killed writers (called under the lock, before a stage runs)."""
    gone = []
    for p in [*run.path.glob("*.partial"), *run.path.glob("checkpoints/*.partial")]:
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


# ---- reading by path, and the typed readers ---------------------------------------------
import typing  # noqa: E402

from talkctl.errors import InputError  # noqa: E402


def open_path(path: str | os.PathLike, name: str, give: str = ""):
    """Open a file the user named as artifact `name` (e.g. a track.h5 given as a pose source),
    refusing a missing, unreadable or wrong-schema file with an InputError: the user chose the
    file, so the fix is another file (`give` says which)."""
    s = spec(name)
    path = Path(path)
    fix = f"; {give}" if give else ""
    if not path.is_file():
        raise InputError(f"{path} does not exist{fix}")
    try:
        f = _h5py().File(path, "r")
    except OSError:
        raise InputError(f"{path} is not a readable HDF5 file{fix}") from None
    got, ver = f.attrs.get("schema"), f.attrs.get("schema_version")
    got = got.decode() if isinstance(got, bytes) else got
    if got != s.schema or ver is None or int(ver) != s.version:
        f.close()
        raise InputError(f"{path} is not a talkctl {s.filename} v{s.version} (schema {got} v{ver}){fix}")
    if problem := h5files.verify(f):
        f.close()
        raise InputError(f"{path} is corrupt ({problem}){fix}")
    return f


def open_artifact(source, name: str, give: str = ""):
    """Artifact `name` of a run (a RunDir or a run directory: open_for_read) or a file path (open_path)."""
    if isinstance(source, RunDir):
        return open_for_read(source, name)
    if Path(source).is_dir():
        return open_for_read(RunDir(source, create=False), name)
    return open_path(source, name, give)


if typing.TYPE_CHECKING:  # annotations only: numpy stays out of `talkctl --help`
    import numpy as np

# What track.h5 holds (all read unless a consumer names fewer).
TRACK_ARRAYS = ("landmarks2d", "landmarks3d", "valid", "world_to_cam", "intrinsics", "canonical_shape",
                "reproj_error", "blink", "eye_area", "mouth_open", "lip_box", "face_box")


@dataclass
class Track:
    """track.h5 as arrays (layout in ARTIFACTS["track"]). Arrays a reader did not ask for, or the
    file does not hold, are None. Also readable like a mapping (`"blink" in track`, track["blink"],
    track.attrs), which is what face.canonical.canonical_landmarks takes."""
    n_frames: int
    attrs: dict
    landmarks2d: np.ndarray | None = None      # (T, L, 2) crop px
    landmarks3d: np.ndarray | None = None      # (T, L, 3)
    valid: np.ndarray | None = None            # (T,) bool
    world_to_cam: np.ndarray | None = None     # (T, 4, 4)
    intrinsics: np.ndarray | None = None       # (3, 3)
    canonical_shape: np.ndarray | None = None  # (L, 3)
    reproj_error: np.ndarray | None = None     # (T,)
    blink: np.ndarray | None = None            # (T,)
    eye_area: np.ndarray | None = None         # (T,)
    mouth_open: np.ndarray | None = None       # (T,)
    lip_box: np.ndarray | None = None          # (T, 4)
    face_box: np.ndarray | None = None         # (T, 4)

    def __contains__(self, key: str) -> bool:
        return key in TRACK_ARRAYS and getattr(self, key) is not None

    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)


def read_track(source, fields=TRACK_ARRAYS, frames: slice | None = None, give: str = "") -> Track:
    """track.h5 of a run (RunDir or run directory) or a track.h5 path, as a Track with the arrays
    in `fields` (() = only n_frames and attrs); per-frame arrays cut to `frames` when given."""
    unknown = [k for k in fields if k not in TRACK_ARRAYS]
    if unknown:
        raise ValueError(f"track.h5 has no arrays {unknown}; known: {TRACK_ARRAYS}")
    per_frame = set(TRACK_ARRAYS) - {"intrinsics", "canonical_shape"}
    with open_artifact(source, "track", give) as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        n = next((f[k].shape[0] for k in ("world_to_cam", "landmarks2d") if k in f), 0)
        arrays = {k: f[k][frames if frames is not None and k in per_frame else ()] for k in fields if k in f}
    return Track(n_frames=int(n), attrs=attrs, **arrays)
