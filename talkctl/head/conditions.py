"""What drives a deformation field: one code per frame.

The interface is small so other drivers plug in (head.landmark_condition):
  set_source(**arrays)   give the driving data (e.g. audio features (T,W,D))
  encode(frames (C,))  -> (C, out_dim) per-frame code
  per_gaussian(code, means) -> (C,N,d) or None (optional extra per-Gaussian code;
                         a condition that gives one sets .pg_dim = d)
  spec() -> JSON-able constructor arguments (saved with the weights)

AudioCondition   audio features (T,W,D) -> 1D convolutions over the window W -> a code per
                 frame -> self-attention across `attn_window` neighbouring frames -> the
                 smoothed code of the centre frame. With mouth_dim = K > 0 the code is read
                 out as the mouth state (head.mouth_state: K coefficients of the tracked
                 mouth/jaw landmark offsets, supervised in train-deform) and that state, not
                 the free code, is what the field sees; in pauses (speech activity 0,
                 audio.recipe.speech_activity) the state is the subject's closed mouth.
PoseCondition    head pose (axis-angle + translation, normalised) -> positional encoding
                 (the torso's driver)
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from talkctl.devices import to_device
from talkctl.errors import UsageError


class Condition(nn.Module):
    name = "condition"
    out_dim = 0
    pg_dim = 0

    def set_source(self, **arrays) -> None:
        raise NotImplementedError

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def per_gaussian(self, code: torch.Tensor, means: torch.Tensor):
        return None

    def spec(self) -> dict:
        raise NotImplementedError


def _encoder_layers(module: nn.Module, feature_dim: int, window: int, code_dim: int, mouth_dim: int) -> None:
    """The audio encoder's layers on `module`: window convolutions -> code, attention, mouth read-out."""
    hid = max(16, code_dim)
    module.conv = nn.Sequential(
        nn.Conv1d(feature_dim, hid, 3, padding=1), nn.LeakyReLU(0.02),
        nn.Conv1d(hid, hid, 3, padding=1, stride=2 if window >= 4 else 1), nn.LeakyReLU(0.02),
        nn.AdaptiveAvgPool1d(1))
    module.to_code = nn.Linear(hid, code_dim)
    module.attn = nn.MultiheadAttention(code_dim, num_heads=1, batch_first=True)
    if mouth_dim:
        module.to_mouth = nn.Linear(code_dim, mouth_dim)


class _Member(nn.Module):
    """One more encoder of an ensemble (the condition itself is the first)."""

    def __init__(self, feature_dim: int, window: int, code_dim: int, mouth_dim: int):
        super().__init__()
        _encoder_layers(self, feature_dim, window, code_dim, mouth_dim)


class AudioCondition(Condition):
    name = "audio"

    def __init__(self, feature_dim: int, window: int, code_dim: int = 32, attn_window: int = 8,
                 mean=None, std=None, mouth_dim: int = 0, ensemble: int = 1):
        super().__init__()
        self.feature_dim, self.window, self.code_dim, self.attn_window = feature_dim, window, code_dim, attn_window
        self.mouth_dim, self.ensemble = int(mouth_dim), int(ensemble)
        if self.ensemble > 1 and not self.mouth_dim:
            raise UsageError("an ensemble of audio encoders needs the mouth state (mouth_dim > 0)")
        self.out_dim = self.mouth_dim or code_dim
        # per-dimension normalisation of the features the field was trained with
        self.register_buffer("mean", torch.zeros(feature_dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(feature_dim) if std is None else torch.as_tensor(std, dtype=torch.float32))
        _encoder_layers(self, feature_dim, window, code_dim, self.mouth_dim)
        if self.mouth_dim:
            # more encoders, their states averaged: a steadier prediction for a voice none of them heard
            self.members = nn.ModuleList(_Member(feature_dim, window, code_dim, self.mouth_dim)
                                         for _ in range(self.ensemble - 1))
            self.register_buffer("closed", torch.zeros(self.mouth_dim))  # the closed mouth's state
            self.register_buffer("gain", torch.ones(()))  # spread calibration (train-deform), 1 while training
        self.features: torch.Tensor | None = None
        self.speech: torch.Tensor | None = None  # (T,) speech activity in [0,1]; None: always speech
        self.augment = None  # training only: (M,W,D) feature windows -> perturbed ones (audio.augment)

    def set_source(self, features=None, speech=None, **_) -> None:
        """features (T,W,D) of the driving audio; speech (T,) its speech activity (audio.recipe.speech_activity),
        which a mouth-state condition needs to close the mouth in pauses."""
        f = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=self.mean.device)
        if f.dim() != 3 or f.shape[1] != self.window or f.shape[2] != self.feature_dim:
            raise UsageError(f"audio features of shape {tuple(f.shape)} do not match the model's (T,{self.window},{self.feature_dim}); "
                             "extract them with the same extractor the model was trained with")
        self.features = (f - self.mean) / self.std
        self.speech = None
        if speech is not None:
            sp = torch.as_tensor(np.asarray(speech), dtype=torch.float32, device=self.mean.device).reshape(-1)
            if len(sp) != len(f):
                raise UsageError(f"speech activity has {len(sp)} frames, the features {len(f)}")
            self.speech = sp

    @staticmethod
    def stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
        return flat.mean(0).astype(np.float32), (flat.std(0) + 1e-5).astype(np.float32)

    def frame_codes(self, frames: torch.Tensor, member: nn.Module | None = None) -> torch.Tensor:
        m = member if member is not None else self
        x = self.features[frames]  # (M,W,D)
        if self.training and self.augment is not None:
            x = self.augment(x)
        return m.to_code(m.conv(x.transpose(1, 2))[..., 0])

    def encode(self, frames) -> torch.Tensor:
        """frames (C,): host indices (numpy, list, CPU tensor) or a device tensor -> (C, out_dim):
        the code, or the mouth state (the ensemble members' average)."""
        if self.features is None:
            raise RuntimeError("AudioCondition.set_source(features=...) first")
        if not self.mouth_dim:
            return self._code(frames, self)
        return self.member_states(frames).mean(0)

    def member_states(self, frames) -> torch.Tensor:
        """(E, C, mouth_dim): each ensemble member's mouth state (encode averages them; train-deform
        fits each on its own, so they stay independent guesses)."""
        state = torch.stack([m.to_mouth(self._code(frames, m)) for m in (self, *self.members)])
        state = self.gain * state  # states are centred on the training frames' mean
        if self.speech is None:
            return state
        gate = self.speech[frames][None, :, None]  # pauses: the closed mouth, whatever the features say
        return self.closed + gate * (state - self.closed)

    def _code(self, frames, member: nn.Module) -> torch.Tensor:
        T, dev = self.features.shape[0], self.mean.device
        half = self.attn_window // 2
        if torch.is_tensor(frames) and frames.device.type != "cpu":
            # indices already on the device: every window is encoded (finding the distinct ones
            # there would need torch.unique, which waits for the GPU)
            offs = torch.arange(-half, self.attn_window - half, device=frames.device)
            nb = (frames.long()[:, None] + offs[None]).clamp(0, T - 1)  # (C,A)
            codes = self.frame_codes(nb.reshape(-1), member).reshape(len(frames), self.attn_window, -1)
        else:
            # on the host, neighbouring frames' shared windows are found for free: encode each once
            f = np.asarray(frames.cpu() if torch.is_tensor(frames) else frames, dtype=np.int64).reshape(-1)
            nb = np.clip(f[:, None] + np.arange(-half, self.attn_window - half)[None], 0, T - 1)
            uniq, inv = np.unique(nb.reshape(-1), return_inverse=True)
            codes = self.frame_codes(to_device(uniq, dev), member)[to_device(inv, dev)]
            codes = codes.reshape(len(f), self.attn_window, -1)
        centre = codes[:, half:half + 1]
        smoothed, _ = member.attn(centre, codes, codes, need_weights=False)
        return torch.tanh(centre[:, 0] + smoothed[:, 0])

    def spec(self) -> dict:
        spec = {"name": self.name, "feature_dim": self.feature_dim, "window": self.window,
                "code_dim": self.code_dim, "attn_window": self.attn_window}
        if self.mouth_dim:
            spec["mouth_dim"] = self.mouth_dim
        if self.ensemble > 1:
            spec["ensemble"] = self.ensemble
        return spec


