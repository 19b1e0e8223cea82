"""The lip patch at the crop's full resolution, for train-deform's lip loss.

Training renders the head at `resolution` (256 px in the fast preset) while frames.h5 holds the
crop at its full size (512 px for the shared clips): teeth and the mouth's inside are lost in the
downscale. So the lip loss renders only a square around the mouth at full resolution, through
the same camera with its principal point moved to the square's corner, and compares it with the
same square cut from frames.h5 times the head mask (parse.h5's labels at full size, as the head's
other targets: the square reaches past the chin onto neck and collar, which the head must not
learn to cover); read per frame and cached: a patch is a few tens of KiB.

    patches = LipPatches(frames_ds, labels_ds, lip_box_full, K_full)   # lip_box_full: track.h5's (T,4) at S px
    target, K = patches.get(idx)                              # (B,P,P,3) float, (B,3,3) camera of each patch
    out = render(rasterize, means, quats, scales, opac, colours, w2c, K, patches.side, deg)
"""
from __future__ import annotations

import numpy as np
import torch

from talkctl.lru import Lru
from talkctl.parsing.regions import HEAD


class LipPatches:
    def __init__(self, frames, labels, lip_box: np.ndarray, K_full: np.ndarray, cache_frames: int = 4096,
                 device: str = "cpu"):
        self.frames, self.labels, self.device = frames, labels, device
        self.S = int(frames.shape[1])
        box = np.asarray(lip_box, np.float64)
        sides = np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
        # one side for every frame (one raster call per batch): most boxes fit whole
        self.side = int(np.clip(np.ceil(np.percentile(sides, 90)), 8, self.S))
        centre = (box[:, :2] + box[:, 2:]) / 2.0
        self.corner = np.clip(np.round(centre - self.side / 2.0), 0, self.S - self.side).astype(np.int64)
        self.K = np.asarray(K_full, np.float32)
        self._cache = Lru(cache_frames)

    def _read(self, i: int) -> torch.Tensor:
        """The patch of frame i with everything but the head (parse label 1) black."""
        x0, y0 = (int(v) for v in self.corner[i])
        win = np.s_[i, y0:y0 + self.side, x0:x0 + self.side]
        head = np.asarray(self.labels[win]) == HEAD
        return torch.from_numpy(np.asarray(self.frames[win]) * head[..., None])

    def get(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(target patches (B,P,P,3) float in [0,1], cameras (B,3,3) rendering exactly those squares)."""
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        target = torch.stack([self._cache.fetch(i, self._read) for i in idx]).float().div_(255.0).to(self.device)
        K = np.repeat(self.K[None], len(idx), 0)
        K[:, 0, 2] -= self.corner[idx, 0]
        K[:, 1, 2] -= self.corner[idx, 1]
        return target, torch.as_tensor(K, device=self.device)
