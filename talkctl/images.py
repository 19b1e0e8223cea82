"""Small image helpers shared by the render and evaluation paths."""
from __future__ import annotations

import cv2
import numpy as np


def resize_square(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR)
    return cv2.resize(img, (size, size), interpolation=interp)
