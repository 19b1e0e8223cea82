"""extract-audio: DSP correctness, 25 fps alignment, the CLI contract and bad input.

Media are generated here with ffmpeg's lavfi sources (1-2 s each); the one test on real
footage needs ../shared and skips without it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from talkctl.cli import main
from talkctl.media.ffmpeg import ffmpeg_exe
from talkctl.audio import recipe as audio_recipe
from talkctl.stages import extract_audio as xa
from talkctl.timebase import n_video_frames
from talkctl.audio.melformant import MelFormantExtractor, lpc_formants, periodicity, frame_signal
from conftest import shared_path
from repo import REPO

SR = 16000


# ---- media ----------------------------------------------------------------------
def _ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def synth_vowel(seconds=1.0, f0=120.0, formants=((700, 80), (1220, 90), (2600, 120)), sr=SR):
    """Glottal pulse train through three resonators: a vowel with known formants."""
    from scipy.signal import lfilter

    y = np.zeros(int(seconds * sr))
    y[::int(sr / f0)] = 1.0
    for f, b in formants:
        r = np.exp(-np.pi * b / sr)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r], y)
    y = lfilter([1], [1, -0.9], y)  # spectral tilt of a real glottal source
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000:duration=2", "-ac", "2", d / "tone48k.wav")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=2", "-f", "lavfi", "-i",
            "sine=frequency=330:sample_rate=44100:duration=2", "-c:v", "mpeg4", "-c:a", "aac", "-shortest", d / "clip30.mp4")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=1", "-c:v", "mpeg4", d / "mute.mp4")
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1.5", d / "silence.wav")
    from scipy.io import wavfile

    wavfile.write(d / "vowel.wav", SR, synth_vowel(1.2))
    (d / "text.mp4").write_text("this is not a video\n" * 20)
    (d / "empty.mp4").write_bytes(b"")
    return d


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    return lines[0]


def nothing_written(run: Path) -> None:
    if run.exists():
        assert not (run / "audio.h5").exists()
        assert not list(run.glob("*.partial"))


# ---- DSP ------------------------------------------------------------------------
def test_lpc_formants_recover_a_synthetic_vowel():
    frames = np.ascontiguousarray(frame_signal(synth_vowel(), 400)[10:-10])
    f, b = lpc_formants(frames, order=18)
    med = np.nanmedian(f, axis=0)
    assert abs(med[0] - 700) < 50 and abs(med[1] - 1220) < 60 and abs(med[2] - 2600) < 100, med
    assert np.all(np.nanmedian(b, axis=0) < 300)


def test_periodicity_separates_voice_from_noise():
    voiced = periodicity(np.ascontiguousarray(frame_signal(synth_vowel(), 640)[10:-10]))
    noise = periodicity(np.ascontiguousarray(frame_signal(np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32), 640)[10:-10]))
    assert np.median(voiced) > 0.9
    assert np.median(noise) < 0.45


def test_mel_formant_frames_rate_names_and_gain_invariance():
    ex = MelFormantExtractor()
    x = synth_vowel(1.0)
    a, b = ex.frames(x), ex.frames(0.05 * x)
    assert a.shape == (SR // 160 + 1, ex.dim) == (101, 88) and len(ex.names) == ex.dim
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, atol=2e-3)  # speech level normalised to -20 dBFS before analysis
    voicing = a[:, ex.names.index("voicing")]
    assert np.median(voicing) > 0.9
    f1 = a[20:-20, ex.names.index("F1")]
    assert abs(np.median(f1) - 0.7) < 0.05  # kHz


def test_silent_and_unvoiced_frames_get_defined_formants():
    ex = MelFormantExtractor()
    x = np.zeros(SR, dtype=np.float32)
    x[SR // 2:] = np.random.default_rng(1).normal(0, 0.05, SR // 2)  # unvoiced noise after silence
    fr = ex.frames(x)
    assert np.all(np.isfinite(fr))
    names = ex.names
    assert np.allclose(fr[:40, names.index("voicing")], 0.0)
    np.testing.assert_allclose(fr[:, [names.index(n) for n in ("F1", "F2", "F3")]].mean(0), [0.5, 1.5, 2.5], atol=0.05)


def test_window_indices_centre_and_edges():
    idx = audio_recipe.window_indices(n_frames=10, n_feature_frames=41, rate=100.0, offset=0.0, window=16)
    assert idx.shape == (10, 16)
    assert idx[5, 8] == 4 * 5 + 2  # feature frame nearest the centre of video frame 5 sits at W//2
    np.testing.assert_array_equal(idx[5], np.arange(22 - 8, 22 + 8))
    np.testing.assert_array_equal(idx[0], np.clip(np.arange(2 - 8, 2 + 8), 0, 40))  # edge frame repeated
    assert idx[9, -1] == 40
    hub = audio_recipe.window_indices(n_frames=3, n_feature_frames=200, rate=50.0, offset=0.0125, window=16)
    assert hub[2, 8] == round((2.5 / 25 - 0.0125) * 50)


def test_a_click_lands_in_the_middle_of_its_video_frames_window():
    """A 5 ms burst at the centre of video frame 20 peaks at window position W//2 of frame 20."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1e-3, 2 * SR).astype(np.float32)
    centre = int((20 + 0.5) / 25 * SR)
    x[centre - 40:centre + 40] += rng.normal(0, 0.5, 80).astype(np.float32)
    recipe = audio_recipe.FeatureRecipe.from_config({**xa.DEFAULTS, "extractor": "mel-formant"})
    raw = recipe.raw(x)
    recipe.fit(raw)
    _, win = recipe.windows(raw, n_video_frames(len(x)))
    energy = win[..., :recipe.extractor.n_mels].mean(axis=-1)  # Hann-weighted: peaks on the centred frame
    assert win.shape == (50, 16, 88)
    assert int(np.argmax(energy[20])) == 8
    assert int(np.argmax(energy[19])) == 12  # 40 ms later in frame 19's window = 4 feature frames


