"""Images for report.html: PNG encoding without an imaging library, error heat maps, <img> tags."""
from __future__ import annotations

import base64
import html
import struct
import zlib

import numpy as np

# inferno, sampled at 9 points (matplotlib's perceptually uniform map); interpolated to 256
_INFERNO = np.array([(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                     (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)], np.float64)


INFERNO_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 9), _INFERNO[:, c]) for c in range(3)],
                       -1).round().astype(np.uint8)


# ---------------------------------------------------------------------------- images


def png_bytes(img: np.ndarray) -> bytes:
    """Encode (H,W) / (H,W,3) / (H,W,4) uint8 as PNG (zlib only, no imaging library)."""
    a = np.ascontiguousarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    h, w, c = a.shape
    color = {1: 0, 3: 2, 4: 6}[c]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * c)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _fit(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def img_tag(img: np.ndarray, alt: str = "", max_side: int = 512, cls: str = "") -> str:
    data = base64.b64encode(png_bytes(_fit(np.asarray(img), max_side))).decode()
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def error_heatmap(real: np.ndarray, rendered: np.ndarray, scale: float = 0.25) -> np.ndarray:
    """|real - rendered| averaged over RGB, 0..scale mapped through inferno -> (H,W,3) uint8."""
    err = np.abs(real.astype(np.float32) - rendered.astype(np.float32)).mean(-1) / 255.0
    idx = np.clip(err / scale * 255.0, 0, 255).astype(np.uint8)
    return INFERNO_LUT[idx]
