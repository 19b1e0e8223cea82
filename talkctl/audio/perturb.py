"""Speed-perturbed copies of the training audio, for the audio path of train-deform.

One speaker's few minutes teach the audio path that voice's pitch and vocal-tract length along
with what is said. Played faster or slower (resampled, as speed perturbation does), the same
speech comes out with its pitch and formants shifted by the factor, like a shorter or longer vocal
tract; its feature frames are then taken back onto the original timeline, so each copy lines up
with the tracked mouth frame by frame. The audio path trained on all copies learns what does not
change between them.

    windows = speed_perturbed_windows(recipe, wav, n_frames, 1.1)   # (T, W, D), like recipe(wav)
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from talkctl.audio.recipe import FeatureRecipe, window_indices


def resample_speed(wav: np.ndarray, factor: float) -> np.ndarray:
    """The waveform played `factor` times as fast (factor > 1: shorter, higher), same sample rate."""
    from scipy.signal import resample_poly

    ratio = Fraction(float(factor)).limit_denominator(40)
    return resample_poly(np.asarray(wav, np.float32), ratio.denominator, ratio.numerator).astype(np.float32)


def speed_perturbed_windows(recipe: FeatureRecipe, wav: np.ndarray, n_frames: int, factor: float) -> np.ndarray:
    """(n_frames, W, D) windows of the audio played `factor` times as fast, normalised the way the
    recipe normalises any audio (utterance: by its own speech frames), each feature frame moved back
    to the time it has in the original audio (frame j of the original <- frame j / factor)."""
    fast = resample_speed(wav, factor)
    norm = recipe.normalise(recipe.raw(fast), fast)
    rate, offset = recipe.extractor.rate, recipe.extractor.offset
    n_orig = int(round(len(norm) * factor))  # the original audio's feature frames
    src = np.clip(np.round(((np.arange(n_orig) / rate + offset) / factor - offset) * rate).astype(np.int64),
                  0, len(norm) - 1)
    back = norm[src]
    return back[window_indices(n_frames, len(back), rate, offset, recipe.window)]
