"""The phonetic-mel extractor: phonetic's columns then mel-formant's (without its voicing and energy,
which phonetic has), frame for frame; through extract-audio and render-time features alike."""
import json

import h5py
import numpy as np

from talkctl.audio.combined import PhoneticMelExtractor
from talkctl.audio.melformant import MelFormantExtractor
from talkctl.audio.phonetic import PhoneticExtractor
from talkctl.audio.recipe import FEATURE_DEFAULTS, features_for_audio
from talkctl.cli import main
from talkctl.media.ffmpeg import write_wav
from test_audio_phonetic import utterance


def test_columns_are_phonetic_then_mel_without_duplicates():
    x = utterance()
    both = PhoneticMelExtractor.from_config(FEATURE_DEFAULTS)
    ph, mel = PhoneticExtractor.from_config(FEATURE_DEFAULTS), MelFormantExtractor.from_config(FEATURE_DEFAULTS)
    f = both.frames(x)
    keep = [i for i, n in enumerate(mel.names) if n not in ("voicing", "log_energy")]
    assert both.names == ph.names + [mel.names[i] for i in keep] and len(set(both.names)) == both.dim
    assert f.shape == (len(ph.frames(x)), ph.dim + mel.dim - 2) and both.min_std.shape == (both.dim,)
    np.testing.assert_array_equal(f[:, :ph.dim], ph.frames(x))
    np.testing.assert_array_equal(f[:, ph.dim:], mel.frames(x)[:, keep])


def test_extract_audio_and_new_audio(tmp_path, capsys):
    write_wav(tmp_path / "v.wav", np.concatenate([utterance(), utterance(150.0)]), 16000)
    run = tmp_path / "run"
    assert main(["extract-audio", str(tmp_path / "v.wav"), "--run", str(run), "--set", "extractor=phonetic-mel", "-q"]) == 0
    with h5py.File(run / "audio.h5") as f:
        assert f.attrs["extractor"] == "phonetic-mel" and f["features"].shape[2] == len(json.loads(f.attrs["feature_names"]))
        stored = f["features"][()]
    np.testing.assert_allclose(features_for_audio(tmp_path / "v.wav", run), stored, atol=1e-5)
