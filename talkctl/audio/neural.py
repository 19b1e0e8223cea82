"""`hubert` and `wav2vec2` audio features: hidden states of a pretrained speech model.

Weights come from `--model DIR` (a `save_pretrained` / `huggingface-cli download`
directory with config.json, the weights and preprocessor_config.json) or, for a hub id,
from the local Hugging Face cache. Never from the network: the hub is switched to
offline mode and every load passes `local_files_only=True`, so a missing model fails
in seconds with a MissingToolError that says how to get it.

Frame timing comes from the model's convolutional front end (for the standard
kernels/strides: 50 frames/s, frame j covers samples [320 j, 320 j + 400), centred on
t = j/50 + 0.0125 s). Long audio runs in chunks with 1 s of context on each side so
memory stays bounded; the waveform is normalised once, as the model's feature
extractor prescribes, before chunking.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl.errors import MissingToolError, UsageError
from talkctl.timebase import SAMPLE_RATE

SR = SAMPLE_RATE
DEFAULT_MODELS = {"hubert": "facebook/hubert-large-ls960-ft", "wav2vec2": "facebook/wav2vec2-base-960h"}
CONTEXT_SECONDS = 1.0


def _looks_like_path(model: str) -> bool:
    """A directory the user means (exists, or spelled like a path) rather than a hub id "org/name"."""
    return Path(model).expanduser().exists() or model.startswith((".", "/", "~")) or model.count("/") > 1


def _how_to_get(kind: str, model: str) -> str:
    hub = model if not _looks_like_path(model) else DEFAULT_MODELS[kind]
    return (f"download it where there is network (`huggingface-cli download {hub} --local-dir DIR`) and pass "
            f"`--model DIR`, or put it in the Hugging Face cache")


def _check_source(kind: str, model: str) -> str:
    """Where the model will load from (absolute directory or hub id), checked without importing
    transformers so a missing model fails in about a second."""
    if _looks_like_path(model):
        path = Path(model).expanduser().absolute()
        if not path.is_dir():
            raise MissingToolError(f"{kind} model directory {path} does not exist; {_how_to_get(kind, model)}")
        for name, what in (("config.json", "the model config"), ("preprocessor_config.json", "the feature extractor's settings")):
            if not (path / name).is_file():
                raise MissingToolError(f"{kind} model directory {path} has no {name} ({what}); {_how_to_get(kind, model)}")
        return str(path)
    from huggingface_hub import constants, try_to_load_from_cache

    for name in ("config.json", "preprocessor_config.json"):
        try:
            cached = try_to_load_from_cache(model, name)
        except ValueError:  # not a valid "org/name" repo id
            raise UsageError(f"--model {model!r} is neither a directory nor a hub id like "
                             f"{DEFAULT_MODELS[kind]}; give the model's directory") from None
        if not isinstance(cached, str):
            raise MissingToolError(f"{kind} model {model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
                                   f"and talkctl never downloads; {_how_to_get(kind, model)}")
    return model


def default_model_missing(kind: str) -> str | None:
    """Why the model a run without --model loads is not in the Hugging Face cache (None: it is)."""
    try:
        _check_source(kind, DEFAULT_MODELS[kind])
    except ImportError:
        return None  # no huggingface_hub: the backend's probe already says transformers is missing
    except MissingToolError as exc:
        return exc.message
    return None


def load_model(kind: str, model: str | None):
    """(model, feature_extractor, source) from a local directory or the HF cache; never the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is first imported
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model = model or DEFAULT_MODELS[kind]
    try:
        source = _check_source(kind, model)
        import transformers
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise MissingToolError(f"{kind} features need transformers ({exc}); `pip install 'talkctl[hubert]'`") from None
    hf_logging.set_verbosity_error()  # its warnings and bars would bypass our log and clutter stderr
    hf_logging.disable_progress_bar()
    cls = transformers.HubertModel if kind == "hubert" else transformers.Wav2Vec2Model
    try:
        fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(source, local_files_only=True)
        net = cls.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        first = first if len(first) <= 160 else first[:157] + "..."
        raise MissingToolError(f"{kind} model {source} could not be loaded ({first}); {_how_to_get(kind, model)}") from None
    net.eval()
    return net, fe, source


def conv_geometry(config) -> tuple[int, int]:
    """(receptive field, stride) in samples of the convolutional feature encoder."""
    rf, jump = 1, 1
    for k, s in zip(config.conv_kernel, config.conv_stride):
        rf += (k - 1) * jump
        jump *= s
    return rf, jump


@dataclass
class NeuralExtractor:
    kind: str
    model_name: str
    net: object
    feature_extractor: object
    device: str = "cpu"
    layer: int = -1
    chunk_seconds: float = 20.0

    min_std = None  # robust default floor (a fraction of the median std)

    @classmethod
    def from_config(cls, kind: str, cfg: dict, device: str = "cpu") -> "NeuralExtractor":
        net, fe, source = load_model(kind, cfg.get("model"))
        n_layers = net.config.num_hidden_layers
        layer = int(cfg.get("layer", -1))
        if not -(n_layers + 1) <= layer <= n_layers:
            raise UsageError(f"layer={layer} is out of range for this {kind} model (0..{n_layers}, or negative from the end)")
        chunk = float(cfg.get("chunk_seconds", 20.0))
        if chunk < 1.0:
            raise UsageError(f"chunk_seconds={chunk} is too short; use at least 1 (default 20)")
        net.to(device)
        return cls(kind, source, net, fe, device, layer, chunk)

    @property
    def geometry(self) -> tuple[int, int]:
        return conv_geometry(self.net.config)

    @property
    def rate(self) -> float:
        return SR / self.geometry[1]

    @property
    def offset(self) -> float:
        rf, _ = self.geometry
        return (rf / 2.0) / SR

    @property
    def dim(self) -> int:
        return int(self.net.config.hidden_size)

    @property
    def names(self) -> list[str]:
        return [f"{self.kind}_{i}" for i in range(self.dim)]

    def n_frames(self, n_samples: int) -> int:
        rf, stride = self.geometry
        return max(1, (max(n_samples, rf) - rf) // stride + 1)

    def frames(self, wav: np.ndarray, progress=None) -> np.ndarray:
        import torch

        rf, stride = self.geometry
        x = np.asarray(wav, dtype=np.float32)
        if len(x) < rf:  # shorter than one frame: pad with silence
            x = np.pad(x, (0, rf - len(x)))
        x = np.asarray(self.feature_extractor(x, sampling_rate=SR, return_tensors="np").input_values[0], dtype=np.float32)
        total = self.n_frames(len(x))
        step = max(1, int(self.chunk_seconds * SR) // stride)
        ctx = int(CONTEXT_SECONDS * SR) // stride
        out = np.zeros((total, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for f0 in range(0, total, step):
                f1 = min(total, f0 + step)
                c0, c1 = max(0, f0 - ctx), min(total, f1 + ctx)
                seg = torch.from_numpy(np.ascontiguousarray(x[c0 * stride:(c1 - 1) * stride + rf]))[None].to(self.device)
                res = self.net(seg, output_hidden_states=self.layer != -1)
                h = res.last_hidden_state if self.layer == -1 else res.hidden_states[self.layer]
                h = h[0].float().cpu().numpy()
                out[f0:f1] = h[f0 - c0:f1 - c0]
                if progress is not None:
                    progress(f1 - f0)
        return out
