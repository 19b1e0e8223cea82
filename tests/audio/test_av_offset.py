"""audio.av_offset: a clip's picture-to-sound offset from its phones and its mouth opening."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from talkctl.audio.av_offset import OPENING, estimate_offset, offset_from_curve, opening_curve
from conftest import shared_path


def _curve(seconds=30.0, seed=0):
    return gaussian_filter1d(np.random.default_rng(seed).normal(size=int(seconds * 100)), 6.0)


def _mouth_leading(curve, seconds, noise=0.3, seed=1):
    """A mouth per 25 fps frame that shows, at frame i, the opening heard `seconds` later."""
    n = len(curve) // 4
    at = np.clip(np.round((np.arange(n) + 0.5) * 4).astype(int) + int(round(seconds * 100)), 0, len(curve) - 1)
    m = curve[at]
    return m + noise * m.std() * np.random.default_rng(seed).normal(size=n)


@pytest.mark.parametrize("seconds", [-0.08, 0.0, 0.05, 0.13])
def test_a_known_offset_is_found_to_the_feature_frame(seconds):
    curve = _curve()
    found = np.ones(len(curve) // 4, bool)
    found[100:140] = False  # frames without a face are left out, not fatal
    est = offset_from_curve(curve, 100.0, 0.0, _mouth_leading(curve, seconds), found)
    assert est is not None and est.seconds == pytest.approx(seconds, abs=0.011)
    assert est.corr > 0.9 and (seconds == 0.0 or est.corr_at_zero < est.corr)
    assert est.frames() == round(seconds * 25) and est.as_dict()["av_offset_ms"] == pytest.approx(1000 * seconds, abs=11)


def test_too_little_or_unrelated_speech_gives_no_estimate():
    curve = _curve()
    mouth = _mouth_leading(curve, 0.0)
    assert offset_from_curve(curve, 100.0, 0.0, mouth[:100]) is None  # 4 s of frames: too few
    unrelated = np.random.default_rng(5).normal(size=len(mouth))
    assert offset_from_curve(curve, 100.0, 0.0, unrelated) is None
    assert offset_from_curve(curve, 100.0, 0.0, np.ones(len(mouth))) is None  # a still mouth


def test_opening_curve_weights_phones_by_how_far_they_open():
    phones = ["AA", "M", "SIL", "IY"]
    post = np.eye(4)[[0] * 50 + [1] * 50 + [2] * 50 + [3] * 50]
    c = opening_curve(post, phones, 100.0)
    assert c[25] == pytest.approx(OPENING["AA"], abs=1e-3) and c[75] == pytest.approx(0.0, abs=1e-3)
    assert c[125] == pytest.approx(0.0, abs=1e-3) and c[175] == pytest.approx(OPENING["IY"], abs=1e-3)


def test_real_speech_through_the_recogniser():
    """german_20s's own sound, its opening curve shown 80 ms early as the 'mouth': the estimate
    through pocketsphinx gives those 80 ms back (the timing conventions agree end to end)."""
    video = shared_path("data", "video", "german_20s.mp4")
    from talkctl.audio.phonetic import PhoneticExtractor
    from talkctl.media.audio import load_waveform

    wav = load_waveform(video)
    ex = PhoneticExtractor.from_config({"phone_workers": 1})
    curve = opening_curve(ex.frames(wav)[:, :len(ex.phones)], ex.phones, ex.rate)
    est = estimate_offset(wav, _mouth_leading(curve, 0.08))
    assert est is not None and est.seconds == pytest.approx(0.08, abs=0.011)
