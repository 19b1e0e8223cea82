"""Image figures: PSNR (optionally inside a mask), SSIM (Gaussian window 11, sigma 1.5, the
Wang et al. definition, equal to skimage's structural_similarity with gaussian_weights=True),
and ImageFigures, which streams them (with LPIPS where its weights are) over a sequence.
"""
from __future__ import annotations

import math

import numpy as np


def _to_float(img) -> np.ndarray:
    """uint8 -> [0,1] float64; float input is taken as already in [0,1]."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return a.astype(np.float64)


# ---------------------------------------------------------------------------- PSNR / SSIM


def psnr(a, b, mask=None) -> float:
    """PSNR in dB between two images (H,W[,C]) (uint8, or float in [0,1]).

    mask (H,W), bool or weights in [0,1]: the error is averaged over masked pixels only.
    Identical images give +inf.
    """
    x, y = _to_float(a), _to_float(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    err = (x - y) ** 2
    if mask is not None:
        m = _to_float(mask) if np.asarray(mask).dtype != bool else np.asarray(mask, np.float64)
        if err.ndim == 3:
            m = m[..., None] * np.ones(err.shape[-1])
        if m.sum() == 0:
            return float("nan")
        mse = float((err * m).sum() / m.sum())
    else:
        mse = float(err.mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gauss_window(size: int, sigma: float, torch, dtype, device=None):
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim_torch(x, y, data_range: float = 1.0, win: int = 11, sigma: float = 1.5):
    """SSIM per image for batches (B,C,H,W) of torch tensors; differentiable, returns (B,).

    'valid' filtering (no padding), i.e. the map is averaged over pixels whose whole
    window lies inside the image -- the same as skimage, which pads then crops win//2.
    """
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    g = _gauss_window(win, sigma, torch, x.dtype, x.device)  # made there: no host-to-device copy
    gx = g.view(1, 1, 1, win).repeat(c, 1, 1, 1)
    gy = g.view(1, 1, win, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(dim=(1, 2, 3))


def ssim(a, b) -> float:
    """SSIM of two images (H,W[,C]), uint8 or float in [0,1]; mean over channels (RGB)."""
    import torch

    x, y = _to_float(a), _to_float(b)
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    if min(x.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {x.shape[:2]}")
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    ty = torch.from_numpy(np.ascontiguousarray(y.transpose(2, 0, 1)))[None]
    return float(ssim_torch(tx, ty)[0])


# ---------------------------------------------------------------------------- LPIPS
