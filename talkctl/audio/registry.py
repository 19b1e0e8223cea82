"""Audio feature extractors (`audio-features` backends) and their common interface.

An extractor turns a 16 kHz mono float32 waveform into a sequence of raw feature
frames at a fixed rate. The extract-audio stage then normalises them and cuts one
window of frames per 25 fps video frame (see `extract_audio.window_indices`).

    ex = make_extractor("mel-formant", cfg, device)
    ex.rate, ex.offset      # feature frames per second; centre time (s) of frame 0
    ex.names                # one name per feature dimension (len == ex.dim)
    ex.min_std              # (D,) floor for the normalisation std, or None (robust default)
    ex.frames(wav)          # -> (F, D) float32 raw features, frame j centred at offset + j / rate

Registered backends (module import stays cheap: numpy/transformers load in `load`):
  phonetic     phone posteriors from pocketsphinx's bundled US-English model + voicing + energy
               (default: transfers across speakers and languages best, bench/audio_calibration.py)
  phonetic-mel both of the above and below, side by side (the phones' transfer, the mel's detail)
  mel-formant  log-mel filterbank + LPC formants + voicing + log-energy (numpy only, no model)
  hubert       HuBERT hidden states at 50 Hz via transformers (needs the model's weights)
  wav2vec2     wav2vec 2.0 hidden states at 50 Hz via transformers (needs the model's weights)
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from talkctl.backends import Backend, register, select

KIND = "audio-features"


def _always_usable(device: str) -> str | None:
    return None if importlib.util.find_spec("numpy") else "numpy is not installed"


def _transformers_usable(device: str) -> str | None:
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed; `pip install 'talkctl[hubert]'`"
    return None


def _load_mel_formant():
    from talkctl.audio.melformant import MelFormantExtractor

    return MelFormantExtractor.from_config


def _default_weights(kind: str):
    def check() -> str | None:
        from talkctl.audio.neural import default_model_missing

        return default_model_missing(kind)

    return check


def _pocketsphinx_usable(device: str) -> str | None:
    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None:
        return "pocketsphinx is not installed; `pip install pocketsphinx`"
    model = Path(spec.origin).parent / "model" / "en-us"
    missing = [n for n in ("en-us/mdef", "en-us-phone.lm.bin") if not (model / n).is_file()]
    if missing:
        return f"pocketsphinx's bundled en-us model lacks {', '.join(missing)} under {model}; reinstall pocketsphinx"
    return None


def _load_phonetic():
    from talkctl.audio.phonetic import PhoneticExtractor

    return PhoneticExtractor.from_config


def _load_phonetic_mel():
    from talkctl.audio.combined import PhoneticMelExtractor

    return PhoneticMelExtractor.from_config


def _load_neural(kind: str):
    def load():
        from talkctl.audio.neural import NeuralExtractor

        return lambda cfg, device: NeuralExtractor.from_config(kind, cfg, device)

    return load


register(Backend(KIND, "phonetic", _pocketsphinx_usable, _load_phonetic,
                 "phone posteriors (pocketsphinx's own US-English model) + voicing, energy at 100 Hz",
                 devices=("cpu", "cuda"), priority=20))
register(Backend(KIND, "phonetic-mel", _pocketsphinx_usable, _load_phonetic_mel,
                 "phonetic's phone posteriors, voicing, energy + mel-formant's log-mel and formants at 100 Hz",
                 devices=("cpu", "cuda"), priority=15))
register(Backend(KIND, "mel-formant", _always_usable, _load_mel_formant,
                 "log-mel + LPC formants F1-F3, voicing, energy at 100 Hz (numpy, no weights)",
                 devices=("cpu", "cuda"), priority=10))
register(Backend(KIND, "hubert", _transformers_usable, _load_neural("hubert"),
                 "HuBERT hidden states at 50 Hz (transformers; weights from --model or the HF cache)",
                 devices=("cpu", "cuda"), priority=1, weights=_default_weights("hubert")))
register(Backend(KIND, "wav2vec2", _transformers_usable, _load_neural("wav2vec2"),
                 "wav2vec 2.0 hidden states at 50 Hz (transformers; weights from --model or the HF cache)",
                 devices=("cpu", "cuda"), priority=0, weights=_default_weights("wav2vec2")))


def make_extractor(name: str, cfg: dict, device: str = "cpu"):
    """Select the backend (explicit unusable choice -> MissingToolError) and build the extractor."""
    backend = select(KIND, name, device)
    return backend.name, backend.get()(cfg, device)
