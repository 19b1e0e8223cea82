"""Audio-to-landmarks Transformer (first stage of the decoupled two-stage method).

Input: per video frame a window of W normalised audio feature frames (T, W, D) from
extract-audio, of which a fixed subset of channels is used (`channels`: the formant
channels are dropped when `formants` is off). Each frame's window becomes one token (a small
1-D conv over the window, then a linear layer), a Transformer encoder with sinusoidal
positions relates the tokens of a sequence of frames, and a linear head gives K
coefficients per frame. Offsets = coefficients @ basis (K, 3P): with a PCA basis of the
subject's own training offsets (scaled by each component's std) the model can only produce
face shapes of this subject's repertoire; without PCA the basis is the diagonal of the
per-coordinate std (plain normalised regression).

Long inputs are predicted in overlapping windows of `seq_len` frames (hop seq_len/2),
blended with triangular weights, so any length of audio works.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

FORMANT_NAME = re.compile(r"^(F[1-9]|B[1-9]|formant.*|bandwidth.*)$", re.IGNORECASE)


def formant_channels(feature_names: list[str]) -> list[int]:
    """Indices of the formant channels (mel-formant: F1-F3 frequencies and B1-B3 bandwidths)."""
    return [i for i, n in enumerate(feature_names) if FORMANT_NAME.match(str(n))]


def input_channels(feature_names: list[str], formants: bool) -> np.ndarray:
    drop = set() if formants else set(formant_channels(feature_names))
    return np.array([i for i in range(len(feature_names)) if i not in drop], dtype=np.int64)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class FrameEncoder(nn.Module):
    """(B, T, W, D) windows -> (B, T, d_model) tokens: conv over the window's time axis."""

    def __init__(self, in_dim: int, window: int, d_model: int, conv_channels: int = 64):
        super().__init__()
        c = conv_channels
        self.conv = nn.Sequential(
            nn.Conv1d(in_dim, c, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(c, c, 3, stride=2, padding=1), nn.LeakyReLU(0.02),
        )
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, in_dim, window)).numel()
        self.proj = nn.Linear(flat, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, W, D = x.shape
        h = self.conv(x.reshape(B * T, W, D).transpose(1, 2))
        return self.proj(h.reshape(B, T, -1))


class AudioToLandmarks(nn.Module):
    def __init__(self, in_dim: int, window: int, n_coeffs: int, out_dim: int, d_model: int = 128,
                 layers: int = 2, heads: int = 4, ff_mult: int = 2, dropout: float = 0.1,
                 conv_channels: int = 64):
        super().__init__()
        self.hparams = {"in_dim": in_dim, "window": window, "n_coeffs": n_coeffs, "out_dim": out_dim,
                        "d_model": d_model, "layers": layers, "heads": heads, "ff_mult": ff_mult,
                        "dropout": dropout, "conv_channels": conv_channels}
        self.encoder = FrameEncoder(in_dim, window, d_model, conv_channels)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_mult * d_model, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_coeffs)
        nn.init.zeros_(self.head.weight)  # start at the neutral face (zero offsets)
        nn.init.zeros_(self.head.bias)
        # fixed, data-derived: coefficients -> flattened offsets (3P)
        self.register_buffer("basis", torch.eye(n_coeffs, out_dim))

    def set_basis(self, basis: np.ndarray) -> None:
        self.basis.copy_(torch.as_tensor(basis, dtype=torch.float32))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, W, D) -> (B, T, 3P) offsets."""
        h = self.encoder(feats)
        h = h + sinusoidal_positions(h.shape[1], h.shape[2]).to(h.device)
        h = self.norm(self.transformer(h))
        return self.head(h) @ self.basis


def offset_basis(train_offsets: np.ndarray, pca_components: int, pca_variance: float = 0.999) -> tuple[np.ndarray, dict]:
    """(K, 3P) basis from the training offsets (N, 3P). pca_components > 0: PCA basis with at
    most that many components (fewer if `pca_variance` of the variance is already explained),
    each row scaled by its component's std; 0: diag(per-coordinate std)."""
    X = np.asarray(train_offsets, np.float64)
    X = X - X.mean(0)
    if pca_components <= 0:
        std = np.maximum(X.std(0), 1e-6)
        return np.diag(std).astype(np.float32), {"pca": False, "components": int(X.shape[1])}
    _, sig, vt = np.linalg.svd(X, full_matrices=False)
    var = sig ** 2 / max(len(X) - 1, 1)
    frac = np.cumsum(var) / max(var.sum(), 1e-20)
    k = int(min(pca_components, np.searchsorted(frac, pca_variance) + 1, len(sig)))
    k = max(k, 1)
    std = np.sqrt(np.maximum(var[:k], 1e-12))
    return (vt[:k] * std[:, None]).astype(np.float32), {
        "pca": True, "components": k, "explained_variance": float(frac[k - 1])}


@torch.no_grad()
def predict_sequence(model: AudioToLandmarks, feats: np.ndarray, seq_len: int, device: str = "cpu",
                     batch: int = 32) -> np.ndarray:
    """(T, W, D') -> (T, 3P) offsets, in overlapping windows of seq_len frames blended linearly."""
    model.eval()
    T = len(feats)
    if T == 0:
        return np.zeros((0, model.basis.shape[1]), np.float32)
    L = min(seq_len, T)
    hop = max(1, L // 2)
    starts = list(range(0, T - L + 1, hop))
    if starts[-1] != T - L:
        starts.append(T - L)
    ramp = np.minimum(np.arange(1, L + 1), np.arange(L, 0, -1)).astype(np.float64)
    out = np.zeros((T, model.basis.shape[1]))
    wsum = np.zeros(T)
    x = torch.as_tensor(np.ascontiguousarray(feats), dtype=torch.float32)
    for b in range(0, len(starts), batch):
        chunk = starts[b:b + batch]
        y = model(torch.stack([x[s:s + L] for s in chunk]).to(device)).cpu().numpy()
        for s, yi in zip(chunk, y):
            w = ramp.copy()
            if s == 0:
                w[: L // 2] = ramp.max()  # the first window alone covers the start
            if s == T - L:
                w[L - L // 2:] = ramp.max()
            out[s:s + L] += w[:, None] * yi
            wsum[s:s + L] += w
    return (out / wsum[:, None]).astype(np.float32)
