"""A trained audio-to-landmarks model (a2l.h5) applied to new audio: canonical landmarks per frame.

    landmarks_for_audio(run, "speech.wav") -> (T, L, 3)   the neutral face with mouth, jaw and eyelids moved
"""
from __future__ import annotations

import json

import numpy as np
import torch

from talkctl import artifacts
from talkctl.audio.recipe import features_for_audio
from talkctl.errors import InputError, UsageError
from talkctl.head.a2l_model import AudioToLandmarks, predict_sequence
from talkctl.rundir import RunDir


def full_landmarks(neutral: np.ndarray, indices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(T,P,3) offsets of the predicted points -> (T,L,3): neutral face with those points moved."""
    out = np.repeat(neutral[None].astype(np.float32), len(offsets), axis=0)
    out[:, indices] += offsets
    return out


AMPLITUDE_MODES = ("utterance", "calibrated")


def amplitude_attrs(mode: str, points: np.ndarray, n_landmarks: int, speech: np.ndarray | None, n_train: int) -> dict:
    """a2l.h5 attrs for train-a2l's `amplitude`: utterance -> {"open_spread": the spread of the
    tracked lip gap over the speech of the first n_train (training) frames} (render scales every audio's predicted gap
    to it, as an audio head does: head.mouth_state); calibrated -> {} (the trained gain only)."""
    from talkctl.face.canonical import mouth_opening
    from talkctl.head.mouth_state import speech_spread

    if mode not in AMPLITUDE_MODES:
        raise UsageError(f"train-a2l amplitude={mode!r}: use {' or '.join(AMPLITUDE_MODES)}")
    if mode != "utterance":
        return {}
    gap = mouth_opening(np.asarray(points)[:n_train], n_landmarks)[:, None]
    return {"open_spread": speech_spread(gap, None if speech is None else np.asarray(speech)[:n_train])}


class A2LPredictor:
    """A trained a2l model loaded from a2l.h5."""

    def __init__(self, f, device: str = "cpu"):
        hp = json.loads(f.attrs["model"])
        self.model = AudioToLandmarks(**hp)
        self.model.load_state_dict({k: torch.from_numpy(f["weights"][k][()]) for k in f["weights"]})
        self.model.to(device).eval()
        self.device = device
        self.channels = f["channels"][()]
        self.indices = f["landmark_indices"][()]
        self.neutral = f["neutral"][()]
        self.seq_len = int(f.attrs["seq_len"])
        self.feature_dim = int(f.attrs["feature_dim"])
        self.window = int(f.attrs["window"])
        self.extractor = str(f.attrs.get("extractor", ""))
        self.n_landmarks = int(f.attrs["n_landmarks"])
        self.closed = f["closed"][()] if "closed" in f else None  # (P,3); older a2l.h5: none
        self.gain = float(f.attrs.get("gain", 1.0))  # spread calibration (train-a2l)
        self.open_spread = float(f.attrs.get("open_spread", 0.0))  # amplitude=utterance: the subject's lip-gap spread

    def offsets(self, features: np.ndarray, speech: np.ndarray | None = None) -> np.ndarray:
        """(T, W, D) features (same extractor and normalisation as the run) -> (T, P, 3). With the
        audio's speech activity (T,) (audio.recipe.speech_activity), pauses give the closed mouth."""
        x = np.asarray(features, np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.window, self.feature_dim):
            raise InputError(f"features of shape {x.shape} do not fit this a2l model: it needs (T, {self.window}, "
                             f"{self.feature_dim}) from the {self.extractor} extractor "
                             "(audio.recipe.features_for_audio with the run's audio.h5)")
        flat = predict_sequence(self.model, x[..., self.channels], self.seq_len, self.device)
        raw = flat.reshape(len(flat), -1, 3)
        off = self.utterance_gain(raw, speech) * raw  # offsets from the mean face: scaled about it
        if speech is None or self.closed is None:
            return off
        gate = np.asarray(speech, np.float32).reshape(-1, 1, 1)[: len(off)]
        return self.closed[None] + gate * (off - self.closed[None])

    def utterance_gain(self, raw: np.ndarray, speech: np.ndarray | None) -> float:
        """The gain for this audio: its predicted lip gap spread over its speech as far as the
        subject's tracked one did (amplitude=utterance, head.mouth_state.utterance_gain); else, or
        with too little speech, the trained gain."""
        from talkctl.face.canonical import mouth_opening
        from talkctl.head.mouth_state import utterance_gain

        if self.open_spread <= 0 or speech is None:
            return self.gain
        gap = mouth_opening(full_landmarks(self.neutral, self.indices, raw), self.n_landmarks)
        g = utterance_gain(gap[:, None], np.asarray(speech)[: len(gap)], self.open_spread)
        return self.gain if g is None else g

    def landmarks(self, features: np.ndarray) -> np.ndarray:
        return full_landmarks(self.neutral, self.indices, self.offsets(features))


def load_predictor(run, device: str = "cpu") -> A2LPredictor:
    """From a run directory (RunDir or path) or an a2l.h5 path."""
    with artifacts.open_artifact(run, "a2l", give="give a run directory or its a2l.h5 "
                                                  "(`talkctl train-a2l` makes one)") as f:
        return A2LPredictor(f, device)


def landmarks_for_audio(run, source, device: str = "cpu") -> np.ndarray:
    """Canonical landmarks (T, L, 3) for new audio: a media file or a (S,) 16 kHz waveform.
    Features are made exactly like the run's own (audio.recipe.features_for_audio)."""
    rd = run if isinstance(run, RunDir) else RunDir(run, create=False)
    predictor = load_predictor(rd, device)
    return predictor.landmarks(features_for_audio(source, rd, device))
