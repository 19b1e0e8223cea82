"""What drives a render: per frame, audio features (or landmarks), head pose, blink, and the sound.

    drive = self_drive(run)                    # the held-out frames, with their own audio, poses, blinks
    drive = audio_drive(run, "speech.wav", cfg)  # new audio, features made exactly like the run's
    drive = with_landmarks(run, drive, cfg)    # a landmark-driven head gets its landmarks here

Head poses and blinks for new audio come from head.poses: "train" (the training track,
ping-pong), "still", or another run directory / track.h5 / .npz.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl import artifacts
from talkctl.audio.melformant import SILENT_CLIP_DB, speech_level_db
from talkctl.audio.recipe import FeatureRecipe, speech_activity, window_indices
from talkctl.errors import InputError, StageError
from talkctl.face.brows import head_uses_brows, read_eye_inputs
from talkctl.head.landmark_source import landmarks_for_drive
from talkctl.head.mouth_state import utterance_gain
from talkctl.head.poses import pose_sequence
from talkctl.media.audio import load_waveform
from talkctl.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, n_video_frames, split_frames


@dataclass
class Drive:
    features: "np.ndarray | FeatureWindows"  # (T,W,D) audio features of the driving audio
    wav: np.ndarray          # 16 kHz mono waveform muxed into the output
    world_to_cam: np.ndarray  # (T,4,4)
    blink: np.ndarray        # (T,) or (T,E) eye inputs: blink, brow raise (face.brows)
    pose_description: str
    audio_description: str
    source_frames: np.ndarray | None  # (T,) frames of this run's video matching each pose (full-frame paste)
    held_out: tuple[int, int] | None = None
    blink_description: str = ""
    landmarks: np.ndarray | None = None   # (T,L,3) for a landmark-driven head (with_landmarks)
    landmark_description: str = ""
    speech: np.ndarray | None = None      # (T,) speech activity of the audio (audio.recipe.speech_activity)
    speech_level_db: float | None = None  # new audio: its speech level (dBFS); below SILENT_CLIP_DB it is silence
    mouth_gain: float | None = None       # this audio's mouth-state gain (drive_mouth_gain; None: the trained one)
    mouth_gain_known: bool = False        # drive_mouth_gain has run (feed runs it once, on the first batch)

    @property
    def silent(self) -> bool:
        return self.speech_level_db is not None and self.speech_level_db < SILENT_CLIP_DB

    @property
    def n_frames(self) -> int:
        return len(self.features)


def context(head) -> tuple[int, int]:
    """(before, after): neighbouring frames of driving data the head's condition reads for one frame."""
    A = int(getattr(head.condition, "attn_window", 0) or 0)
    return A // 2, max(A - A // 2 - 1, 0)


def _span(head, drive: Drive, idx: np.ndarray) -> tuple[int, int]:
    """[lo, hi): the frames of driving data that frames idx (consecutive) read, context included."""
    before, after = context(head)
    return max(0, int(idx[0]) - before), min(drive.n_frames, int(idx[-1]) + after + 1)


def feed(head, drive: Drive, idx: np.ndarray) -> np.ndarray:
    """Give the head what frames `idx` (consecutive) of the drive need: their audio windows or
    landmarks plus the condition's context around them, so the codes equal those of the whole
    sequence (edge clamping included) while memory stays flat in the drive's length; a mouth-state
    head also gets this audio's gain (drive_mouth_gain, worked out on the first batch).
    Returns idx relative to the slice given."""
    lo, hi = _span(head, drive, idx)
    if drive.landmarks is not None:
        head.set_landmarks(drive.landmarks[lo:hi])
    else:
        set_gain = getattr(head, "set_mouth_gain", None)  # heads without a mouth state need none
        if set_gain is not None:
            if not drive.mouth_gain_known:
                drive.mouth_gain, drive.mouth_gain_known = drive_mouth_gain(head, drive), True
            set_gain(drive.mouth_gain)
        head.set_audio(drive.features[lo:hi], None if drive.speech is None else drive.speech[lo:hi])
    return idx - lo


def drive_mouth_gain(head, drive: Drive, chunk: int = 512) -> float | None:
    """Per-utterance amplitude (train-deform audio_amplitude=utterance, deform.h5 attr mouth_spread):
    the gain that makes the lip gap of this audio's predicted mouth states (along deform.h5's
    mouth_axis) spread over its speech as far as the subject's tracked one did
    (head.mouth_state.utterance_gain). How far the mouth opens is the subject's, whoever speaks.
    None (the trained gain) for other heads, or too little speech. (The head multiplies it by the
    field's render gain, HeadModel.set_mouth_gain.)"""
    target = float(head.attrs.get("mouth_spread", 0.0) or 0.0)
    if target <= 0 or drive.speech is None or not getattr(head.condition, "mouth_dim", 0):
        return None
    head.set_mouth_gain(1.0, raw=True)
    raw = []
    for a in range(0, drive.n_frames, chunk):
        idx = np.arange(a, min(a + chunk, drive.n_frames))
        lo, hi = _span(head, drive, idx)
        head.set_audio(drive.features[lo:hi], None)  # ungated: the states the audio asks for
        raw.append(head.codes(idx - lo).cpu().numpy())
    head.set_mouth_gain(None)
    raw = np.concatenate(raw)
    axis = head.attrs.get("mouth_axis")
    return utterance_gain(raw if axis is None else (raw @ np.asarray(axis))[:, None], drive.speech, target)