class FeatureAugment:
    """Training-only perturbation of normalised audio feature windows (M,W,D): Gaussian noise of std
    `noise` and whole feature channels dropped with probability `dropout` per window, so the audio
    path cannot key on the fine detail of the one voice it is trained on."""

    def __init__(self, noise: float = 0.0, dropout: float = 0.0):
        self.noise, self.dropout = float(noise), float(dropout)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.noise > 0:
            x = x + self.noise * torch.randn(x.shape, device=x.device)
        if self.dropout > 0:
            keep = (torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= self.dropout).float()
            x = x * keep / (1.0 - self.dropout)
        return x


def pose_vector(world_to_cam: torch.Tensor) -> torch.Tensor:
    """(C,4,4) head-to-camera transforms -> (C,6) axis-angle rotation ⊕ translation."""
    R, t = world_to_cam[:, :3, :3], world_to_cam[:, :3, 3]
    cos = ((R.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)
    ang = torch.acos(cos)
    axis = torch.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], -1)
    sin = torch.sin(ang).clamp(min=1e-6)
    rotvec = axis / (2 * sin)[:, None] * ang[:, None]
    return torch.cat([rotvec, t], -1)


class PoseCondition(Condition):
    """Head pose -> positional encoding with `n_freqs` frequencies (normalised by the training poses)."""
    name = "pose"

    def __init__(self, n_freqs: int = 6, mean=None, std=None):
        super().__init__()
        self.n_freqs = n_freqs
        self.out_dim = 6 * (1 + 2 * n_freqs)
        self.register_buffer("mean", torch.zeros(6) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(6) if std is None else torch.as_tensor(std, dtype=torch.float32))
        self.poses: torch.Tensor | None = None

    @staticmethod
    def stats(world_to_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        v = pose_vector(torch.as_tensor(world_to_cam, dtype=torch.float32)).numpy()
        return v.mean(0), v.std(0) + 1e-3

    def set_source(self, world_to_cam=None, **_) -> None:
        self.poses = torch.as_tensor(np.asarray(world_to_cam), dtype=torch.float32, device=self.mean.device)

    def encode_pose(self, world_to_cam: torch.Tensor) -> torch.Tensor:
        v = (pose_vector(world_to_cam) - self.mean) / self.std
        # the normalised pose spans ~[-3,3]: frequencies 2^k * pi / 4 keep the lowest one unwrapped
        freqs = (2.0 ** torch.arange(self.n_freqs, device=v.device)) * math.pi / 4
        ang = v[..., None] * freqs
        return torch.cat([v, torch.sin(ang).flatten(1), torch.cos(ang).flatten(1)], -1)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode_pose(self.poses[to_device(frames, self.poses.device, torch.long)])

    def spec(self) -> dict:
        return {"name": self.name, "n_freqs": self.n_freqs}
