"""The `phonetic` audio features (pocketsphinx phone posteriors): contract, silence, determinism,
non-English speech, the registry/doctor entries and the senone-log reader.

Speech here is synthetic (pulse trains through vowel resonators, filtered noise, pauses; a few
seconds); the one test on real foreign-language speech needs ../shared and skips without it.
"""
from __future__ import annotations

import json
import struct

import h5py
import numpy as np
import pytest
from scipy.signal import lfilter

from talkctl.audio import phonetic
from talkctl.audio.phonetic import PhoneticExtractor, read_senone_log
from talkctl.audio.recipe import FEATURE_DEFAULTS, FeatureRecipe, features_for_audio
from talkctl.cli import main
from conftest import shared_path

SR = 16000
A, I, U = ((730, 80), (1090, 90), (2440, 120)), ((270, 60), (2290, 100), (3010, 120)), ((300, 60), (870, 80), (2240, 120))


def vowel(seconds, f0, formants):
    y = np.zeros(int(seconds * SR))
    y[::int(SR / f0)] = 1.0
    for f, b in formants:
        r = np.exp(-np.pi * b / SR)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], y)
    y = lfilter([1], [1, -0.9], y)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def fricative(seconds, seed=0):
    noise = np.random.default_rng(seed).normal(size=int(seconds * SR))
    return (0.05 * lfilter([1, -0.95], [1], noise)).astype(np.float32)


def utterance(f0=120.0):
    """1.25 s of 'speech': vowels and a fricative."""
    return np.concatenate([vowel(0.4, f0, A), fricative(0.15), vowel(0.4, f0 * 1.1, I), vowel(0.3, f0 * 0.9, U)])


@pytest.fixture(scope="module")
def ex():
    return PhoneticExtractor.from_config(FEATURE_DEFAULTS)


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- the contract -------------------------------------------------------------------
def test_shape_rate_and_names(ex):
    x = utterance()
    f = ex.frames(x)
    assert ex.rate == 100.0 and ex.offset == 0.0
    assert f.shape == (len(x) // 160 + 1, ex.dim) and f.dtype == np.float32 and np.all(np.isfinite(f))
    assert len(ex.names) == ex.dim == len(ex.phones) + 2 and ex.names[-2:] == ["voicing", "log_energy"]
    assert ex.min_std.shape == (ex.dim,)
    post = f[:, :len(ex.phones)]
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-4)  # a distribution per frame
    assert post.min() >= 0.0 and 0.0 <= f[:, -2].min() and f[:, -2].max() <= 1.0


def test_the_bundled_model_has_the_english_phone_set(ex):
    assert len(ex.phones) == 42 and {"SIL", "AA", "IY", "UW", "M", "P", "B", "F", "S"} <= set(ex.phones)
    assert ex.scorer.n_ci_sen == 3 * len(ex.phones)


def test_an_i_between_other_sounds_is_heard_as_a_front_vowel(ex):
    # (a vowel held alone is not enough: the recogniser's per-utterance cepstral mean removes it)
    f = ex.frames(utterance())
    post = f[60:90, :len(ex.phones)].mean(axis=0)  # the middle of the /i/ (0.55-0.95 s)
    top = [ex.phones[i] for i in np.argsort(post)[::-1][:3]]
    assert "IY" in top or "IH" in top, top
    assert post[ex.phones.index("SIL")] < 0.2 and f[60:90, -2].mean() > 0.6  # voiced


def test_silence_is_the_silence_class_with_floor_energy(ex):
    f = ex.frames(np.zeros(2 * SR, np.float32))
    sil = ex.phones.index("SIL")
    assert np.all(f[:, sil] == 1.0) and np.all(np.delete(f[:, :len(ex.phones)], sil, axis=1) == 0.0)
    assert np.all(f[:, -2] == 0.0)  # no voicing
    assert np.allclose(f[:, -1], np.log(phonetic.ENERGY_FLOOR))  # log energy at its floor (~ -16)


def test_a_pause_inside_speech_is_silence_and_speech_is_not(ex):
    x = np.concatenate([utterance(), np.zeros(SR, np.float32), utterance(200.0)])
    f = ex.frames(x)
    sil = f[:, ex.phones.index("SIL")]
    start = int(1.25 * 100)
    assert np.all(sil[start + 5:start + 95] == 1.0)
    assert sil[:start].mean() < 0.3 and sil[start + 100:].mean() < 0.3
    assert f[start + 5:start + 95, -1].max() < f[:start, -1].min() + 1e-3  # energy at its floor in the pause


def test_deterministic_and_gain_free(ex):
    x = utterance()
    a, b = ex.frames(x), ex.frames(x)
    np.testing.assert_array_equal(a, b)  # no state carried from one call to the next
    quiet = ex.frames(x * 0.2)
    n = len(ex.phones)
    assert np.abs(quiet[:, :n] - a[:, :n]).max() < 0.05 and np.abs(quiet[:, n:] - a[:, n:]).max() < 0.05


