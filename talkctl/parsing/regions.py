"""Cut a person mask into head / neck / torso using the tracked face landmarks.

Works in a small *face frame*: the image rotated, scaled and shifted so that the face is
upright, its centre (midway between forehead top and chin) at a fixed place and its height
(forehead-to-chin) RECT_SCALE pixels. All geometry constants below are in units of the face
height H (u to the subject's left = image right, v downwards), so they hold for any crop size
and head roll. The zones found there are warped back and intersected with the full-resolution
person mask, so the silhouette edges (hair against background) keep full resolution.

  head  = person pixels above the jaw line (the lower face oval, continued sideways at
          jaw-angle level so ears and hair beside the face are included) and inside a head
          ellipse fitted to the face oval, widened for ears and hair; plus the face oval itself;
          plus hair hanging below the jaw line (long hair), grown from the hair above the face
          by colour and connectivity.
  neck  = person pixels below the jaw inside a band whose width follows the face width, down
          to the shoulders (where the silhouette widens) or to the collar, whichever is higher:
          the collar is where skin stops (skin colour sampled on the cheeks each frame).
  torso = the rest of the person.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

BACKGROUND, HEAD, NECK, TORSO = 0, 1, 2, 3
LABEL_NAMES = {BACKGROUND: "background", HEAD: "head", NECK: "neck", TORSO: "torso"}

# mediapipe face mesh (468/478 points): FACEMESH_FACE_OVAL walked as a closed loop from the
# forehead top (10) down the image-left side to the chin (152) and back up the image-right side.
MP_OVAL = (10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
           377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338)
MP_SKIN = (50, 280, 101, 330, 205, 425, 36, 266, 151, 108, 337, 9, 5, 195, 199, 175)  # cheeks, forehead, nose, chin

RECT_SCALE = 64.0  # face-frame pixels per face height
RECT_U = (-1.6, 1.6)  # face-frame window, in face heights
RECT_V = (-1.6, 2.2)


@dataclass
class RegionParams:
    jaw_margin: float = 0.04  # the jaw line is pushed this far outwards (landmarks sit inside the jaw's edge)
    ellipse_width: float = 1.9  # head ellipse half-width / face half-width (ears, hair volume)
    ellipse_centre: float = -0.12  # ellipse centre below the face centre (face heights)
    ellipse_height: float = 0.90  # ellipse half-height below its centre; above it the strip goes up to the top
    neck_top_width: float = 1.00  # neck band half-width / face half-width, at the jaw
    neck_bottom_width: float = 1.25  # ... at the shoulders
    shoulder_width: float = 0.70  # silhouette half-width (face heights) that counts as shoulders
    neck_min: float = 0.04  # neck length below the chin: at least (shadow under the chin is always neck)
    neck_max: float = 0.75  # ... at most
    skin_threshold: float = 3.0  # Mahalanobis distance in rg chromaticity that still counts as skin
    collar_run: float = 0.06  # this much non-skin below the neck ends it (collar, scarf)
    long_hair: bool = True  # grow hair below the jaw line from the hair above the face
    hair_threshold: float = 3.0  # Mahalanobis distance (Lab) to the hair colour
    smooth: float = 0.5  # temporal smoothing of the neck / shoulder lines (0 = none)


@dataclass
class FaceLayout:
    """Index sets into a landmark array: an ordered closed face outline and skin sample points."""
    n: int
    oval: np.ndarray  # (K,) indices, closed loop, starts at the forehead top
    chin: int  # position in `oval`
    jaw_left: int  # positions in `oval` of the jaw angles (image left / right)
    jaw_right: int
    skin: np.ndarray  # (M,) indices

    def outline(self, lm: np.ndarray) -> np.ndarray:
        return lm[self.oval]


def mediapipe_layout(n: int) -> FaceLayout:
    oval = np.array(MP_OVAL)
    pos = {k: i for i, k in enumerate(MP_OVAL)}
    return FaceLayout(n, oval, pos[152], pos[58], pos[288], np.array(MP_SKIN))


def layout_for(n_landmarks: int) -> FaceLayout:
    if n_landmarks in (468, 478):
        return mediapipe_layout(n_landmarks)
    if n_landmarks == 68:
        return IBUG68
    raise ValueError(f"no face outline known for {n_landmarks} landmarks (expected 468/478 mediapipe or 68 iBUG)")


class _Ibug68(FaceLayout):
    """iBUG 68 points: jaw 0..16, brows 17..26. The forehead is extrapolated above the brows."""

    def __init__(self):
        oval = np.arange(17 + 12)  # 17 jaw points then 12 synthetic forehead points (see outline)
        super().__init__(68, oval, chin=8, jaw_left=4, jaw_right=12, skin=np.array([29, 30, 2, 14, 31, 35]))

    def outline(self, lm: np.ndarray) -> np.ndarray:
        jaw = lm[0:17]
        brows = lm[[26, 25, 24, 23, 22, 21, 20, 19, 18, 17]]
        up = lm[27] - lm[8]  # nose bridge minus chin
        up = up / (np.linalg.norm(up) + 1e-6)
        lift = 0.35 * np.linalg.norm(lm[27] - lm[8])
        fore = brows + lift * up
        ends = np.stack([lm[16] + 0.5 * lift * up, lm[0] + 0.5 * lift * up])
        loop = np.concatenate([jaw, ends[:1], fore, ends[1:]])  # chin ... forehead, closed
        return loop

    def skin_points(self, lm):
        return np.stack([0.5 * (lm[30] + lm[2]), 0.5 * (lm[30] + lm[14]), lm[29], 0.5 * (lm[33] + lm[51]),
                         0.5 * (lm[8] + lm[57])])


IBUG68 = _Ibug68()


def skin_points(layout: FaceLayout, lm: np.ndarray) -> np.ndarray:
    if hasattr(layout, "skin_points"):
        return layout.skin_points(lm)
    return lm[layout.skin]


# ---- the face frame ---------------------------------------------------------
def face_height(lm: np.ndarray, layout: FaceLayout) -> float:
    """Forehead-top to chin distance in pixels."""
    outline = layout.outline(lm)
    return float(np.linalg.norm(outline[layout.chin] - outline[0]))


def face_frame(outline: np.ndarray, chin: int) -> tuple[np.ndarray, float]:
    """Similarity transform image px -> face-frame px (2x3), and the face height in image px."""
    top = outline[0]
    bottom = outline[chin]
    down = bottom - top
    h = float(np.linalg.norm(down))
    if not np.isfinite(h) or h < 2.0:
        raise ValueError("degenerate face outline")
    down = down / h
    right = np.array([-down[1], down[0]])  # image right for an upright face
    centre = 0.5 * (top + bottom)
    s = RECT_SCALE / h
    ox = -RECT_U[0] * RECT_SCALE
    oy = -RECT_V[0] * RECT_SCALE
    m = np.array([[s * right[0], s * right[1], ox - s * right @ centre],
                  [s * down[0], s * down[1], oy - s * down @ centre]], np.float64)
    return m, h


def rect_size() -> tuple[int, int]:
    return (int(round((RECT_U[1] - RECT_U[0]) * RECT_SCALE)), int(round((RECT_V[1] - RECT_V[0]) * RECT_SCALE)))


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _from_rect_units(uv: np.ndarray) -> np.ndarray:
    return np.stack([(uv[..., 0] - RECT_U[0]) * RECT_SCALE, (uv[..., 1] - RECT_V[0]) * RECT_SCALE], -1)


def _to_rect_units(px: np.ndarray) -> np.ndarray:
    """Face-frame pixel coords -> (u, v) in face heights."""
    return np.stack([px[..., 0] / RECT_SCALE + RECT_U[0], px[..., 1] / RECT_SCALE + RECT_V[0]], -1)


# ---- colour models ------------------------------------------------------------
@dataclass
class Gaussian:
    """A colour model: mean and inverse covariance (2 or 3 channels), distances in std units."""
    mean: np.ndarray
    icov: np.ndarray

    @classmethod
    def fit(cls, samples: np.ndarray, floor: float) -> "Gaussian | None":
        samples = samples.reshape(-1, samples.shape[-1]).astype(np.float64)
        if len(samples) < 8:
            return None
        mean = samples.mean(0)
        d = samples - mean
        cov = (d.T @ d) / (len(d) - 1) + np.eye(samples.shape[1]) * floor ** 2
        return cls(mean, _small_inverse(cov))

    def distance(self, x: np.ndarray) -> np.ndarray:
        # written out: einsum / matmul on many tiny vectors is slow and uses BLAS threads
        k = self.mean.shape[0]
        d = [x[..., i].astype(np.float32) - np.float32(self.mean[i]) for i in range(k)]
        q = np.zeros(d[0].shape, np.float32)
        for i in range(k):
            q += np.float32(self.icov[i, i]) * d[i] * d[i]
            for j in range(i + 1, k):
                q += np.float32(2 * self.icov[i, j]) * d[i] * d[j]
        return np.sqrt(np.maximum(q, 0.0, out=q), out=q)


def _small_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a 2x2 or 3x3 symmetric positive matrix by cofactors (no LAPACK call per frame)."""
    if a.shape == (2, 2):
        det = a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]
        return np.array([[a[1, 1], -a[0, 1]], [-a[1, 0], a[0, 0]]]) / det
    c = np.array([[a[1, 1] * a[2, 2] - a[1, 2] * a[2, 1], a[0, 2] * a[2, 1] - a[0, 1] * a[2, 2], a[0, 1] * a[1, 2] - a[0, 2] * a[1, 1]],
                  [a[1, 2] * a[2, 0] - a[1, 0] * a[2, 2], a[0, 0] * a[2, 2] - a[0, 2] * a[2, 0], a[0, 2] * a[1, 0] - a[0, 0] * a[1, 2]],
                  [a[1, 0] * a[2, 1] - a[1, 1] * a[2, 0], a[0, 1] * a[2, 0] - a[0, 0] * a[2, 1], a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]]])
    return c / (a[0] @ c[:, 0])


