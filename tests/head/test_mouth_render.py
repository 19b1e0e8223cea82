"""The field's mouth render gain (head.mouth_render): solving the measured response, the measurement
itself with a reader that sees what is drawn, train-deform's record, and render applying it."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

import trained_run
from talkctl.head.mouth_render import RENDER_GAIN_RANGE, measure_render_gain, solve_gain, speaking_frames

SR = 16000


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def test_solve_gain_finds_where_the_rendered_mouth_opens_as_far_as_the_real_one():
    assert abs(solve_gain([1.0, 1.5, 2.0], [0.8, 1.2, 1.6]) - 1.25) < 1e-9    # linear: 1 / 0.8
    assert abs(solve_gain([1.0, 1.5, 2.0], [0.82, 1.0, 1.1]) - 1.5) < 1e-9    # sublinear: where it crosses
    assert abs(solve_gain([2.0, 1.0, 1.5], [1.1, 0.82, 1.0]) - 1.5) < 1e-9    # any order
    assert abs(solve_gain([1.0, 1.5, 2.0], [1.25, 1.6, 2.0]) - 0.8) < 1e-9    # the field over-opens: narrower
    assert abs(solve_gain([1.0, 1.5, 2.0], [0.6, 0.7, 0.9]) - 2.0) < 1e-9     # extrapolated: 2 + 0.1 / 0.4, clipped
    assert solve_gain([1.0, 1.5, 2.0], [0.5, 0.5, 0.5]) == RENDER_GAIN_RANGE[1]  # a flat response: the widest
    assert solve_gain([1.0, 1.5, 2.0], [4.0, 5.0, 6.0]) == RENDER_GAIN_RANGE[0]


def test_speaking_frames_prefers_speech_and_spreads():
    frames = np.arange(100)
    speech = np.r_[np.zeros(40), np.ones(60)]
    picked = speaking_frames(frames, speech, 20)
    assert len(picked) == 20 and picked.min() >= 40 and picked.max() == 99
    assert len(speaking_frames(frames, np.zeros(100), 20)) == 20  # no speech: any frames


class _Scheme:
    n, lip_top, lip_bottom, chin, face_top = 4, 0, 1, 2, 3


class _GapReader:
    """A landmark reader that sees a lip gap equal to the image's mean red level (0..1 of the face height)."""
    scheme = _Scheme()

    def __call__(self, rgb):
        gap = float(rgb[..., 0].mean()) / 255.0
        return np.array([[0, 0.5], [0, 0.5 + gap], [0, 1.0], [0, 0.0]], np.float32)


def _images(openings):
    img = np.zeros((len(openings), 8, 8, 3), np.uint8)
    img[..., 0] = np.round(np.asarray(openings) * 255)[:, None, None]
    return img


def test_measure_render_gain_reads_a_field_that_shrinks_the_mouth():
    """A field that renders 0.1 + 0.7 x gain x the real opening's deviation (sublinear past gain 1.5):
    the measured gain makes the rendered opening spread as far as the real one."""
    rng = np.random.default_rng(0)
    opening = 0.3 + 0.1 * rng.standard_normal(40).clip(-2.5, 2.5)
    frames = np.arange(40)

    def render(idx, gain):
        k = 0.7 * min(gain, 1.5) + 0.2 * max(gain - 1.5, 0)  # the response
        return _images(0.3 + k * (opening[idx] - 0.3))

    rec = measure_render_gain(render, frames, _images(opening), _GapReader())
    response = json.loads(rec["mouth_render_response"])
    assert abs(response["1"] - 0.7) < 0.02 and abs(response["2"] - 1.15) < 0.03
    assert abs(rec["mouth_render_gain"] - 1 / 0.7) < 0.05  # where 0.7 x gain reaches 1
    assert rec["mouth_render_corr"] > 0.95


def test_measure_render_gain_says_why_when_the_reader_sees_no_face():
    class Blind(_GapReader):
        def __call__(self, rgb):
            return None

    frames = np.arange(10)
    rec = measure_render_gain(lambda idx, g: _images(np.full(len(idx), 0.3)), frames, _images(np.full(10, 0.3)), Blind())
    assert rec["mouth_render_gain"] == 1.0 and "0 of 10 frames" in rec["mouth_render_reason"]


def test_train_deform_records_the_render_gain_and_render_applies_it(trained, tmp_path):
    """deform.h5 holds the measured gain (or why it is not measured); a head loaded with a render
    gain of 1.6 drives the same voice's mouth states 1.6x as far (the per-utterance gain unchanged)."""
    from talkctl import h5files
    from talkctl.head.drive import audio_drive, feed
    from talkctl.head.models import load_head
    from talkctl.rundir import RunDir
    from talkctl.stages.render import DEFAULTS

    run, _ = trained
    with h5py.File(run.path / "deform.h5") as f:
        gain = float(f.attrs["mouth_render_gain"])
        assert RENDER_GAIN_RANGE[0] <= gain <= RENDER_GAIN_RANGE[1]
        assert "mouth_render_response" in f.attrs or f.attrs["mouth_render_reason"]
    head = load_head(run.path)
    assert head.render_gain == gain and float(head.condition.gain) == pytest.approx(head.trained_gain * gain)

    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns(".lock"))
    voice = trained_run.write_wav(tmp_path / "other.wav", trained_run.voice(4.0, seed=11), SR)
    states = {}
    for g in (1.0, 1.6):
        with h5py.File(copy / "deform.h5", "r+") as f:
            f.attrs["mouth_render_gain"] = g
            h5files.stamp(f, copy / "deform.h5")
        head = load_head(copy)
        drive = audio_drive(RunDir(copy, create=False), voice, {**DEFAULTS, "pose": "still"})
        rel = feed(head, drive, np.arange(drive.n_frames))
        with torch.no_grad():
            head.condition.speech = None  # ungated: the states themselves
            states[g] = (head.codes(rel).numpy(), drive.mouth_gain)
    assert states[1.0][1] == states[1.6][1]  # the utterance gain is the audio's, not the field's
    np.testing.assert_allclose(states[1.6][0], 1.6 * states[1.0][0], rtol=1e-4, atol=1e-5)
