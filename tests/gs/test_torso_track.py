"""Torso tracking (gs.torso_track): known sub-pixel shifts of a textured torso are recovered,
frames with no torso are filled from their neighbours, and a moved principal point translates
a render exactly."""
import math

import cv2
import numpy as np
import torch

from talkctl.gs.torso_track import shifted_intrinsics, track_torso
from talkctl.kernels.raster import rasterize

R, T = 96, 24


def _clip(shifts):
    """Frames (T,R,R,3) uint8 of a textured torso moved by shifts (T,2) px, and parse labels (T,R,R)."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.uniform(0, 1, (R, R)).astype(np.float32), (0, 0), 2.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    body = np.zeros((R, R), np.float32)
    body[50:96, 18:78] = 1.0
    frames, labels = [], []
    for dx, dy in shifts:
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        b = cv2.warpAffine(body, m, (R, R), flags=cv2.INTER_LINEAR)
        t = cv2.warpAffine(tex, m, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img = 0.2 + 0.6 * (b * t)[..., None] * np.ones(3, np.float32)
        frames.append((img * 255 + 0.5).astype(np.uint8))
        labels.append(np.where(b > 0.5, 3, 0).astype(np.uint8))
    return np.stack(frames), np.stack(labels)


def test_known_shifts_are_recovered():
    t = np.arange(T)
    true = np.stack([2.5 * np.sin(t / 3.0), 1.5 * np.cos(t / 4.0)], 1)
    frames, labels = _clip(true)
    labels[7] = 0  # a frame where parse found no torso: filled from its neighbours
    got = track_torso(frames, labels, np.arange(T), R) * R
    centred = true - np.median(true, 0)  # shifts are relative to the torso's median position
    err = np.abs(got - centred)
    assert err.mean() < 0.25 and err.max() < 1.0, err
    assert np.abs(got[7] - centred[7]).max() < 1.2


def test_moved_principal_point_translates_the_render():
    g = torch.Generator().manual_seed(0)
    n = 40
    means = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = 0.03 + 0.05 * torch.rand(n, 3, generator=g)
    opac = 0.3 + 0.6 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    K = np.array([[70.0, 0, 32], [0, 70.0, 32], [0, 0, 1]], np.float32)
    Ks = torch.as_tensor(np.concatenate([K[None], shifted_intrinsics(K, [[3.0, -2.0]])]))
    out = rasterize(means, quats, scales, opac, colors, torch.eye(4).repeat(2, 1, 1), Ks, 64, 64, backend="torch")
    a, b = out.rgb[0].numpy(), out.rgb[1].numpy()
    assert math.isclose(float(np.abs(b[8:-8, 8:-8] - np.roll(a, (-2, 3), (0, 1))[8:-8, 8:-8]).max()), 0.0, abs_tol=1e-4)
