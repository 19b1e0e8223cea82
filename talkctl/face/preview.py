"""`talkctl track --preview`: a contact sheet to check the tracking by eye.

Tile 1: the first source frame, downsized, with the crop rectangle (yellow; the part outside
the image is padded). Other tiles: frames sampled over the clip with all landmarks (green),
the rigid ones used for the pose (red), the head axes of the canonical space projected
through the pose (x red, y green, z blue, 0.5 units long from the head centre), the lip box
(yellow) and the time stamp ("gap" when the face was interpolated).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

AXIS_COLOURS = ((255, 60, 60), (60, 220, 60), (70, 120, 255))


def _label(img, text: str, colour=(255, 255, 255)) -> None:
    import cv2

    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


def source_tile(still: np.ndarray, crop: list[int], tile: int) -> np.ndarray:
    import cv2

    h, w = still.shape[:2]
    x0, y0, side = crop
    # fit the image and the crop square together in the tile
    lo_x, lo_y = min(0, x0), min(0, y0)
    hi_x, hi_y = max(w, x0 + side), max(h, y0 + side)
    scale = tile / max(hi_x - lo_x, hi_y - lo_y)
    canvas = np.full((tile, tile, 3), 40, np.uint8)
    ox, oy = int(round(-lo_x * scale)), int(round(-lo_y * scale))
    sw, sh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    small = cv2.resize(np.ascontiguousarray(still), (sw, sh), interpolation=cv2.INTER_AREA)
    canvas[oy:oy + sh, ox:ox + sw] = small[: tile - oy, : tile - ox]
    p0 = (int(round((x0 - lo_x) * scale)), int(round((y0 - lo_y) * scale)))
    p1 = (int(round((x0 + side - lo_x) * scale)) - 1, int(round((y0 + side - lo_y) * scale)) - 1)
    cv2.rectangle(canvas, p0, p1, (255, 220, 0), 2)
    _label(canvas, f"source {w}x{h}, crop {side}px")
    return canvas


def frame_tile(frame: np.ndarray, lm2d: np.ndarray, rigid, R, t, K, lip_box, label: str, tile: int,
               gap: bool) -> np.ndarray:
    import cv2

    size = frame.shape[0]
    k = tile / size
    img = cv2.resize(np.ascontiguousarray(frame), (tile, tile), interpolation=cv2.INTER_AREA)
    for x, y in lm2d * k:
        cv2.circle(img, (int(x), int(y)), 1, (80, 255, 80), -1)
    for x, y in lm2d[list(rigid)] * k:
        cv2.circle(img, (int(x), int(y)), 2, (255, 50, 50), -1)
    x0, y0, x1, y1 = (np.asarray(lip_box) * k).astype(int)
    cv2.rectangle(img, (x0, y0), (x1, y1), (255, 220, 0), 1)
    pts = np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], float)
    cam = pts @ R.T + t
    uv = K[0, 0] * cam[:, :2] / np.maximum(cam[:, 2:], 1e-6) + K[0, 2]
    o = tuple(int(v) for v in uv[0] * k)
    for i, colour in enumerate(AXIS_COLOURS):
        cv2.line(img, o, tuple(int(v) for v in uv[i + 1] * k), colour, 2, cv2.LINE_AA)
    _label(img, label + ("  gap" if gap else ""), (255, 120, 120) if gap else (255, 255, 255))
    return img


def contact_sheet(path: Path, frames, lm2d, rigid, R, t, K, lip_box, valid, crop, still, fps: float,
                  count: int = 11, tile: int = 256, columns: int = 4) -> Path:
    """Write the sheet to `path` (PNG). frames: (T,S,S,3) array-like (an h5py dataset is fine)."""
    import cv2

    T = len(lm2d)
    idx = np.unique(np.linspace(0, T - 1, min(count, T)).round().astype(int))
    tiles = [source_tile(still, crop, tile)]
    for i in idx:
        tiles.append(frame_tile(np.asarray(frames[i]), lm2d[i], rigid, R[i], t[i], K, lip_box[i],
                                f"#{i}  {i / fps:.2f} s", tile, not bool(valid[i])))
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * tile, columns * tile, 3), 20, np.uint8)
    for j, im in enumerate(tiles):
        r, c = divmod(j, columns)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = im
    path = Path(path)
    tmp = path.with_name(path.name + ".partial.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    tmp.replace(path)
    return path
