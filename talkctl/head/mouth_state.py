"""The mouth state that drives an audio head: a few numbers per frame describing the mouth and jaw.

From track.h5's canonical (pose-free) landmarks: the offsets of the mouth and jaw points from the
subject's neutral face, projected on their first K principal components (PCA of the training
frames), divided by the spread of the first one so the state is O(1):

    basis = fit_mouth_basis(offsets[train], k)      # offsets (T, 3P)
    states = basis.project(offsets)                 # (T, K)
    closed = closed_state(states, opening, train)   # (K,) the subject's closed mouth

train-deform supervises AudioCondition's read-out with `states` (audio -> mouth state) and the
deformation field learns state -> Gaussians; in pauses the condition gives `closed`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLOSED_QUANTILE = 0.1  # the training frames with the smallest lip gap make the closed mouth


@dataclass
class MouthBasis:
    mean: np.ndarray   # (3P,)
    basis: np.ndarray  # (K, 3P) orthonormal rows
    scale: float       # std of the first component on the training frames
    explained: float   # fraction of the offsets' variance the K components hold

    def project(self, offsets: np.ndarray) -> np.ndarray:
        return ((np.asarray(offsets, np.float64) - self.mean) @ self.basis.T / self.scale).astype(np.float32)


def fit_mouth_basis(offsets: np.ndarray, k: int) -> MouthBasis:
    """PCA of (N, 3P) training offsets; k is capped by the data (N - 1, 3P)."""
    x = np.asarray(offsets, np.float64)
    mean = x.mean(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(int(k), len(sv), len(x) - 1))
    var = sv ** 2
    scale = float(np.sqrt(var[0] / max(len(x) - 1, 1))) or 1.0
    return MouthBasis(mean, vt[:k], scale, float(var[:k].sum() / max(var.sum(), 1e-12)))


def closed_state(states: np.ndarray, opening: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(K,) mean state of the training `frames` whose lip gap is in the lowest CLOSED_QUANTILE."""
    frames = np.asarray(frames)
    gap = np.asarray(opening, np.float64)[frames]
    shut = frames[gap <= np.quantile(gap, CLOSED_QUANTILE)]
    return states[shut].mean(0).astype(np.float32)


def spread_gain(pred: np.ndarray, true: np.ndarray, speech: np.ndarray | None = None, max_gain: float = 2.0) -> float:
    """How much wider the tracked states (N,K) spread than the predicted ones on frames the audio
    path did not train on, over the frames with full speech activity (all when fewer than 10):
    |std(true)| / |std(pred)|, clipped to [1, max_gain]. A regression unsure of a sound predicts
    the mean mouth; this gives the prediction back the articulation the subject really has."""
    speaking = np.ones(len(pred), bool) if speech is None else np.asarray(speech) >= 1.0
    if speaking.sum() < 10:
        speaking[:] = True
    spread = float(np.linalg.norm(np.asarray(pred)[speaking].std(0)))
    ratio = float(np.linalg.norm(np.asarray(true)[speaking].std(0))) / max(spread, 1e-6)
    return float(np.clip(ratio, 1.0, max_gain))


# Per-utterance amplitude: how far a mouth opens is a property of the subject, not of the voice
# driving it. A new voice's predicted states are rescaled (one gain per audio, over its speech) so
# their lip gap (along opening_axis) spreads as far as the subject's tracked one did over speech in
# training. The lip gap, not all components: a regression unsure of a sound keeps its spread in the
# small shape components and loses it in the opening, which is what the eye (and eval) follows.
UTTERANCE_GAIN_RANGE = (0.5, 3.0)  # the most a drive's states are narrowed / widened
MIN_SPEECH_FRAMES = 25             # 1 s of full speech at 25 fps: fewer cannot measure a spread


def opening_axis(states: np.ndarray, opening: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(K,) least-squares direction of the lip gap in state space on the training `frames`:
    gap ~ states @ axis + c (the gap is near linear in the landmark offsets the states hold)."""
    frames = np.asarray(frames)
    a = np.c_[np.asarray(states, np.float64)[frames], np.ones(len(frames))]
    return np.linalg.lstsq(a, np.asarray(opening, np.float64)[frames], rcond=None)[0][:-1]


def speech_spread(states: np.ndarray, speech: np.ndarray | None = None) -> float:
    """|std| of states (N,K) over the frames with full speech activity (all when fewer than
    MIN_SPEECH_FRAMES): the size of the subject's articulation, in mouth-state units."""
    states = np.asarray(states, np.float64)
    speaking = np.ones(len(states), bool) if speech is None else np.asarray(speech) >= 1.0
    if speaking.sum() < MIN_SPEECH_FRAMES:
        speaking[:] = True
    return float(np.linalg.norm(states[speaking].std(0))) if len(states) > 1 else 0.0


def utterance_gain(raw: np.ndarray, speech: np.ndarray, target: float) -> float | None:
    """The gain that makes the ungained predicted states `raw` (T,K) of one audio (or their lip
    gaps (T,1)) spread over its speech frames as far as `target` (speech_spread of the subject's), clipped to
    UTTERANCE_GAIN_RANGE; None when the audio has too little speech to tell (silence stays closed
    by the speech gate whatever the gain)."""
    speaking = np.asarray(speech) >= 1.0
    if target <= 0 or speaking.sum() < MIN_SPEECH_FRAMES:
        return None
    spread = float(np.linalg.norm(np.asarray(raw, np.float64)[speaking].std(0)))
    return float(np.clip(target / max(spread, 1e-6), *UTTERANCE_GAIN_RANGE))
