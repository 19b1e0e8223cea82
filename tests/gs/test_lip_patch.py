"""The full-resolution lip patch (gs.lip_patch): its camera renders exactly the square cut from a
full-size render, and its target is the frame inside the head mask only."""
import numpy as np
import torch

from talkctl.gs.lip_patch import LipPatches
from talkctl.kernels.raster import rasterize

S, T = 96, 3


def test_patch_camera_and_masked_target():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    labels = np.zeros((T, S, S), np.uint8)
    labels[:, 20:70, 25:75] = 1  # head
    labels[:, 70:, :] = 3        # collar below the chin
    boxes = np.array([[40, 50, 64, 74], [38, 52, 60, 76], [44, 48, 70, 74]])
    K = np.array([[90.0, 0, 48], [0, 90.0, 48], [0, 0, 1]], np.float32)
    lips = LipPatches(frames, labels, boxes, K)
    target, Ks = lips.get([0, 2])
    P = lips.side
    for j, i in enumerate([0, 2]):
        x0, y0 = lips.corner[i]
        head = labels[i, y0:y0 + P, x0:x0 + P] == 1
        expect = frames[i, y0:y0 + P, x0:x0 + P] * head[..., None] / 255.0
        assert np.allclose(target[j].numpy(), expect) and (~head).any()  # the collar is black
    g = torch.Generator().manual_seed(1)
    n = 50
    args = (torch.randn(n, 3, generator=g) * 0.25 + torch.tensor([0.0, 0.2, 3.0]), torch.randn(n, 4, generator=g),
            0.02 + 0.04 * torch.rand(n, 3, generator=g), 0.3 + 0.6 * torch.rand(n, generator=g), torch.rand(n, 3, generator=g))
    eye = torch.eye(4).repeat(2, 1, 1)
    full = rasterize(*args, eye, torch.as_tensor(K).repeat(2, 1, 1), S, S, backend="torch").rgb
    patch = rasterize(*args, eye, Ks, P, P, backend="torch").rgb
    for j, i in enumerate([0, 2]):
        x0, y0 = lips.corner[i]
        assert torch.allclose(patch[j], full[j, y0:y0 + P, x0:x0 + P], atol=2e-3)
