"""Portrait blending: the rendered face put into a real frame of the source video (the template)
with no visible seam.

    mask, face_h = portrait_mask(labels, landmarks, layout)   # (S,S) float in [0,1], face height px
    frame = blend(head_rgb, head_alpha, template, under, labels, mask, face_h)

The mask follows the template's own face: the face outline of its tracked landmarks (below a cut
under the eyes for region "lower", the whole face for "head"), grown by `chin_room` face heights so
a chin that opens further than the template's is still inside, and kept to the template's head and
neck pixels (parse labels), so the background beside the cheeks and the clothes are never touched.
The feather is a ramp of `feather` face heights measured inwards from the mask's edge (a distance
transform): the mask is exactly 0 on its edge, so nothing outside changes at all.

Under the rendered head lies the template with parse's neck continuation painted in under the
chin (from parse.h5's torso frame), so a rendered chin higher than the template's shows neck, not
a second chin. Colour is matched at the border: the
difference template - composite in the feather ramp (skin pixels the render covers) is spread
inwards as a smooth offset (normalised convolution, `colour_sigma` face heights), so the render
meets the template at the same brightness and the offset fades smoothly inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkctl.parsing.regions import HEAD, NECK, FaceLayout, face_frame

REGIONS = ("lower", "head")


@dataclass(frozen=True)
class BlendSettings:
    region: str = "lower"      # lower: nose, cheeks, mouth, chin, jaw | head: the whole head
    cut: float = 0.02          # region "lower" starts this many face heights below the face centre (under the eyes)
    chin_room: float = 0.12    # mask grown by this many face heights (a chin that opens further stays inside)
    feather: float = 0.08      # ramp width inside the mask's edge, face heights
    colour_sigma: float = 0.3  # smoothness of the colour offset, face heights
    colour_max: float = 0.15   # largest colour offset (0..1 units): a bad match never recolours the face


def _face_geometry(lm: np.ndarray, layout: FaceLayout) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(outline polygon (K,2) px, face-frame transform (2,3), face height px) or None for a bad track."""
    if lm is None or not np.isfinite(lm).all():
        return None
    outline = layout.outline(lm)
    try:
        m, h = face_frame(outline, layout.chin)
    except ValueError:
        return None
    return outline, m, h


def _v_map(m: np.ndarray, h: float, shape: tuple[int, int]) -> np.ndarray:
    """Per pixel: how far below the face centre, in face heights (v of regions' face frame)."""
    from talkctl.parsing.regions import RECT_SCALE, RECT_V

    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    v_px = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]  # face-frame pixels
    return v_px / RECT_SCALE + RECT_V[0]


def portrait_mask(labels: np.ndarray, lm: np.ndarray | None, layout: FaceLayout,
                  settings: BlendSettings = BlendSettings()) -> tuple[np.ndarray, float]:
    """(feathered (S,S) float32 mask of the template pixels the render replaces (module doc), face
    height px). labels (S,S) uint8 parse labels and lm (L,2) landmarks of the template frame, both
    at S px. A frame without a usable track gets an empty mask: the template shows as it is."""
    geo = _face_geometry(lm, layout)
    if geo is None:
        return np.zeros(labels.shape, np.float32), 0.0
    outline, m, h = geo
    face = np.zeros(labels.shape, np.uint8)
    cv2.fillPoly(face, [np.round(outline).astype(np.int32)], 1)
    grow = max(1, int(round(settings.chin_room * h)))
    face = cv2.dilate(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    person = (labels == HEAD) | (labels == NECK)
    if settings.region == "head":
        raw = (face.astype(bool) & person) | (labels == HEAD)
    else:
        raw = face.astype(bool) & person & (_v_map(m, h, labels.shape) >= settings.cut)
    raw[[0, -1], :] = raw[:, [0, -1]] = False  # the ramp needs an edge inside the image
    if not raw.any():
        return np.zeros(labels.shape, np.float32), h
    dist = cv2.distanceTransform(raw.astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(dist / max(1.0, settings.feather * h), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32), h  # smoothstep: no kink where the ramp ends


def colour_offset(comp: np.ndarray, template: np.ndarray, weight: np.ndarray, sigma_px: float,
                  limit: float) -> np.ndarray:
    """Smooth (H,W,3) offset making `comp` meet `template` where weight > 0 (normalised
    convolution at a quarter of the resolution: the offset is low-frequency by design)."""
    H, W = weight.shape
    total = float(weight.sum())
    if total < 8:
        return np.zeros_like(comp)
    diff = (template - comp) * weight[..., None]
    small = (max(4, W // 4), max(4, H // 4))
    d = cv2.resize(diff, small, interpolation=cv2.INTER_AREA)
    w = cv2.resize(weight, small, interpolation=cv2.INTER_AREA)
    s = max(0.5, sigma_px * small[0] / W)
    num = cv2.GaussianBlur(d, (0, 0), s)
    den = cv2.GaussianBlur(w, (0, 0), s)
    glob = diff.reshape(-1, 3).sum(0) / total  # where the band is far: its mean offset
    c = 0.05 * float(den.max())
    off = (num + c * glob) / (den[..., None] + c)
    off = cv2.resize(off, (W, H), interpolation=cv2.INTER_LINEAR)
    return np.clip(off, -limit, limit).astype(np.float32)


def blend(head_rgb: np.ndarray, head_alpha: np.ndarray, template: np.ndarray, under: np.ndarray,
          labels: np.ndarray, mask: np.ndarray, face_height: float,
          settings: BlendSettings = BlendSettings(), face: np.ndarray | None = None) -> np.ndarray:
    """One output frame (S,S,3) uint8: the render (premultiplied head_rgb (S,S,3) and head_alpha
    (S,S) floats in [0,1]) over `under` inside the feathered mask, colour matched to `template`.
    Only the mask's bounding box is computed: the rest is the template, untouched. `face`, an
    (S,S,3) uint8 array, receives the colour-matched render before feathering (inside the box),
    for pasting into a full-resolution frame with the mask."""
    out = np.array(template, np.uint8, copy=True)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return out
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    m, a = mask[box][..., None], head_alpha[box]
    t = template[box].astype(np.float32) / 255.0
    comp = head_rgb[box] + (1.0 - a[..., None]) * (under[box].astype(np.float32) / 255.0)
    band = ((m[..., 0] > 0) & (m[..., 0] < 1) & (labels[box] == HEAD) & (a > 0.95)).astype(np.float32)
    comp += colour_offset(comp, t, band, settings.colour_sigma * face_height, settings.colour_max)
    if face is not None:
        face[box] = (np.clip(comp, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out[box] = (np.clip(m * comp + (1.0 - m) * t, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out
