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


def test_shift_waveform_moves_the_sound_and_keeps_the_length():
    from talkctl.audio.av_offset import shift_waveform

    wav = np.arange(10, dtype=np.float32) + 1
    assert shift_waveform(wav, 3 / 16000).tolist() == [4, 5, 6, 7, 8, 9, 10, 0, 0, 0]
    assert shift_waveform(wav, -2 / 16000).tolist() == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert shift_waveform(wav, 0.0).tolist() == wav.tolist()


def _audio_h5(tmp_path, T=100, W=16):
    import h5py

    from talkctl.audio.recipe import window_indices

    F = 4 * T + 1
    frames = np.random.default_rng(0).normal(size=(F, 3)).astype(np.float32)
    f = h5py.File(tmp_path / "audio.h5", "w")
    f.create_dataset("feature_frames", data=frames)
    f.create_dataset("features", data=frames[window_indices(T, F, 100.0, 0.0, W)])
    f.create_dataset("waveform", data=np.random.default_rng(1).normal(size=640 * T).astype(np.float32))
    f.attrs.update({"feature_rate": 100.0, "feature_offset": 0.0})
    return f


def test_a_set_offset_realigns_features_and_waveform_exactly(tmp_path):
    from talkctl.audio.av_offset import aligned_clip_audio

    with _audio_h5(tmp_path) as f:
        a = aligned_clip_audio(f, None, None, 0.05, None)  # the picture 50 ms ahead: frame t hears t + 50 ms
        frames, feats, wav = f["feature_frames"][()], f["features"][()], f["waveform"][()]
        assert a.shift == 0.05 and a.attrs() == {"av_offset_applied_s": 0.05}
        assert np.array_equal(a.features[10], frames[4 * 10 + 2 - 8 + 5:][:16])
        assert np.array_equal(a.wav[:-800], wav[800:]) and a.features.shape == feats.shape
        same = aligned_clip_audio(f, None, None, None, None)  # auto without a mouth track: as the file has it
        assert same.shift == 0.0 and np.array_equal(same.features, feats) and same.wav is not None


def test_auto_realigns_only_a_clear_large_offset(monkeypatch):
    import logging

    from talkctl.audio import av_offset
    from talkctl.errors import UsageError

    log = logging.getLogger("test")
    mouth = np.zeros(200)
    for est, want in ((av_offset.AvOffset(0.15, 0.4, 0.2), 0.15), (av_offset.AvOffset(-0.12, 0.3, 0.1), -0.12),
                      (av_offset.AvOffset(0.06, 0.5, 0.45), 0.0), (av_offset.AvOffset(0.15, 0.2, 0.17), 0.0), (None, 0.0)):
        monkeypatch.setattr(av_offset, "estimate_offset", lambda *a, est=est: est)
        assert av_offset.training_shift("auto", np.zeros(10), mouth, None, log) == (want, est)
        assert av_offset.training_shift(None, np.zeros(10), mouth, None, log)[0] == want
    assert av_offset.training_shift(0.0, np.zeros(10), mouth, None, log) == (0.0, None)  # off, whatever it estimates
    with pytest.raises(UsageError, match="av_offset='soon'"):
        av_offset.training_shift("soon", np.zeros(10), mouth, None, log)


@pytest.mark.parametrize("verb", ["train-deform", "train-a2l"])
def test_a_bad_setting_is_refused_before_any_work(tmp_path, capsys, verb):
    from talkctl.cli import main

    run = tmp_path / "run"
    assert main([verb, "--run", str(run), "--set", "av_offset=soon", "-q"]) == 2
    assert "av_offset='soon'" in capsys.readouterr().err and not run.exists()
