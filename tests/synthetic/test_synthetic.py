"""The synthetic talking subject: file format, ground truth, audio-visual coupling, and
that mediapipe sees a face where the truth says it is."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from talkctl import synthetic
from talkctl.errors import StageError, UsageError
from talkctl.media.ffmpeg import ffmpeg_exe

# NaNs or overflows in the rig would show as RuntimeWarnings long before they show on screen
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")


def _ffmpeg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                          capture_output=True, check=False)


def _decode_video(path, size):
    out = _ffmpeg("-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    assert out.returncode == 0, out.stderr.decode()
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, size, size, 3)


def _decode_audio(path, sample_rate):
    out = _ffmpeg("-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
                  "-ar", str(sample_rate), "-")
    assert out.returncode == 0, out.stderr.decode()
    return np.frombuffer(out.stdout, "<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def frames(synthetic_subject):
    return _decode_video(synthetic_subject.video_path, synthetic_subject.size)


def test_video_has_size_fps_frames_and_audio(synthetic_subject, frames):
    s = synthetic_subject
    info = _ffmpeg("-i", str(s.video_path)).stderr.decode()   # ffmpeg prints streams on stderr
    video = re.search(r"Stream #0:\d.*Video: h264.*", info).group(0)
    assert "yuv420p" in video and "256x256" in video and re.search(r"\b25 fps", video)
    audio = re.search(r"Stream #0:\d.*Audio: aac.*", info).group(0)
    assert "16000 Hz" in audio and "mono" in audio
    assert frames.shape == (100, 256, 256, 3)
    samples = _decode_audio(s.video_path, 16000)
    assert abs(len(samples) - 4 * 16000) <= 1024          # AAC frame granularity at most
    assert not list(s.video_path.parent.glob("*.partial*"))


def test_truth_shapes_and_ranges(synthetic_subject):
    s = synthetic_subject
    z = np.load(s.truth_path)
    T = 100
    assert z["R"].shape == (T, 3, 3) and z["t"].shape == (T, 3) and z["K"].shape == (3, 3)
    assert z["torso_R"].shape == (T, 3, 3) and z["torso_t"].shape == (T, 3)
    for name in ("opening", "blink", "audio_rms", "times"):
        assert z[name].shape == (T,), name
    assert z["landmarks_2d"].shape == (T, 478, 2)
    np.testing.assert_allclose(z["R"] @ z["R"].transpose(0, 2, 1), np.broadcast_to(np.eye(3), (T, 3, 3)),
                               atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(z["R"]), 1.0, atol=1e-9)
    assert 0.0 <= z["opening"].min() and z["opening"].max() <= 1.0 and z["opening"].max() > 0.7
    assert 0.0 <= z["blink"].min() and z["blink"].max() <= 1.0 and z["blink"].max() > 0.8
    yaw, pitch, roll = np.abs(z["euler_deg"]).max(0)
    assert 7.0 < yaw <= 10.0 and 6.0 < pitch <= 10.0 and 3.0 < roll <= 5.0
    assert np.all(z["t"][:, 2] > 0.5)                      # in front of the camera
    np.testing.assert_array_equal(s.R, z["R"])
    loaded = synthetic.SyntheticSubject.load(s.truth_path)
    assert loaded.video_path == s.video_path and loaded.n_frames == T


def test_audio_energy_follows_mouth_opening_at_lag_0(synthetic_subject):
    s = synthetic_subject
    assert np.corrcoef(s.opening, s.audio_rms)[0, 1] > 0.7
    # the same holds for the audio as muxed (AAC-coded) into the video, best at lag 0
    rms = synthetic.per_frame_rms(_decode_audio(s.video_path, 16000), s.n_frames, 25, 16000)
    lags = range(-3, 4)
    corr = [np.corrcoef(np.roll(s.opening, k)[3:-3], rms[3:-3])[0, 1] for k in lags]
    assert corr[3] > 0.7 and int(np.argmax(corr)) == 3, corr


def test_mediapipe_finds_face_where_truth_puts_it(synthetic_subject, frames):
    import mediapipe as mp

    s = synthetic_subject
    stable = [1, 4, 6, 33, 133, 168, 263, 362]             # nose and eye corners: not deformed
    face_px = 0.36 * s.size
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
        for i in range(0, s.n_frames, 5):
            res = fm.process(frames[i])
            assert res.multi_face_landmarks, f"no face in frame {i}"
            lm = np.array([[p.x, p.y] for p in res.multi_face_landmarks[0].landmark]) * s.size
            err = np.linalg.norm(lm[stable] - s.landmarks_2d[i][stable], axis=1)
            assert np.median(err) < 0.03 * face_px, (i, err)


def _box_mean(frame, centre, half):
    x, y = np.round(centre).astype(int)
    return frame[y - half:y + half + 1, x - half:x + half + 1].astype(np.float32).mean() / 255.0


def test_mouth_opens_dark_and_eyes_close(synthetic_subject, frames):
    s = synthetic_subject
    closed = np.nonzero(s.opening < 0.02)[0]
    wide = int(np.argmax(s.opening))
    rest = int(closed[0])
    # landmark 14 (lower inner lip at rest) lies inside the open mouth's dark gap
    dark = _box_mean(frames[wide], s.landmarks_2d[wide][14], 2)
    lit = _box_mean(frames[rest], s.landmarks_2d[rest][14], 2)
    assert dark < lit - 0.15, (dark, lit)
    # at a blink the skin of the lid covers the dark iris (refined landmarks 468/473)
    shut = int(np.argmax(s.blink))
    open_eye = int(np.nonzero(s.blink == 0)[0][0])
    for iris in (468, 473):
        lid = _box_mean(frames[shut], s.landmarks_2d[shut][iris], 1)
        eye = _box_mean(frames[open_eye], s.landmarks_2d[open_eye][iris], 1)
        assert lid > eye + 0.1, (iris, lid, eye)


def test_same_seed_same_truth_other_seed_differs(tmp_path):
    a = synthetic.make_subject(tmp_path / "a", seconds=1.0, size=64, seed=3)
    b = synthetic.make_subject(tmp_path / "b", seconds=1.0, size=64, seed=3)
    c = synthetic.make_subject(tmp_path / "c", seconds=1.0, size=64, seed=4)
    za, zb, zc = (np.load(x.truth_path) for x in (a, b, c))
    for key in za.files:
        np.testing.assert_array_equal(za[key], zb[key], err_msg=key)
    assert not np.allclose(za["R"], zc["R"]) and not np.allclose(za["opening"], zc["opening"])
    assert a.video_path.read_bytes() == b.video_path.read_bytes()


def test_make_audio_unseen_voice():
    seen = synthetic.make_audio(3.0, 16000, seed=0, voice=synthetic.SUBJECT_VOICE)
    new = synthetic.make_audio(3.0, 16000, seed=0)
    assert new.samples.shape == (48000,) and new.samples.dtype == np.float32
    assert np.abs(new.samples).max() <= 1.0
    assert np.corrcoef(new.opening, new.rms)[0, 1] > 0.7
    assert not np.allclose(seen.opening, new.opening)       # a different utterance too

    def centroid(x):
        spec = np.abs(np.fft.rfft(x))
        return (spec * np.fft.rfftfreq(len(x), 1 / 16000)).sum() / spec.sum()
    assert centroid(new.samples) > 1.1 * centroid(seen.samples)
    # an explicit opening drives the loudness
    drive = np.clip(np.sin(np.linspace(0, 6 * np.pi, 75)), 0, 1)
    driven = synthetic.make_audio(3.0, 16000, seed=1, opening=drive)
    np.testing.assert_allclose(driven.opening, drive, atol=0.08)  # window-averaged
    assert np.corrcoef(drive, driven.rms)[0, 1] > 0.8


def test_ffmpeg_failure_is_a_stage_error_and_leaves_nothing(tmp_path, monkeypatch):
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'Unknown encoder libx264' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(synthetic.clip, "ffmpeg_exe", lambda: str(fake))
    out = tmp_path / "out"
    with pytest.raises(StageError, match="Unknown encoder"):
        synthetic.make_subject(out, seconds=0.5, size=64)
    assert not list(out.iterdir())


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        synthetic.make_subject(tmp_path, seconds=1.0, size=65)
    with pytest.raises(UsageError):
        synthetic.make_audio(0.0)


def test_module_import_does_not_load_mediapipe():
    code = "import sys, talkctl.synthetic; sys.exit('mediapipe' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
