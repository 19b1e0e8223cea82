"""The `landmarks` condition of the deformation field (decoupled two-stage method, Ma et al. 2025).

The head is driven by face landmarks in track.h5's canonical, pose-free head space
(canonical_landmarks.py) instead of audio: in training the tracked ones, at render time
those of train-a2l (new audio), of another run (re-enactment) or an edit of either.

Only the moving points are used (`indices`: mouth, jaw, eyelids, as train-a2l predicts),
as offsets from the subject's neutral face (the mean of the training frames), divided by
one scalar `scale` (the training offsets' RMS) so the code is O(1) and invertible.

Two codes go into the DeformField:
  per frame      encode(frames) -> (C, 3P): the normalised offsets of all P moving points
                 (the field's first layer is linear in it: the global expression, e.g. how
                 far the jaw is open, reaches every Gaussian, including those far from any point)
  per Gaussian   per_gaussian(code, means) -> (C, N, 7), the relative position code: for the
                 K landmarks nearest to the Gaussian's canonical position x in the neutral face
                 (neighbour sets cached: rebuilt when the Gaussian set changes and every 100
                 calls), with the frame's landmark positions l_k(t):
                     w_k = exp(-|x - l_k(t)|^2 / (2 sigma^2))
                     r(t) = sum_k w_k (x - l_k(t)) / (sum_k w_k + eps)          (kernel-weighted offset)
                 code = [ r(t)/sigma, (r(t) - r_neutral)/sigma, sum_k w_k / K ]
                 r - r_neutral is the local motion of the face around the Gaussian (zero on the
                 neutral face); sum w says how close the landmarks are. eps = exp(-2) (the weight
                 of a point 2 sigma away) fades the code out for Gaussians far from every landmark,
                 so the back of the head gets ~0 instead of a noisy direction.
                 Cost per frame: N*K*3 multiply-adds (10k Gaussians, K=8: 240k), no N x L search.
Eye blink: implied by the eyelid landmarks (they are among the moving points), so a field
with this condition has no separate blink input (eye_dim 0); `eyes_open` edits set them.
"""
from __future__ import annotations

import math
import weakref

import numpy as np
import torch

from talkctl.devices import to_device
from talkctl.errors import UsageError
from talkctl.head.conditions import Condition

PG_DIM = 7