def chromaticity(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 2) r, g chromaticity: colour without brightness."""
    x = rgb.astype(np.float32)
    return x[..., :2] / (x.sum(-1, keepdims=True) + 12.0)


def _sample_patches(img: np.ndarray, pts: np.ndarray, r: int) -> np.ndarray:
    h, w = img.shape[:2]
    out = []
    for x, y in np.round(pts).astype(int):
        if r <= x < w - r and r <= y < h - r:
            out.append(img[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, img.shape[-1]))
    return np.concatenate(out) if out else np.zeros((0, img.shape[-1]), img.dtype)


# ---- the cut ------------------------------------------------------------------
@dataclass
class RegionState:
    """Temporal state carried from frame to frame: smoothed shoulder level and collar line
    (face-frame rows) and the last good colour models."""
    shoulder: float | None = None
    neck_bottom: np.ndarray | None = None
    skin: Gaussian | None = None
    skin_lab: Gaussian | None = None
    hair: Gaussian | None = None
    clothes: list = field(default_factory=list)
    frame: int = 0


@lru_cache(maxsize=1)
def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rw, rh = rect_size()
    u = (np.arange(rw, dtype=np.float32) / RECT_SCALE + RECT_U[0])[None, :]
    v = (np.arange(rh, dtype=np.float32) / RECT_SCALE + RECT_V[0])[:, None]
    rows = np.arange(rh)[:, None]
    return u, v, rows


def split_person(frame: np.ndarray, person: np.ndarray, lm: np.ndarray, layout: FaceLayout,
                 params: RegionParams = RegionParams(), state: RegionState | None = None) -> np.ndarray:
    """frame (S,S,3) uint8 RGB, person (S,S) bool, lm (L,2) px (pixel centres at i + 0.5, as
    track.h5 stores them) -> labels (S,S) uint8."""
    S0, S1 = person.shape
    lm = np.asarray(lm, np.float64) - 0.5  # to OpenCV's convention: pixel centres at integers
    outline = layout.outline(lm).astype(np.float64)
    try:
        m, face_h = face_frame(outline, layout.chin)
    except ValueError:
        return (person * TORSO).astype(np.uint8)
    state = state if state is not None else RegionState()
    rw, rh = rect_size()
    uu, vv, rows = _grid()
    # the face frame, small: person mask and colours (pre-shrunk by area averaging: no aliasing)
    src, ms = frame, m
    shrink = RECT_SCALE / face_h
    if shrink < 0.5:
        f = int(min(4, 1.0 / shrink))
        src = cv2.resize(frame, (S1 // f, S0 // f), interpolation=cv2.INTER_AREA)
        ms = m.copy()
        ms[:, :2] *= f
    rimg = cv2.warpAffine(src, ms, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rperson = cv2.warpAffine(person.view(np.uint8), m, (rw, rh), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    routline = _apply(m, outline)
    uv = _to_rect_units(routline)

    head_zone = _head_zone(routline, uv, layout, params, uu, vv, rw, rh)
    head = head_zone & rperson

    # skin colour from the cheeks / forehead, in rg chromaticity: the shadow under the chin
    # darkens the neck but keeps its chromaticity, a white or blue collar has another one
    skin_px = _sample_patches(frame, skin_points(layout, lm), 2)
    g = Gaussian.fit(chromaticity(skin_px), floor=0.012)
    if g is not None:
        state.skin = g
        if params.long_hair:  # with lightness too: blond or brown hair has skin's chromaticity
            state.skin_lab = Gaussian.fit(cv2.cvtColor(skin_px[None], cv2.COLOR_RGB2LAB)[0], floor=4.0)
    if state.skin is not None:
        skin = (state.skin.distance(chromaticity(rimg)) < params.skin_threshold) & (rimg.max(-1) > 25)
    else:
        skin = np.ones_like(rperson)

    neck_zone = _neck_zone(rperson, head, skin, uv, layout, params, state, uu, vv, rows) & ~head_zone
    neck = neck_zone & rperson

    if params.long_hair:
        hair = _long_hair(rimg, rperson, head, uv, layout, params, state, uu, vv)
        if hair is not None:
            hair = cv2.dilate(hair.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
            head_zone = head_zone | hair
            neck_zone &= ~hair
    state.frame += 1

    labels = person.view(np.uint8) * np.uint8(TORSO)
    # back to the image: the zones (not yet cut by the small person mask, so the silhouette
    # edge comes from the full-resolution mask alone) in one 2-channel warp, linear + threshold
    # = smooth edges, only over the zones' bounding box
    head, neck = head_zone, neck_zone
    any_zone = (head | neck) & cv2.dilate(rperson.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    if any_zone.any():
        ys = np.flatnonzero(any_zone.any(1))
        xs = np.flatnonzero(any_zone.any(0))
        corners = np.array([[xs[0], ys[0]], [xs[-1] + 1, ys[0]], [xs[0], ys[-1] + 1], [xs[-1] + 1, ys[-1] + 1]], float)
        minv = cv2.invertAffineTransform(m)
        img_c = _apply(minv, corners)
        x0, y0 = np.maximum(np.floor(img_c.min(0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(img_c.max(0)).astype(int) + 2, (S1, S0))
        if x1 > x0 and y1 > y0:
            zones = np.zeros((rh, rw, 2), np.uint8)
            zones[..., 0] = head.view(np.uint8) * 255
            zones[..., 1] = neck.view(np.uint8) * 255
            minv[:, 2] -= (x0, y0)
            roi = cv2.warpAffine(zones, minv, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR, borderValue=0)
            sub, psub = labels[y0:y1, x0:x1], person[y0:y1, x0:x1]
            sub[(roi[..., 1] > 127) & psub] = NECK
            sub[(roi[..., 0] > 127) & psub] = HEAD
    cv2.fillPoly(labels, [np.round(outline).astype(np.int32)], HEAD)  # the face, even where the person mask missed it
    return labels


def _head_zone(routline, uv, layout, p, uu, vv, rw, rh):
    """Above the jaw line (continued sideways at jaw-angle level, so ears and hair beside the
    face are in) and inside the head ellipse (above its centre: a vertical strip, for hair)."""
    n = len(routline)
    jl, jr = layout.jaw_left, layout.jaw_right
    # the outline loop runs top -> image-left side -> chin -> image-right side -> top;
    # its lower part pushed outwards from the face centre: landmarks sit inside the jaw's edge
    lower = np.array([routline[(jl + k) % n] for k in range((jr - jl) % n + 1)])
    centre = routline.mean(0)
    out = lower - centre
    out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-6
    lower = lower + out * (p.jaw_margin * RECT_SCALE)
    poly = np.concatenate([[(-1, lower[0, 1])], lower, [(rw, lower[-1, 1]), (rw, -1), (-1, -1)]])
    zone = np.zeros((rh, rw), np.uint8)
    cv2.fillPoly(zone, [np.round(poly).astype(np.int32)], 1)

    u_c = 0.5 * (uv[:, 0].min() + uv[:, 0].max())
    half_w = 0.5 * (uv[:, 0].max() - uv[:, 0].min()) * p.ellipse_width
    t = np.clip((vv - p.ellipse_centre) / p.ellipse_height, 0.0, 1.0)
    inside = np.abs(uu - u_c) <= half_w * np.sqrt(1.0 - t * t)
    return zone.view(bool) & inside


def _neck_zone(rperson, head, skin, uv, layout, p, state, uu, vv, rows):
    """Below the jaw, inside a band that follows the face width, down to the shoulders or the
    collar (where skin stops), whichever comes first."""
    rh, rw = rperson.shape
    chin_u, chin_v = uv[layout.chin]
    face_half = 0.5 * (uv[:, 0].max() - uv[:, 0].min())
    col = int(np.clip(round((chin_u - RECT_U[0]) * RECT_SCALE), 0, rw - 1))
    row0 = int(np.clip(round((chin_v - RECT_V[0]) * RECT_SCALE), 0, rh - 1))
    min_rows = int(round(p.neck_min * RECT_SCALE))

    # shoulders: first row under the chin where the silhouette run through the neck is wide
    lo = min(rh - 1, row0 + min_rows)
    hi = min(rh - 1, row0 + int(p.neck_max * RECT_SCALE))
    need = p.shoulder_width * RECT_SCALE
    shoulder = hi
    block = rperson[lo:hi + 1]
    if block.size:
        # leading True runs left and right of the neck column, per row
        left = np.argmin(block[:, col::-1], axis=1)
        left[block[:, col::-1].all(1)] = col + 1
        right = np.argmin(block[:, col:], axis=1)
        right[block[:, col:].all(1)] = rw - col
        wide = block[:, col] & ((np.minimum(left, right) >= need) | (left + right >= 2 * need))
        if wide.any():
            shoulder = lo + int(np.argmax(wide))
    if state.shoulder is not None and p.smooth > 0:
        shoulder = p.smooth * state.shoulder + (1 - p.smooth) * shoulder
    state.shoulder = float(shoulder)
    shoulder_v = state.shoulder / RECT_SCALE + RECT_V[0]

    frac = np.clip((vv - chin_v) / max(shoulder_v - chin_v, 1e-3), 0.0, 1.0)
    half = face_half * (p.neck_top_width + (p.neck_bottom_width - p.neck_top_width) * frac)
    band = (np.abs(uu - chin_u) <= half) & (vv <= shoulder_v) & (vv >= uv[:, 1].min())

    # collar: per column, the neck ends where a run of non-skin starts below the jaw
    k = max(2, int(round(p.collar_run * RECT_SCALE)))
    nonskin = (~(skin & rperson)).view(np.uint8).astype(np.float32)
    runs = cv2.boxFilter(nonskin, -1, (1, k), anchor=(0, 0), normalize=True,
                         borderType=cv2.BORDER_CONSTANT) > 0.99
    head_rows = np.where(head.any(0), rh - 1 - np.argmax(head[::-1], axis=0), row0)
    start = head_rows + 1 + min_rows
    cand = runs & (rows >= start[None, :])
    first = np.where(cand.any(0), np.argmax(cand, axis=0), rh)
    bottom = _median5(np.minimum(first, state.shoulder).astype(np.float32))
    if state.neck_bottom is not None and p.smooth > 0 and state.neck_bottom.shape == bottom.shape:
        bottom = p.smooth * state.neck_bottom + (1 - p.smooth) * bottom
    state.neck_bottom = bottom
    return band & (rows < bottom[None, :])


def _clusters(samples: np.ndarray, k: int) -> list[Gaussian]:
    """Colour models of up to k clusters (k-means) of the samples; clusters under 20 samples dropped."""
    if len(samples) < 30:
        return []
    x = samples.reshape(-1, samples.shape[-1]).astype(np.float32)
    if len(x) > 2000:
        x = x[:: len(x) // 2000 + 1]
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    cv2.setRNGSeed(0)
    _, idx, _ = cv2.kmeans(x, k, None, crit, 1, cv2.KMEANS_PP_CENTERS)
    out = []
    for j in range(k):
        g = Gaussian.fit(x[idx.ravel() == j], floor=4.0) if (idx == j).sum() >= 20 else None
        if g is not None:
            out.append(g)
    return out


def _median5(x: np.ndarray) -> np.ndarray:
    """Median over 5 neighbours (edges repeated): removes one-column spikes in the collar line."""
    pad = np.pad(x, 2, mode="edge")
    return np.median(np.stack([pad[i:i + len(x)] for i in range(5)]), 0)


def _long_hair(rimg, rperson, head, uv, layout, p, state, uu, vv):
    """Hair below the jaw line: person pixels beside / over the neck coloured like the hair above
    the face (and unlike skin and clothes), connected to hair beside the face. None when there is
    nothing to add. Colours in Lab with lightness: blond or brown hair has skin's chromaticity."""
    jaw_v = max(uv[layout.jaw_left][1], uv[layout.jaw_right][1])
    chin_v = uv[layout.chin][1]
    below = rperson & ~head & (vv > jaw_v - 0.1) & (vv < chin_v + 1.4)
    if not below.any() or state.skin_lab is None:
        return None
    lab = cv2.cvtColor(rimg, cv2.COLOR_RGB2LAB)
    d_skin = state.skin_lab.distance(lab)
    face_half = 0.5 * (uv[:, 0].max() - uv[:, 0].min())
    u_c = 0.5 * (uv[:, 0].min() + uv[:, 0].max())
    du = np.abs(uu - u_c)
    if state.hair is None or state.frame % 10 == 0:  # colour models: refreshed every 10 frames
        face_top = uv[:, 1].min()
        src = head & (d_skin > p.hair_threshold) & ((vv < face_top + 0.05) | ((du > face_half * 1.1) & (vv < jaw_v)))
        if src.sum() >= 30:
            state.hair = Gaussian.fit(lab[src], floor=4.0)
        # clothes: the chest under the chin, where hanging hair rarely is; two colour clusters
        cl = rperson & (vv > chin_v + 0.6) & (np.abs(uu - uv[layout.chin][0]) < face_half) & (d_skin > p.hair_threshold)
        state.clothes = _clusters(lab[cl], 2)
    if state.hair is None:
        return None
    if any(c.distance(state.hair.mean[None])[0] < p.hair_threshold for c in state.clothes):
        return None  # hair and clothes alike (dark hair, dark jacket): a colour cut would be a guess
    d_hair = state.hair.distance(lab)
    hairy = (d_hair < p.hair_threshold) & (d_hair < d_skin)
    for c in state.clothes:
        hairy &= d_hair < 0.7 * c.distance(lab)
    # not in front of the throat: the shadow under the chin looks like dark hair, and hair
    # hangs beside the neck far more often than over it
    cand = below & hairy & (np.abs(uu - uv[layout.chin][0]) > 0.8 * face_half)
    if not cand.any():
        return None
    cand = cv2.morphologyEx(cand.view(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).view(bool)
    if not cand.any():
        return None
    # hanging hair is hair beside the face already above the jaw line, flowing on downwards: a
    # component must touch hair-coloured head pixels beside the lower face (a brown jacket next
    # to brown hair touches the head, if at all, at the collar, with skin or background above)
    face = np.zeros(head.shape, np.uint8)
    cv2.fillPoly(face, [np.round(_from_rect_units(uv)).astype(np.int32)], 1)
    face = cv2.dilate(face, np.ones((5, 5), np.uint8)).view(bool)  # the face's own shadows and stubble: not hair
    sides = head & hairy & ~face & (vv > jaw_v - 0.3)
    if sides.sum() < 0.005 * RECT_SCALE ** 2:
        return None
    gate = cv2.dilate(sides.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    n, comp = cv2.connectedComponents(cand.view(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[cand & gate])] = True
    keep[0] = False
    return keep[comp] & (du < 2.0 * face_half)