def held_out_range(run) -> tuple[int, int]:
    """[start, end) of the frames training never saw (as recorded by train-deform)."""
    attrs = artifacts.read_attrs(run, "deform") or {}
    held = attrs.get("held_out")
    if held is not None and len(np.asarray(held)) == 2:
        a, b = (int(v) for v in np.asarray(held))
        if b > a:
            return a, b
    _, h = split_frames(artifacts.read_track(run, fields=()).n_frames)
    return int(h[0]), int(h[-1]) + 1


def with_landmarks(run, drive: Drive, cfg: dict | None = None, device: str = "cpu") -> Drive:
    """A landmark-driven head gets its landmarks here (a2l on the driving audio, the track,
    another run, an edit: landmark_source.landmarks_for_drive); an audio head is left as is."""
    ld = landmarks_for_drive(run, drive.features, drive.source_frames, cfg, device, speech=drive.speech)
    if ld is not None:
        drive.landmarks, drive.landmark_description = ld.landmarks, ld.description
    return drive


def self_drive(run) -> Drive:
    """The held-out frames with their own audio, poses and blinks."""
    a, b = held_out_range(run)
    return clip_drive(run, a, b, held_out=True)


def clip_drive(run, a: int, b: int, held_out: bool = False) -> Drive:
    """Frames [a, b) of the training clip with their own audio, poses and blinks; the sound
    realigned to the picture as the head's training realigned it (audio.av_offset)."""
    from talkctl.audio.av_offset import aligned_clip_audio

    with artifacts.open_for_read(run, "audio") as f:
        n_audio = f["features"].shape[0]
        b = min(b, n_audio)
        shift = trained_av_shift(run)
        if shift:
            audio = aligned_clip_audio(f, None, None, shift, None)
            feats, whole = audio.features[a:b], audio.wav
        else:
            feats, whole = f["features"][a:b], f["waveform"][()]
    speech = speech_activity(whole, n_audio)[a:b]  # the whole clip's level, as train-deform saw it
    wav = whole[a * SAMPLES_PER_FRAME:b * SAMPLES_PER_FRAME]
    w2c = artifacts.read_track(run, ("world_to_cam",), frames=slice(a, b)).world_to_cam
    blink = read_eye_inputs(run, slice(a, b), brows=head_uses_brows(run))  # (T,E) blink, brow raise
    if b <= a:
        what = "held-out frames" if held_out else f"frames {a}..{b - 1}"
        raise StageError(f"the run has no {what} with audio (frames {a}..{b}); rerun extract-audio and track")
    idx = np.arange(a, b)
    part = "held-out frames" if held_out else "frames"
    return Drive(feats, wav.astype(np.float32), w2c, blink, f"{part} {a}..{b - 1} of the training clip (self-driven)",
                 f"{'held-out ' if held_out else ''}audio of the training clip ({(b - a) / FPS:.2f} s)", idx,
                 (a, b) if held_out else None, f"the {part}' own blinks (track.h5)", speech=speech)


def trained_av_attrs(run) -> dict:
    """What the audio model's training recorded of the clip's picture-to-sound offset
    (audio.av_offset.AlignedAudio.attrs: av_offset_applied_s, av_offset_estimate_s when estimated):
    train-deform's, else train-a2l's; {} when neither recorded it."""
    for name in ("deform", "a2l"):
        attrs = artifacts.read_attrs(run, name) or {}
        if "av_offset_applied_s" in attrs:
            return {k: float(v) for k, v in attrs.items() if k.startswith("av_offset_")}
    return {}


def trained_av_shift(run) -> float:
    """Seconds the training moved the clip's sound by (trained_av_attrs); 0 for none."""
    return trained_av_attrs(run).get("av_offset_applied_s", 0.0)


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
    """Features of new audio made exactly like the run's (audio.recipe.features_for_audio), lazily windowed."""
    recipe = FeatureRecipe.from_artifact(run, device)
    norm = recipe.normalise(recipe.raw(wav), wav, in_place=True)  # no second copy of the whole audio's features
    idx = window_indices(n_video_frames(len(wav)), len(norm), recipe.extractor.rate, recipe.extractor.offset,
                         recipe.window)
    return FeatureWindows(norm, idx)


def audio_drive(run, audio: Path, cfg: dict, device: str = "cpu") -> Drive:
    wav = load_waveform(audio)
    if len(wav) < SAMPLES_PER_FRAME:
        raise InputError(f"{audio} holds {len(wav) / SAMPLE_RATE * 1000:.0f} ms of audio, shorter than one video frame "
                         "(40 ms); give a longer audio file")
    feats = driving_features(wav, run, device)
    n = len(feats)
    pose = str(cfg["pose"])
    poses = pose_sequence(pose, n, start=int(cfg["pose_start"]), run=run, blink_mode=str(cfg["blink"]))
    blinks = "eyes open" if not np.any(poses.blink) else f"from the pose source ({pose}), following its frames"
    return Drive(feats, wav, poses.world_to_cam, poses.blink, poses.description, str(Path(audio).absolute()),
                 poses.source_frames if pose in ("train", "still") else None, blink_description=blinks,
                 speech=speech_activity(wav, n), speech_level_db=speech_level_db(wav))
