"""The background plate: what the camera sees behind the person.

Per pixel, the median colour over the sampled frames in which that pixel is background (the
person mask dilated, so soft hair edges and shadows next to the body do not leak in). Pixels the
person uncovered too rarely (fewer than min_count samples: one bad mask would decide their colour)
take a mix of their own median and the fill, weighted by how often they were seen; pixels never
seen are filled smoothly from the seen ones around them (push-pull: a pyramid of mask-weighted
averages, coarse levels filling the holes of fine ones), so a large hole behind the person gets a
soft continuation of its surroundings, not the streaks a border-marching inpaint draws across it.
Memory: the samples only (at most `max_frames` frames), whatever the clip length.
"""
from __future__ import annotations

import cv2
import numpy as np


def sample_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """Evenly spread frame indices, at most max_frames of them."""
    k = max(1, min(n_frames, max_frames))
    return np.unique(np.round(np.linspace(0, n_frames - 1, k)).astype(int))


def background_mask(person: np.ndarray, dilate_px: int) -> np.ndarray:
    """Pixels safely away from the person (bool)."""
    p = person.astype(np.uint8)
    if dilate_px > 0:
        # a square: dilated in separable passes, ~15x faster than a disc of that size
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * dilate_px + 1, 2 * dilate_px + 1))
        p = cv2.dilate(p, k)
    return p == 0


class PlateBuilder:
    """Collect (frame, background mask) samples, then `finish()` -> plate, seen mask."""

    def __init__(self, n_samples: int, height: int, width: int):
        self.frames = np.zeros((n_samples, height, width, 3), np.uint8)
        self.masks = np.zeros((n_samples, height, width), bool)
        self.n = 0

    def add(self, frame: np.ndarray, bg: np.ndarray) -> None:
        self.frames[self.n] = frame
        self.masks[self.n] = bg
        self.n += 1

    def finish(self, min_count: int = 1, rows_per_block: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """min_count: a pixel seen uncovered fewer times is inpainted instead (pixels next to
        the person are uncovered rarely, and one bad mask there would decide the colour)."""
        frames, masks = self.frames[:self.n], self.masks[:self.n]
        n, h, w = masks.shape
        plate = np.zeros((h, w, 3), np.uint8)
        count = masks.sum(0)
        for r0 in range(0, h, rows_per_block):  # blocks of rows: the sort needs n x block memory
            r1 = min(h, r0 + rows_per_block)
            # samples last and contiguous: sorting many short uint16 rows is fast (SIMD sort)
            vals = np.ascontiguousarray(frames[:, r0:r1].transpose(1, 2, 3, 0)).astype(np.uint16)
            bad = ~masks[:, r0:r1].transpose(1, 2, 0)  # (b, w, n)
            vals[np.broadcast_to(bad[:, :, None, :], vals.shape)] = 256  # sorts after every real value
            vals.sort(axis=-1)
            c = count[r0:r1, :, None, None]
            lo = np.take_along_axis(vals, np.maximum(c - 1, 0) // 2, -1)[..., 0]  # the two middle values
            hi = np.take_along_axis(vals, np.minimum(c // 2, n - 1), -1)[..., 0]
            med = (lo.astype(np.float32) + hi) / 2
            plate[r0:r1] = np.clip(np.round(med), 0, 255).astype(np.uint8)
        seen = count >= max(1, min_count)
        if not seen.all():
            plate = fill(plate, np.clip(count / float(max(1, min_count)), 0.0, 1.0))
        return plate, seen


def fill(img: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Each pixel: confidence x its own value + (1 - confidence) x the smooth fill from the others
    (push-pull); confidence 0 everywhere gives mid grey."""
    w = np.asarray(confidence, np.float32)
    if w.max() <= 0:
        return np.full_like(img, 127)
    if w.min() >= 1:
        return img.copy()
    out = push_pull(img.astype(np.float32) * w[..., None], w)
    return np.clip(np.round(out), 0, 255).astype(img.dtype)


def push_pull(weighted: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Values (weighted / w) everywhere: where w is 0, from the next coarser level of the pyramid
    of (weighted, w) pairs, upsampled smoothly (cv2.pyrUp)."""
    h, wd = w.shape
    if min(h, wd) <= 2 or w.min() > 0:
        return weighted / np.maximum(w, 1e-6)[..., None]
    coarse = push_pull(cv2.pyrDown(weighted), cv2.pyrDown(w))
    up = cv2.pyrUp(coarse, dstsize=(wd, h))
    here = np.clip(w, 0.0, 1.0)[..., None]  # fully seen pixels keep their value, partial ones mix
    return here * (weighted / np.maximum(w, 1e-6)[..., None]) + (1.0 - here) * up
