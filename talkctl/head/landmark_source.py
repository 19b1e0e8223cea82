"""Where a landmark-conditioned head (train-deform --condition landmarks) gets its landmarks at render time.

    drive = resolve_landmarks(run, source, audio_features=..., frames=..., edit=...)  # (T, L, 3) + a description

Sources (all end as canonical landmarks around *this* run's neutral face, deform.h5's
landmark_neutral, so the field sees offsets like those it was trained on):
  "a2l"        train-a2l's prediction for the driving audio's features (the run's a2l.h5):
               its offsets of the moving points, put on this run's neutral face
  OTHER_RUN    re-enactment: another run's tracked canonical landmarks (its track.h5), as offsets
               from *its* neutral face (mean of its training frames) put on this subject's neutral
               face. Both canonical spaces put the outer eye corners 0.65 apart, so the offsets
               need no rescaling; the landmark layouts (backends) must match.
  "track"      this run's own tracked landmarks (frames `frames`, e.g. the held-out part): the
               landmark method's upper bound, with no audio model in the loop
Edits (`edit`: "mouth_scale=1.5,eyes_open=1" or a dict, landmark_condition.apply_edit) are applied
last and recorded in the description (render writes it into the output's metadata).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkctl.errors import ArtifactError, InputError, UsageError, command


@dataclass
class LandmarkDrive:
    landmarks: np.ndarray           # (T, L, 3) canonical head space
    description: str
    edit: dict = field(default_factory=dict)


def _rundir(run):
    from talkctl.rundir import RunDir

    return run if isinstance(run, RunDir) else RunDir(run, create=False)


def head_landmark_info(run) -> dict:
    """deform.h5's landmark record: neutral (L,3), indices (P,), n_landmarks, alignment."""
    import json

    from talkctl import artifacts

    rd = _rundir(run)
    with artifacts.open_for_read(rd, "deform") as f:
        if str(f.attrs.get("condition", "audio")) != "landmarks":
            raise UsageError(f"{rd} has an audio-driven head (train-deform condition={f.attrs.get('condition', 'audio')}); "
                             "--landmarks and --edit need `talkctl train-deform --condition landmarks`")
        spec = json.loads(f.attrs["condition_spec"])
        return {"neutral": f["landmark_neutral"][()].astype(np.float32), "indices": f["landmark_indices"][()],
                "n_landmarks": int(spec["n_landmarks"]),
                "alignment": str(f.attrs.get("landmark_alignment", "auto")) or "auto"}


def tracked_landmarks(run, alignment: str = "auto") -> tuple[np.ndarray, np.ndarray, int]:
    """A run's canonical landmarks from its track.h5: (points (T,L,3), neutral of its training frames, L)."""
    from talkctl.face.canonical import neutral_shape, read_canonical_landmarks
    from talkctl.timebase import split_frames

    lm = read_canonical_landmarks(_rundir(run), method=alignment)
    train_idx, _ = split_frames(len(lm.points))
    return lm.points, neutral_shape(lm.points, lm.valid, train_idx), lm.n


def _materialise(features) -> np.ndarray:
    return features if isinstance(features, np.ndarray) else np.asarray(features[0:len(features)])


