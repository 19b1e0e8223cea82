"""The audio head's mouth state: speech activity, silence gives a closed, still mouth (through
`talkctl render`), a long pause closes it, and the PCA state itself."""
import json

import numpy as np
import pytest
import torch

import trained_run
from talkctl.audio.recipe import speech_activity
from talkctl.cli import main
from media_helpers import read_video_frames

SR = 16000


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _speech_pause_speech(pause_s: float = 2.0) -> np.ndarray:
    v = trained_run.voice(1.5, seed=3)
    return np.concatenate([v, np.zeros(int(pause_s * SR), np.float32), v])


def test_speech_activity_is_zero_in_pauses_and_one_in_speech():
    wav = _speech_pause_speech(2.0)
    act = speech_activity(wav, len(wav) // 640)
    pause = slice(int(1.5 * 25) + 4, int(3.5 * 25) - 4)  # more than the 0.1 s reach from the edges
    assert act[pause].max() == 0.0
    assert np.median(act[5:30]) == 1.0 and np.median(act[-30:-5]) == 1.0
    assert speech_activity(np.zeros(SR, np.float32), 25).max() == 0.0  # digital silence
    noise = (1e-4 * np.random.default_rng(0).normal(size=SR)).astype(np.float32)
    assert speech_activity(np.concatenate([trained_run.voice(1.0), noise]), 50)[-20:].max() == 0.0


def test_the_trained_head_has_a_mouth_state(trained):
    import h5py

    run, _ = trained
    with h5py.File(run.path / "deform.h5") as f:
        spec = json.loads(f.attrs["condition_spec"])
        assert 1 <= spec["mouth_dim"] <= 12 and f.attrs["mouth_explained"] > 0.5
        assert f["condition"]["closed"].shape == (spec["mouth_dim"],)
        assert 1.0 <= f.attrs["audio_gain"] <= 2.0 and f["condition"]["gain"][()] == f.attrs["audio_gain"]
    with h5py.File(run.path / "audio.h5") as f:
        assert f.attrs["norm"] == "utterance"


def test_silence_gives_a_closed_still_mouth(trained, tmp_path, capsys):
    """Silent audio through `talkctl render` with a still pose: every frame the same (nothing moves),
    and the head's mouth state is the closed mouth for every frame."""
    from talkctl.head.drive import audio_drive
    from talkctl.head.models import load_head
    from talkctl.stages.render import DEFAULTS

    run, _ = trained
    silence = trained_run.write_wav(tmp_path / "silence.wav", np.zeros(2 * SR, np.float32), SR)
    out = tmp_path / "silent.mp4"
    rc = main(["render", "--run", str(run.path), "--audio", str(silence), "--pose", "still", "-o", str(out),
               "--device", "cpu", "-q"])
    assert rc == 0, capsys.readouterr().err
    frames = np.stack(list(read_video_frames(out, fps=None))).astype(np.float64)
    diff = np.abs(frames - frames[0])
    # still: only video coding noise (a few levels, in a handful of pixels; a moving mouth changes hundreds by tens)
    assert len(frames) == 50 and diff.max() <= 8 and (diff > 3).mean() < 1e-3, (diff.max(), (diff > 3).mean())
    head = load_head(run.path)
    drive = audio_drive(run, silence, {**DEFAULTS, "pose": "still"})
    head.set_audio(drive.features[:], drive.speech)
    with torch.no_grad():
        state = head.condition.encode(torch.arange(drive.n_frames))
    assert torch.allclose(state, head.condition.closed.expand_as(state))


def test_a_long_pause_closes_the_mouth(trained):
    from talkctl.head.drive import driving_features
    from talkctl.head.models import load_head

    run, _ = trained
    wav = _speech_pause_speech(2.0)
    head = load_head(run.path)
    feats = driving_features(wav, run)
    head.set_audio(feats[:], speech_activity(wav, len(feats)))
    with torch.no_grad():
        state = head.condition.encode(torch.arange(len(feats)))
    closed = head.condition.closed
    pause = slice(int(1.5 * 25) + 4, int(3.5 * 25) - 4)
    assert torch.allclose(state[pause], closed.expand_as(state[pause]))
    assert (state[5:30] - closed).norm(dim=1).mean() > 0.05  # speech moves it


def test_mouth_basis_and_closed_state():
    from talkctl.head.mouth_state import closed_state, fit_mouth_basis

    rng = np.random.default_rng(0)
    opening = rng.uniform(0, 1, 400)
    shape = rng.normal(size=(2, 30))
    offsets = opening[:, None] * shape[0] + 0.3 * rng.normal(size=(400, 1)) * shape[1] + 0.01 * rng.normal(size=(400, 30))
    basis = fit_mouth_basis(offsets, 12)
    states = basis.project(offsets)
    assert states.shape == (400, 12) and basis.explained > 0.99
    assert abs(states[:, 0].std() - 1) < 0.01  # the first component is O(1)
    closed = closed_state(states, opening, np.arange(400))
    shut = states[opening < np.quantile(opening, 0.1)].mean(0)
    np.testing.assert_allclose(closed, shut, atol=1e-5)


def test_spread_gain_restores_a_shrunk_prediction():
    from talkctl.head.mouth_state import spread_gain

    rng = np.random.default_rng(1)
    true = rng.normal(size=(200, 4))
    assert abs(spread_gain(0.6 * true, true) - 1 / 0.6) < 1e-6
    assert spread_gain(0.1 * true, true) == 2.0 and spread_gain(3 * true, true) == 1.0  # clipped
    speech = np.r_[np.ones(100), np.zeros(100)]
    pauses_still = np.r_[0.5 * true[:100], np.zeros((100, 4))]
    assert abs(spread_gain(pauses_still, true, speech) - 2.0) < 1e-6  # only speaking frames count


def test_utterance_gain_gives_the_subjects_spread_over_speech():
    from talkctl.head.mouth_state import UTTERANCE_GAIN_RANGE, speech_spread, utterance_gain

    rng = np.random.default_rng(2)
    tracked = rng.normal(size=(300, 5))
    speech = np.r_[np.ones(200), np.zeros(100)]
    target = speech_spread(np.r_[tracked[:200], np.zeros((100, 5))], speech)  # pauses do not count
    assert abs(target - speech_spread(tracked[:200])) < 1e-9
    quiet = 0.5 * rng.normal(size=(300, 5))  # a voice whose predicted states barely move
    g = utterance_gain(quiet, speech, target)
    assert abs(speech_spread(g * quiet, speech) - target) < 1e-6 and 1.8 < g < 2.2
    assert utterance_gain(0.01 * quiet, speech, target) == UTTERANCE_GAIN_RANGE[1]  # clipped
    assert utterance_gain(quiet, np.zeros(300), target) is None  # no speech: nothing to measure


def test_a_new_voice_moves_the_mouth_as_far_as_the_subject(trained, tmp_path):
    """Per-utterance amplitude (audio_amplitude=utterance, the default): through head.drive.feed, the
    lip gap of a new voice's mouth states spreads over its speech as far as the subject's tracked one did."""
    import h5py

    from talkctl.head.drive import audio_drive, feed
    from talkctl.head.models import load_head
    from talkctl.head.mouth_state import UTTERANCE_GAIN_RANGE, speech_spread
    from talkctl.stages.render import DEFAULTS

    run, _ = trained
    with h5py.File(run.path / "deform.h5") as f:
        target, axis = float(f.attrs["mouth_spread"]), np.asarray(f.attrs["mouth_axis"])
        k = json.loads(f.attrs["condition_spec"])["mouth_dim"]
    assert target > 0 and axis.shape == (k,)
    voice = trained_run.write_wav(tmp_path / "other.wav", trained_run.voice(4.0, seed=11), SR)
    head = load_head(run.path)
    drive = audio_drive(run, voice, {**DEFAULTS, "pose": "still"})
    idx = np.arange(drive.n_frames)
    rel = feed(head, drive, idx)
    assert drive.mouth_gain_known and drive.mouth_gain is not None
    with torch.no_grad():
        state = head.codes(rel).numpy()
    lo, hi = UTTERANCE_GAIN_RANGE
    spread = speech_spread((state @ axis)[:, None], drive.speech)  # the lip gap's spread
    assert lo <= drive.mouth_gain <= hi
    if lo < drive.mouth_gain < hi:
        assert abs(spread - target) < 0.15 * target
    else:  # clipped: short of the target when widened as far as allowed, beyond it when narrowed
        assert (spread < target) == (drive.mouth_gain == hi)
    head.set_mouth_gain(None)  # back to the trained gain
    assert float(head.condition.gain) == head.trained_gain