class LandmarkCondition(Condition):
    name = "landmarks"
    REFRESH = 100  # neighbour sets are rebuilt at least this often (the means drift as they train)

    def __init__(self, indices, n_landmarks: int, k: int = 8, sigma: float = 0.08, scale: float = 1.0,
                 neutral=None):
        super().__init__()
        self.indices_list = [int(i) for i in indices]
        self.n_landmarks, self.k, self.sigma, self.scale = int(n_landmarks), int(k), float(sigma), float(scale)
        P = len(self.indices_list)
        if P == 0:
            raise UsageError("landmark condition needs at least one moving landmark")
        self.k = min(self.k, P)
        self.out_dim = 3 * P
        self.pg_dim = PG_DIM
        self.register_buffer("indices", torch.as_tensor(self.indices_list, dtype=torch.long))
        nz = torch.zeros(n_landmarks, 3) if neutral is None else torch.as_tensor(np.asarray(neutral), dtype=torch.float32)
        self.register_buffer("neutral", nz.clone())
        self.offsets: torch.Tensor | None = None   # (T,P,3) normalised
        self._nbr_src = None  # weak reference to the means the cache was built from
        self._nbr_age = 0
        self._nbr = None

    # ---- driving data ----------------------------------------------------------------------
    def set_source(self, landmarks=None, **_) -> None:
        """landmarks (T,L,3) canonical head space (full layout, as canonical_landmarks / an A2LPredictor give)."""
        if landmarks is None:
            raise UsageError("this head is landmark-driven: give landmarks (T,L,3) (e.g. --landmarks a2l)")
        lm = torch.as_tensor(np.asarray(landmarks), dtype=torch.float32, device=self.neutral.device)
        if lm.dim() != 3 or lm.shape[1] != self.n_landmarks or lm.shape[2] != 3:
            raise UsageError(f"landmarks of shape {tuple(lm.shape)} do not fit this head: it was trained with "
                             f"(T,{self.n_landmarks},3) canonical landmarks of the same landmark backend")
        self.offsets = (lm[:, self.indices] - self.neutral[self.indices]) / self.scale

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        if self.offsets is None:
            raise RuntimeError("LandmarkCondition.set_source(landmarks=...) first")
        t = to_device(frames, self.offsets.device, torch.long).clamp(0, len(self.offsets) - 1)
        return self.offsets[t].flatten(1)

    # ---- relative position code ------------------------------------------------------------
    def neighbours(self, means: torch.Tensor) -> torch.Tensor:
        """(N,K) indices into the moving points of each Gaussian's K nearest neutral landmarks.

        Cached per Gaussian set: rebuilt when `means` is another tensor (density control swaps
        the parameter) or has another shape, and every REFRESH calls while the means move.
        (Not keyed on the tensor's version: every optimizer step bumps it.)"""
        src = self._nbr_src() if self._nbr_src is not None else None
        fresh = (self._nbr is not None and src is means and self._nbr.shape[0] == means.shape[0]
                 and self._nbr.device == means.device and self._nbr_age < self.REFRESH)
        if not fresh:
            base = self.neutral[self.indices]  # (P,3)
            with torch.no_grad():
                d = torch.cdist(means.detach().float(), base)  # (N,P)
                self._nbr = d.topk(self.k, dim=1, largest=False).indices
            self._nbr_src, self._nbr_age = weakref.ref(means), 0
        self._nbr_age += 1
        return self._nbr

    def relative_code(self, lm: torch.Tensor, x: torch.Tensor, nbr: torch.Tensor) -> torch.Tensor:
        """lm (C,P,3) moving-point positions, x (N,3), nbr (N,K) -> r (C,N,3), mass (C,N,1)."""
        near = lm[:, nbr]                      # (C,N,K,3)
        rel = x[None, :, None] - near          # x - l_k
        w = torch.exp(-(rel * rel).sum(-1, keepdim=True) / (2 * self.sigma ** 2))  # (C,N,K,1)
        mass = w.sum(2)
        r = (w * rel).sum(2) / (mass + math.exp(-2.0))
        return r, mass / self.k

    def per_gaussian(self, code: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
        x = means.detach()
        nbr = self.neighbours(means)
        base = self.neutral[self.indices]
        lm = base[None] + code.reshape(len(code), -1, 3) * self.scale
        r, mass = self.relative_code(lm, x, nbr)
        r0, _ = self.relative_code(base[None], x, nbr)
        return torch.cat([r / self.sigma, (r - r0) / self.sigma, mass], -1)

    def spec(self) -> dict:
        return {"name": self.name, "indices": self.indices_list, "n_landmarks": self.n_landmarks, "k": self.k,
                "sigma": self.sigma, "scale": self.scale}


def offset_scale(points: np.ndarray, neutral: np.ndarray, indices: np.ndarray) -> float:
    """RMS of the training offsets of the moving points (the code's unit)."""
    off = points[:, indices] - neutral[indices]
    return float(max(np.sqrt((off ** 2).mean()), 1e-4))


# ---- edits and re-enactment ------------------------------------------------------------------
EDIT_KEYS = {"mouth_scale": "scale the mouth and jaw offsets from the neutral face (0 closed, 1 as is, 2 twice as open)",
             "eyes_open": "1: eyelids held at the neutral (open) face, 0: as driven, between: blend"}


def parse_edit(text: str | dict | None) -> dict:
    """"mouth_scale=1.5,eyes_open=1" -> {"mouth_scale": 1.5, "eyes_open": 1.0}."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        items = list(text.items())
    else:
        items = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UsageError(f"--edit {text!r}: write key=value pairs, e.g. mouth_scale=1.5,eyes_open=1")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        if k not in EDIT_KEYS:
            raise UsageError(f"--edit: unknown key {k!r}; known: {', '.join(f'{a} ({b})' for a, b in EDIT_KEYS.items())}")
        try:
            out[k] = float(v)
        except ValueError:
            raise UsageError(f"--edit {k}={v!r}: give a number") from None
    return out


def apply_edit(landmarks: np.ndarray, neutral: np.ndarray, n_landmarks: int, edit: dict | None) -> np.ndarray:
    """Landmarks (T,L,3) with the edit applied to their offsets from `neutral` (L,3)."""
    from talkctl.face.canonical import parts_for

    edit = parse_edit(edit) if not isinstance(edit, dict) else parse_edit(dict(edit))
    out = np.array(landmarks, dtype=np.float32, copy=True)
    if not edit:
        return out
    parts = parts_for(n_landmarks)
    if "mouth_scale" in edit:
        idx = np.array(sorted(set(parts["mouth"]) | set(parts["jaw"])), dtype=np.int64)
        out[:, idx] = neutral[idx] + edit["mouth_scale"] * (out[:, idx] - neutral[idx])
    if "eyes_open" in edit:
        a = float(np.clip(edit["eyes_open"], 0.0, 1.0))
        idx = np.array(sorted(parts["eyes"]), dtype=np.int64)
        out[:, idx] = (1 - a) * out[:, idx] + a * neutral[idx]
    return out