def test_chunked_decoding_is_the_same_in_one_process_or_two(monkeypatch):
    monkeypatch.setattr(phonetic, "CHUNK_FRAMES", 150)  # 4 s of audio -> 3 chunks
    monkeypatch.setattr(phonetic, "MARGIN_FRAMES", 30)
    x = np.concatenate([utterance(), fricative(0.3, 1), utterance(180.0), vowel(1.0, 140, A)])
    assert len(phonetic.chunk_spans(len(x) // 160 + 1)) == 3
    one = PhoneticExtractor.from_config({**FEATURE_DEFAULTS, "phone_workers": 1}).frames(x)
    two = PhoneticExtractor.from_config({**FEATURE_DEFAULTS, "phone_workers": 2}).frames(x)
    np.testing.assert_array_equal(one, two)


def test_chunk_spans_cover_every_frame_once():
    for n in (1, 3999, 4000, 4001, 12345):
        spans = phonetic.chunk_spans(n)
        kept = np.concatenate([np.arange(a, b) for _, _, a, b in spans])
        np.testing.assert_array_equal(kept, np.arange(n))
        assert all(0 <= s <= a < b <= e <= n for s, e, a, b in spans)
        assert max(b - a for _, _, a, b in spans) <= phonetic.CHUNK_FRAMES


def test_very_short_audio(ex):
    f = ex.frames(utterance()[:200])
    assert f.shape == (2, ex.dim) and np.all(np.isfinite(f))


@pytest.mark.shared
@pytest.mark.parametrize("clip", ["german_20s", "french_50s"])
def test_foreign_speech_decodes_to_a_spread_of_phones(ex, clip):
    from talkctl.media.audio import load_waveform

    x = load_waveform(shared_path("data", "video", f"{clip}.mp4"))[:8 * SR]
    f = ex.frames(x)
    post = f[:, :len(ex.phones)]
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-4)
    best = post.argmax(axis=1)
    assert np.mean(best == ex.phones.index("SIL")) < 0.5  # mostly speech
    assert len(np.unique(best)) >= 15  # many different phones, not one class for everything


# ---- settings, registry, doctor, the stage ----------------------------------------
def test_out_of_range_settings_are_one_line_usage_errors(tmp_path, capsys):
    from scipy.io import wavfile

    wavfile.write(tmp_path / "v.wav", SR, utterance())
    for setting in ("phone_temperature=0", "phone_smooth_ms=-1", "phone_workers=-2"):
        rc, _, err = cli(capsys, "extract-audio", tmp_path / "v.wav", "--run", tmp_path / "r", "--set", setting)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2 and len(lines) == 1 and setting.split("=")[0] in lines[0], err
    assert not (tmp_path / "r" / "audio.h5").exists()


def test_registry_lists_phonetic_as_the_default_and_doctor_probes_it():
    from talkctl import backends, doctor

    assert "phonetic" in [b.name for b in backends.available("audio-features")]
    assert backends.select("audio-features", "auto", "cpu").name == "phonetic"
    row = next(r for r in doctor.checks() if r["kind"] == "audio-features" and r["name"] == "phonetic")
    assert row["usable"] and "pocketsphinx" in row["detail"]


def test_probe_names_a_missing_model(monkeypatch, tmp_path):
    import importlib.util
    from types import SimpleNamespace

    from talkctl.audio import registry

    (tmp_path / "pocketsphinx").mkdir()
    fake = SimpleNamespace(origin=str(tmp_path / "pocketsphinx" / "__init__.py"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake if name == "pocketsphinx" else real(name, *a))
    why = registry._pocketsphinx_usable("cpu")
    assert why and "mdef" in why and "reinstall pocketsphinx" in why


def test_extract_audio_default_and_render_features_match(tmp_path, capsys):
    from scipy.io import wavfile

    wavfile.write(tmp_path / "v.wav", SR, np.concatenate([utterance(), np.zeros(SR // 2, np.float32), utterance(190.0)]))
    run = tmp_path / "run"
    rc, out, err = cli(capsys, "extract-audio", tmp_path / "v.wav", "--run", run, "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert s["extractor"] == "phonetic" and s["feature_shape"][1:] == [16, 44] and 0.3 < s["voiced_fraction"] < 1.0
    with h5py.File(run / "audio.h5") as f:
        assert f.attrs["extractor"] == "phonetic" and f.attrs["feature_rate"] == 100.0
        assert json.loads(f.attrs["feature_names"])[0].startswith("ph_")
        stored = f["features"][()]
    np.testing.assert_array_equal(features_for_audio(tmp_path / "v.wav", run), stored)
    # the number of decoding processes is not part of the fingerprint
    rc, out, _ = cli(capsys, "extract-audio", run, "--json", "--set", "phone_workers=1")
    assert json.loads(out)["status"] == "up to date"


def test_recipe_windows_for_phonetic_have_the_shared_timing():
    recipe = FeatureRecipe.from_config({**FEATURE_DEFAULTS, "extractor": "phonetic"})
    x = utterance()
    raw = recipe.raw(x)
    recipe.fit(raw)
    _, win = recipe.windows(raw, len(x) // 640)
    assert win.shape == (len(x) // 640, 16, 44) and np.all(np.isfinite(win))


# ---- the senone-log reader -------------------------------------------------------------
def test_senone_log_reader_reads_dense_and_sparse_frames(tmp_path):
    header = b"s3\nversion 0.1\nmdef_file x\nn_sen 10\nlogbase 1.000100\nendhdr\n" + struct.pack("<I", 0x11223344)
    dense = struct.pack("<h", 10) + np.arange(10, 20, dtype="<i2").tobytes()
    sparse = struct.pack("<h", 3) + bytes([1, 2, 5]) + np.array([5, 6, 7], "<i2").tobytes()  # senones 1, 3, 8
    path = tmp_path / "u.sen"
    path.write_bytes(header + dense + sparse + dense)
    s = read_senone_log(path, n_ci_sen=6)
    assert s.shape == (3, 6)
    np.testing.assert_array_equal(s[0], np.arange(10, 16))
    np.testing.assert_array_equal(s[1], [np.inf, 5, np.inf, 6, np.inf, np.inf])
    np.testing.assert_array_equal(s[2], s[0])