# ---- the stage through the CLI ----------------------------------------------------
def test_48k_stereo_wav_is_resampled_to_16k_mono(media, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", run, "--json", "--features", "mel-formant")
    assert rc == 0, err
    s = json.loads(out)
    assert s["status"] == "done" and s["n_frames"] == 50 and s["feature_shape"] == [50, 16, 88]
    assert s["silent"] is False
    with h5py.File(run / "audio.h5") as f:
        assert f.attrs["schema"] == "talkctl.audio"
        wav = f["waveform"][()]
        assert wav.dtype == np.float32 and wav.shape == (32000,)
        assert f.attrs["sample_rate"] == 16000 and f.attrs["fps"] == 25 and f.attrs["n_frames"] == 50
        assert f.attrs["source_sample_rate"] == 48000 and f.attrs["source_channels"] == "stereo"
        assert f.attrs["duration"] == pytest.approx(2.0)
        assert f.attrs["extractor"] == "mel-formant" and f.attrs["feature_rate"] == 100.0
        assert len(json.loads(f.attrs["feature_names"])) == f.attrs["feature_dim"] == 88
        assert f["features"].shape == (50, 16, 88) and f["rms_db"].shape == (50,)
        assert json.loads(f.attrs["backend"]) == {"audio-features": "mel-formant"}
        # the 220 Hz tone's energy is in the right mel band
        spec = np.abs(np.fft.rfft(wav[:16000]))
        assert abs(np.argmax(spec) - 220) <= 1


def test_30fps_video_gives_frames_at_25fps(media, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", media / "clip30.mp4", "--run", run, "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["source_fps"] == 30.0
    with h5py.File(run / "audio.h5") as f:
        n = f.attrs["n_frames"]
        assert n == len(f["waveform"]) // 640 and 49 <= n <= 51
        assert f["features"].shape[0] == n and f.attrs["source_video_fps"] == 30.0


def test_silence_succeeds_and_says_silent(media, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", media / "silence.wav", "--run", run, "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["silent"] is True and s["n_frames"] == 37
    assert "silent" in err  # the warning reaches stderr and the log
    assert "silent" in (run / "logs" / "extract-audio.log").read_text()
    with h5py.File(run / "audio.h5") as f:
        assert bool(f.attrs["silent"]) is True
        assert np.all(np.isfinite(f["features"][()]))


def test_rerun_is_up_to_date_force_reruns_and_changed_input_is_stale(media, tmp_path, capsys):
    src = tmp_path / "talk.wav"
    src.write_bytes((media / "tone48k.wav").read_bytes())
    run = tmp_path / "run"
    assert cli(capsys, "extract-audio", src, "--run", run, "--json")[0] == 0
    rc, out, _ = cli(capsys, "extract-audio", run, "--json")  # a run directory that knows its media
    assert rc == 0 and json.loads(out)["status"] == "up to date"
    rc, out, _ = cli(capsys, "extract-audio", run, "--force", "--json")
    assert rc == 0 and json.loads(out)["status"] == "done"
    rc, out, _ = cli(capsys, "status", run, "--json")
    row = next(r for r in json.loads(out)["stages"] if r["stage"] == "extract-audio")
    assert row["state"] == "done"
    time.sleep(0.01)
    src.write_bytes((media / "silence.wav").read_bytes())  # same name, new content
    rc, out, _ = cli(capsys, "status", run, "--json")
    row = next(r for r in json.loads(out)["stages"] if r["stage"] == "extract-audio")
    assert row["state"] == "stale" and "video" in row["why"]
    rc, out, _ = cli(capsys, "extract-audio", run, "--json")
    assert rc == 0 and json.loads(out)["status"] == "done" and json.loads(out)["silent"] is True


@pytest.mark.parametrize("name, needle", [
    ("missing.wav", "does not exist"),
    ("empty.mp4", "is empty"),
    ("text.mp4", "not a media file"),
    ("mute.mp4", "no audio stream"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(media, tmp_path, capsys, name, needle):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", media / name, "--run", run)
    assert rc == 2
    assert needle in one_line_error(err)
    assert out == ""
    nothing_written(run)


def test_unwritable_run_directory(media, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", blocker / "run")
    assert rc == 2
    assert "run directory" in one_line_error(err)


def test_unknown_extractor_is_a_usage_error(media, tmp_path, capsys):
    rc, _, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", tmp_path / "r", "--features", "nope")
    assert rc == 2 and "nope" in one_line_error(err)
    nothing_written(tmp_path / "r")


def test_second_writer_is_refused_while_locked(media, tmp_path, capsys):
    from talkctl.rundir import RunDir

    run = tmp_path / "run"
    rd = RunDir(run)
    with rd.lock("talkctl extract-audio"):
        rc, _, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", run)
    assert rc == 6 and "in use" in one_line_error(err)
    nothing_written(run)


def test_ctrl_c_midway_leaves_nothing_and_rerun_succeeds(media, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_store = xa._store

    def interrupted(f, wav, *rest):
        f.create_dataset("waveform", data=wav)  # half the file is written when the user presses Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(xa, "_store", interrupted)
    rc, _, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", run)
    assert rc == 130 and "interrupted" in err
    nothing_written(run)
    monkeypatch.setattr(xa, "_store", real_store)
    rc, out, err = cli(capsys, "extract-audio", run, "--json")
    assert rc == 0 and json.loads(out)["status"] == "done", err


# ---- reuse for render -------------------------------------------------------------
def test_features_for_new_audio_reuse_the_training_normalisation(media, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, "extract-audio", media / "vowel.wav", "--run", run, "--features", "mel-formant")[0] == 0
    with h5py.File(run / "audio.h5") as f:
        stored, wav = f["features"][()], f["waveform"][()]
    again = audio_recipe.features_for_audio(media / "vowel.wav", run)
    np.testing.assert_array_equal(again, stored)  # deterministic and identical recipe
    louder = audio_recipe.features_for_audio(np.clip(wav * 3.0, -1, 1), run / "audio.h5")
    np.testing.assert_allclose(louder, stored, atol=0.05)  # gain does not matter
    other = audio_recipe.features_for_audio(media / "tone48k.wav", run)
    assert other.shape == (50, 16, 88)
    clip_run = tmp_path / "clip"
    assert cli(capsys, "extract-audio", media / "vowel.wav", "--run", clip_run, "--features", "mel-formant",
               "--set", "norm=clip")[0] == 0
    with h5py.File(clip_run / "audio.h5") as f:
        assert f.attrs["norm"] == "clip"
    np.testing.assert_array_equal(audio_recipe.features_for_audio(media / "vowel.wav", clip_run), stored)
    off = audio_recipe.features_for_audio(media / "tone48k.wav", clip_run)
    assert np.abs(off.mean()) > 0.1  # norm=clip: a different sound is off the training clip's statistics
    # norm=utterance (the default): it gets its own statistics, centred where the training clip was
    assert np.abs(np.median(other, axis=(0, 1))).mean() < 0.3 * np.abs(np.median(off, axis=(0, 1))).mean()
    with pytest.raises(Exception, match="no audio stream"):
        audio_recipe.features_for_audio(media / "mute.mp4", run)


# ---- neural extractors on tiny random models ----------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    pytest.importorskip("transformers")
    import torch
    from transformers import (HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2Model)

    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    out = {}
    for kind, cfg_cls, model_cls in (("hubert", HubertConfig, HubertModel), ("wav2vec2", Wav2Vec2Config, Wav2Vec2Model)):
        d = tmp_path_factory.mktemp(f"tiny_{kind}")
        model_cls(cfg_cls(**small)).save_pretrained(d)
        Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(d)
        out[kind] = d
    return out


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2"])
def test_neural_extractor_from_a_local_model_directory(media, tmp_path, capsys, tiny_models, kind):
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", run, "--features", kind,
                       "--model", tiny_models[kind], "--set", "chunk_seconds=1.0", "--json")
    assert rc == 0, err
    assert json.loads(out)["feature_shape"] == [50, 16, 32]
    with h5py.File(run / "audio.h5") as f:
        assert f.attrs["extractor"] == kind and f.attrs["feature_rate"] == 50.0
        assert f.attrs["feature_offset"] == pytest.approx(0.0125)
        assert f.attrs["n_feature_frames"] == (32000 - 400) // 320 + 1
        assert f.attrs["model"] == str(tiny_models[kind])
        stored = f["features"][()]
    assert np.all(np.isfinite(stored)) and stored.std() > 0.1
    np.testing.assert_allclose(audio_recipe.features_for_audio(media / "tone48k.wav", run), stored, atol=1e-5)


@pytest.mark.parametrize("model, needle", [
    ("talkctl-test/no-such-model", "huggingface-cli download talkctl-test/no-such-model"),
    ("/nonexistent/hubert-dir", "does not exist"),
])
def test_missing_neural_model_fails_fast_naming_it(media, tmp_path, capsys, model, needle):
    t0 = time.perf_counter()
    rc, _, err = cli(capsys, "extract-audio", media / "tone48k.wav", "--run", tmp_path / "r", "--features", "hubert",
                     "--model", model)
    assert time.perf_counter() - t0 < 10  # no download retries
    line = one_line_error(err)
    assert rc == 3 and needle in line and "--model" in line
    nothing_written(tmp_path / "r")


# ---- the real entry point, once -----------------------------------------------------
def test_subprocess_json_on_stdout_only(media, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "talkctl", "extract-audio", str(media / "vowel.wav"), "--run",
                           str(tmp_path / "run"), "--json"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    s = json.loads(proc.stdout)
    assert s["n_frames"] == 30 and s["voiced_fraction"] > 0.8


# ---- real footage --------------------------------------------------------------------
@pytest.mark.shared
def test_real_clip_german_20s(tmp_path, capsys):
    clip = shared_path("data", "video", "german_20s.mp4")
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", clip, "--run", run, "--json", "--features", "mel-formant")
    assert rc == 0, err
    s = json.loads(out)
    assert s["n_frames"] == 500 and s["duration_s"] == pytest.approx(20.0, abs=0.05)
    assert 0.3 < s["voiced_fraction"] < 0.95 and not s["silent"]
    with h5py.File(run / "audio.h5") as f:
        feats = f["features"][()]
        names = json.loads(f.attrs["feature_names"])
        raw_f1 = f["feature_frames"][:, names.index("F1")] * f["norm_std"][names.index("F1")] + f["norm_mean"][names.index("F1")]
        voiced = f["feature_frames"][:, names.index("voicing")] * f["norm_std"][names.index("voicing")] + f["norm_mean"][names.index("voicing")] >= 0.45
    assert feats.shape == (500, 16, 88) and np.all(np.isfinite(feats))
    assert 0.3 < np.median(raw_f1[voiced]) < 0.9  # kHz: a plausible first formant for speech
    rc, out, _ = cli(capsys, "extract-audio", run, "--json", "--features", "mel-formant")
    assert json.loads(out)["status"] == "up to date"
