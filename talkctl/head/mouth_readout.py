"""Training-only pieces of an audio condition's supervision by the tracked mouth and jaw landmarks
(train-deform audio_landmark_loss): the read-out (the free audio code through a linear map, or the
mouth state, head.mouth_state, as it is) with its tracked targets (landmark_readout), the
speed-perturbed training audio it also learns from (audio_speed), and the subject's articulation
spread recorded for render (audio_amplitude)."""
from __future__ import annotations

import numpy as np
import torch

from talkctl.devices import to_device
from talkctl.errors import ArtifactError, TalkctlError, UsageError
from talkctl.head.mouth_state import speech_spread

AMPLITUDE_MODES = ("utterance", "calibrated")
SPEED_RANGE = (0.5, 2.0)


class LandmarkReadout(torch.nn.Module):
    """Training-only supervision of the audio condition (audio_landmark_loss): its output, through a
    linear read-out (the free code: targets = per-coordinate standardised mouth/jaw offsets) or as
    it is (mouth-state mode: targets = the tracked states), against the tracked targets."""

    def __init__(self, code_dim: int, targets: np.ndarray, linear: bool = True):
        super().__init__()
        t = torch.as_tensor(targets, dtype=torch.float32)
        self.register_buffer("targets", (t - t.mean(0)) / (t.std(0) + 1e-6) if linear else t)
        self.linear = torch.nn.Linear(code_dim, t.shape[1]) if linear else None

    def loss(self, condition, frames: np.ndarray) -> torch.Tensor:
        """frames: host indices (the condition finds shared windows there without a GPU sync)."""
        target = self.targets[to_device(frames, self.targets.device, torch.long)]
        if self.linear is None:  # mouth state: every ensemble member fitted on its own
            out = condition.member_states(frames)
            return torch.nn.functional.mse_loss(out, target.expand_as(out))
        return torch.nn.functional.mse_loss(self.linear(condition.encode(frames)), target)


def mouth_amplitude(cfg, readout: LandmarkReadout, scene, axis: np.ndarray) -> dict:
    """deform.h5 attrs for audio_amplitude: for utterance (render rescales every audio to it),
    {"mouth_axis": the states' lip-gap direction (head.mouth_state.opening_axis), "mouth_spread": the
    spread of the tracked states along it over the training frames' speech}; {} for calibrated."""
    mode = cfg["audio_amplitude"]
    if mode not in AMPLITUDE_MODES:
        raise UsageError(f"train-deform audio_amplitude={mode!r}: use {' or '.join(AMPLITUDE_MODES)}")
    if mode != "utterance":
        return {}
    tr = scene.train_idx
    speech = None if scene.speech is None else np.asarray(scene.speech)[tr]
    states = readout.targets[to_device(tr, readout.targets.device, torch.long)].cpu().numpy()
    axis = np.asarray(axis, np.float64)
    return {"mouth_axis": axis, "mouth_spread": speech_spread((states @ axis)[:, None], speech)}


def speed_perturbed_source(ctx, cfg, condition, readout: LandmarkReadout, scene) -> tuple[int, int]:
    """audio_speed: the condition's source becomes the training features followed by those of the
    training audio played at each speed (audio.perturb), the read-out's targets repeated to match;
    returns (copies, frames per copy). Original frame indices still address the original audio."""
    factors = [float(x) for x in (cfg["audio_speed"] or [])]
    if any(not SPEED_RANGE[0] <= f <= SPEED_RANGE[1] for f in factors):
        raise UsageError(f"train-deform audio_speed={cfg['audio_speed']!r}: use factors in {SPEED_RANGE[0]}..{SPEED_RANGE[1]}")
    T = min(len(scene.features), len(readout.targets))
    if not factors:
        return 1, T
    from talkctl.audio.perturb import speed_perturbed_windows
    from talkctl.audio.recipe import FeatureRecipe

    with ctx.read("audio") as a:
        wav = scene.audio.wav if scene.audio is not None else None  # realigned to the picture as the features are
        try:  # the features are remade the way audio.h5's were: its extractor must be at hand
            recipe = FeatureRecipe.from_artifact(a, ctx.device)
        except TalkctlError as exc:
            recipe = None
            ctx.log.warning("audio_speed off: the features cannot be remade (%s)", exc)
    if recipe is None or wav is None:
        return 1, T
    copies = [scene.features[:T]] + [speed_perturbed_windows(recipe, wav, T, f) for f in factors]
    speech = None if scene.speech is None else np.tile(np.asarray(scene.speech)[:T], len(copies))
    condition.set_source(features=np.concatenate(copies), speech=speech)
    readout.targets = readout.targets[:T].repeat(len(copies), 1)
    return len(copies), T


def tracked_landmarks(ctx, cfg, scene, use: str):
    """track.h5's canonical landmarks (canonical_landmarks.CanonicalLandmarks) and their first scene.T
    frames; ArtifactError naming `use` when the track has none."""
    from talkctl.face.canonical import read_canonical_landmarks

    lm = read_canonical_landmarks(ctx.run, method=cfg["landmark_alignment"], use=use)
    return lm, lm.points[: scene.T]


def landmark_readout(ctx, cfg, scene, code_dim: int) -> tuple[LandmarkReadout | None, dict]:
    """The read-out for audio_landmark_loss (None when it is off or track.h5 has no landmarks) and,
    in mouth-state mode, {"mouth_dim", "closed", "explained"} for the condition."""
    from talkctl.face.canonical import mouth_opening, moving_indices, neutral_shape
    from talkctl.head.mouth_state import closed_state, fit_mouth_basis, opening_axis

    if float(cfg["audio_landmark_loss"]) <= 0:
        return None, {}
    try:
        lm, points = tracked_landmarks(ctx, cfg, scene, "audio_landmark_loss")
    except ArtifactError as exc:
        ctx.log.warning("audio_landmark_loss and the mouth state off: %s", exc)
        return None, {}
    idx = moving_indices(lm.n, ("mouth", "jaw"), rigid=lm.rigid)
    offsets = (points[:, idx] - neutral_shape(points, lm.valid[: scene.T], scene.train_idx)[idx]).reshape(len(points), -1)
    if int(cfg["audio_mouth_dim"]) <= 0:
        return LandmarkReadout(code_dim, offsets).to(ctx.device), {}
    basis = fit_mouth_basis(offsets[scene.train_idx], int(cfg["audio_mouth_dim"]))
    states = basis.project(offsets)
    gap = mouth_opening(points, lm.n)
    mouth = {"mouth_dim": states.shape[1], "explained": basis.explained, "axis": opening_axis(states, gap, scene.train_idx),
             "closed": closed_state(states, gap, scene.train_idx)}
    return LandmarkReadout(states.shape[1], states, linear=False).to(ctx.device), mouth
