"""The torso stage's target image and the neck continuation under the chin, from a frame, its
parse labels, the background plate and the face landmarks.

Nothing of it is stored: within the neck and torso labels the target is the frame itself (the
background plate on the neck with neck_fill="background"), which gs.scene composes from frames.h5
and the labels; the neck continuation (neck_fill="extend") is painted only where portrait mode
needs it, under a rendered jaw (head.composite). Whole target images are made for parse's preview.

Torso target, as in RAD-NeRF / ER-NeRF: head pixels -> background plate, and so are background
pixels near the head (head_dilate: the soft hair fringe and flyaway strands the person mask leaves
out). The neck stays: it moves with the body, and the head model does not draw it. With
neck_fill="extend" the top of the neck is continued upwards under the chin, into the pixels the
head covered (darkening a little, like the shadow there), so a head rendered in a slightly
different pose never opens a hole between chin and neck. neck_fill="background" puts the
background plate on the neck too (torso = clothes only).
"""
from __future__ import annotations

import cv2
import numpy as np

from talkctl.parsing.regions import BACKGROUND, HEAD, NECK, face_height


def torso_maker(cfg: dict, S: int, layout, plate: np.ndarray):
    """(frame, labels, landmarks2d) -> torso target, with cfg's head_dilate, neck_fill, neck_extend
    (parse's preview and bench/gpu_check_data.py)."""
    grow = max(1, int(round(cfg["head_dilate"] * S)))
    # a square: OpenCV dilates with it in separable passes, ~15x faster than a disc of that size
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * grow + 1, 2 * grow + 1))

    def make(frame: np.ndarray, labels: np.ndarray, lm: np.ndarray) -> np.ndarray:
        return torso_target(frame, labels, plate, kernel, cfg["neck_fill"],
                            cfg["neck_extend"] * face_height(lm, layout))

    return make


def torso_target(frame: np.ndarray, labels: np.ndarray, plate: np.ndarray, kernel: np.ndarray,
                 neck_fill: str = "extend", extend_px: float = 0.0) -> np.ndarray:
    """The frame with the head removed (-> background plate) and the neck filled (module doc)."""
    out = frame.copy()
    head = labels == HEAD
    rows, cols = np.flatnonzero(head.any(1)), np.flatnonzero(head.any(0))
    if rows.size:  # work inside the head's box (grown by the kernel): most of the frame is untouched
        r = kernel.shape[0] // 2 + 1
        y0, y1 = max(rows[0] - r, 0), min(rows[-1] + r + 1, head.shape[0])
        x0, x1 = max(cols[0] - r, 0), min(cols[-1] + r + 1, head.shape[1])
        lab = labels[y0:y1, x0:x1]
        grown = cv2.dilate(head[y0:y1, x0:x1].view(np.uint8), kernel).view(bool)
        remove = grown & ((lab == BACKGROUND) | (lab == HEAD))
        np.copyto(out[y0:y1, x0:x1], plate[y0:y1, x0:x1], where=remove[..., None])
    if neck_fill == "background":
        np.copyto(out, plate, where=(labels == NECK)[..., None])
    elif neck_fill == "extend" and extend_px >= 1:
        extend_neck(out, frame, labels, head, int(round(extend_px)))
    return out


def extend_neck(out: np.ndarray, frame: np.ndarray, labels: np.ndarray, head: np.ndarray, length: int) -> None:
    """Continue the neck upwards into the head pixels above it (RAD-NeRF's neck fill): each
    column from the head's lower edge, in the colour of the neck's top (columns where the neck
    is only a sliver, e.g. a collar right under the chin, take their neighbours' colour)."""
    neck = labels == NECK
    cols = np.flatnonzero(neck.any(0))
    if cols.size == 0:
        return
    sub = neck[:, cols]
    top = np.argmax(sub, axis=0)  # first neck row per column
    height = sub.sum(0)
    # colour sources: where the head sits on a real stretch of neck
    good = (top > 0) & head[np.maximum(top - 1, 0), cols] & (height >= max(4, length // 4))
    if not good.any():
        return
    src = top[good] + np.minimum(3, height[good] - 1)  # a few px down: the chin's edge blurs into the neck top
    colour = frame[src, cols[good]].astype(np.float32)  # (m,3)
    span = np.arange(cols[good][0], cols[good][-1] + 1)  # every column between the outer good ones
    colour = np.stack([np.interp(span, cols[good], colour[:, c]) for c in range(3)], -1)
    # start row per column: the head's lower edge (the last head pixel above the neck / body)
    hs = head[:, span]
    below = np.where(hs.any(0), hs.shape[0] - 1 - np.argmax(hs[::-1], axis=0), -1)
    k = np.arange(0, length)[:, None]  # (L,1)
    rows = below[None, :] - k  # (L,m)
    valid = (rows >= 0) & (below[None, :] >= 0)
    rows_c = np.maximum(rows, 0)
    valid &= head[rows_c, span[None, :]]
    shade = 1.0 - 0.2 * (k / length)  # darker towards the chin, as under a real one
    paint = np.clip(colour[None] * shade[..., None], 0, 255).astype(np.uint8)
    rr, cc = rows_c[valid], np.broadcast_to(span[None, :], rows.shape)[valid]
    if rr.size == 0:
        return
    out[rr, cc] = paint[valid]
    # soften vertical streaks: blur the painted area sideways, inside its bounding box
    y0, y1, x0, x1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[rr - y0, cc - x0] = True
    box = out[y0:y1, x0:x1]
    blurred = cv2.blur(box, (9, 1))
    box[mask] = blurred[mask]