def resolve_landmarks(run, source: str = "a2l", audio_features=None, frames=None, edit=None,
                      device: str = "cpu", speech=None) -> LandmarkDrive:
    """Landmarks for rendering run's landmark-driven head; see the module doc for `source`.
    speech: the driving audio's speech activity (a2l closes the mouth in pauses)."""
    from talkctl.head.landmark_condition import apply_edit, parse_edit

    info = head_landmark_info(run)
    neutral, L = info["neutral"], info["n_landmarks"]
    edit = parse_edit(edit)
    if source == "a2l":
        if audio_features is None:
            raise UsageError("--landmarks a2l needs driving audio features")
        from talkctl.head.a2l_predict import load_predictor

        rd = _rundir(run)
        if not (rd.path / "a2l.h5").exists():
            raise ArtifactError(f"{rd} has no a2l.h5: run {command('train-a2l', '--run', rd)} first, "
                                "or give --landmarks OTHER_RUN")
        pred = load_predictor(rd, device)
        if pred.n_landmarks != L:
            raise ArtifactError(f"a2l.h5 predicts a {pred.n_landmarks}-point layout but the head was trained on {L}: "
                                "rerun train-a2l and train-deform on the same track")
        off = pred.offsets(_materialise(audio_features), speech)
        lm = np.repeat(neutral[None], len(off), 0)
        lm[:, pred.indices] += off
        desc = f"a2l prediction from the driving audio ({len(lm)} frames)"
    elif source == "track":
        pts, _, n = tracked_landmarks(run, info["alignment"])
        lm = pts if frames is None else pts[np.asarray(frames)]
        desc = f"tracked landmarks of {_rundir(run)}"
    else:
        other = Path(source)
        if not other.is_dir():
            raise InputError(f"--landmarks {source!r}: give a2l, track, or another run directory (re-enactment)")
        pts, other_neutral, n = tracked_landmarks(other, info["alignment"])
        if n != L:
            raise InputError(f"{other} has {n}-point landmarks but this head was trained on {L}: track both "
                             "with the same --landmarks backend")
        sel = np.arange(len(pts)) if frames is None else np.asarray(frames) % len(pts)
        lm = neutral[None] + (pts[sel] - other_neutral[None])
        desc = f"re-enactment: landmarks of {other.absolute()} on this subject's neutral face"
    lm = apply_edit(lm.astype(np.float32), neutral, L, edit)
    if edit:
        desc += "; edit " + ",".join(f"{k}={v:g}" for k, v in edit.items())
    return LandmarkDrive(lm, desc, edit)


# ---- for render / eval ----------------------------------------------------------------------
RENDER_DEFAULTS = {
    "landmarks": "auto",  # landmark-driven heads: auto | a2l | track | OTHER_RUN (re-enactment)
    "edit": "",           # e.g. "mouth_scale=1.5,eyes_open=1"
}


def head_condition(run) -> str:
    from talkctl import artifacts

    attrs = artifacts.read_attrs(_rundir(run), "deform") or {}
    return str(attrs.get("condition", "audio"))


def landmarks_for_drive(run, features, source_frames=None, cfg: dict | None = None,
                        device: str = "cpu", speech=None) -> LandmarkDrive | None:
    """What render/eval call once per drive: None for an audio-driven head (and a usage error when
    cfg asks for landmarks or an edit there); else the landmarks for the drive's T frames.

    cfg["landmarks"]: "auto" = a2l when the run has a2l.h5 (its prediction from `features`, the
    driving audio: new audio, or the held-out audio when self-driven), else "track" when the
    drive replays this run's frames (`source_frames`, self-driven held-out frames), else an error
    naming train-a2l. "track" on new audio follows `source_frames` (the pose source's frames) or
    cycles the track. OTHER_RUN: re-enactment, its frames cycled to the drive's length."""
    cfg = {**RENDER_DEFAULTS, **(cfg or {})}
    choice, edit = str(cfg["landmarks"] or "auto"), cfg.get("edit") or ""
    if head_condition(run) != "landmarks":
        if choice != "auto" or edit:
            raise UsageError(f"--landmarks/--edit need a landmark-driven head; {_rundir(run)} was trained with "
                             "condition=audio (`talkctl train-deform --condition landmarks`)")
        return None
    T = len(features)
    rd = _rundir(run)
    if choice == "auto":
        if (rd.path / "a2l.h5").exists():
            choice = "a2l"
        elif source_frames is not None:
            choice = "track"
        else:
            raise ArtifactError(f"{rd} has a landmark-driven head but no a2l.h5 to turn the audio into landmarks: "
                                f"run {command('train-a2l', '--run', rd)}, or give --landmarks OTHER_RUN")
    frames = None
    if choice == "track":
        if source_frames is not None:
            frames = np.asarray(source_frames)
        else:
            from talkctl import artifacts

            frames = np.arange(T) % artifacts.read_track(rd, fields=()).n_frames
    elif choice != "a2l":
        frames = np.arange(T)
    return resolve_landmarks(rd, choice, audio_features=features if choice == "a2l" else None, frames=frames,
                             edit=edit, device=device, speech=speech)
