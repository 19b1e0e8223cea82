"""Portrait blending (head.portrait_blend): the mask follows the template's face, nothing outside
it changes, and there is no seam: the gradient across the mask's border is no larger than
elsewhere in the frame, even when the render is brighter than the template."""
import cv2
import numpy as np
import pytest

from talkctl.head.portrait_blend import BlendSettings, blend, portrait_mask
from talkctl.parsing.regions import HEAD, MP_OVAL, NECK, TORSO, mediapipe_layout

S = 160
CX, CY, RX, RY = 80.0, 70.0, 30.0, 40.0  # the face outline: an ellipse


def _landmarks() -> np.ndarray:
    """478 mediapipe points; only the face oval is used: forehead top first, down the image-left side."""
    lm = np.zeros((478, 2), np.float64)
    for k, idx in enumerate(MP_OVAL):
        phi = -np.pi / 2 - k * 2 * np.pi / len(MP_OVAL)
        lm[idx] = (CX + RX * np.cos(phi), CY + RY * np.sin(phi))
    return lm


def _labels() -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S]
    lab = np.zeros((S, S), np.uint8)
    lab[(yy > CY + 20) & (abs(xx - CX) < 18)] = NECK
    lab[yy > CY + 60] = TORSO
    lab[((xx - CX) / (RX + 6)) ** 2 + ((yy - CY + 6) / (RY + 8)) ** 2 <= 1] = HEAD
    return lab


def _texture(seed: int, amp: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.normal(0, 1, (S, S, 3)).astype(np.float32), (0, 0), 1.2)
    return amp * t / t.std()


def _scene():
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    base = 0.35 + 0.3 * (xx / S)[..., None] + 0.1 * (yy / S)[..., None] + np.zeros((1, 1, 3), np.float32)
    template = np.clip(base + _texture(1, 0.03), 0, 1)
    face = ((xx - CX) / (RX + 10)) ** 2 + ((yy - CY) / (RY + 14)) ** 2 <= 1
    alpha = face.astype(np.float32)
    # the render: another texture of the same strength, 0.12 brighter than the template
    head = np.clip(base + 0.12 + _texture(2, 0.03), 0, 1) * alpha[..., None]
    return (template * 255 + 0.5).astype(np.uint8), head.astype(np.float32), alpha


def _gradient(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float32).mean(-1)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))


def _border_vs_elsewhere(out: np.ndarray, raw: np.ndarray) -> float:
    """Mean gradient on the mask's border (2 px either side of the edge of the region the render
    may touch) over the mean gradient everywhere else."""
    k = np.ones((5, 5), np.uint8)
    edge = cv2.dilate(raw.astype(np.uint8), k).astype(bool) & ~cv2.erode(raw.astype(np.uint8), k).astype(bool)
    g = _gradient(out)
    return float(g[edge].mean() / g[~edge].mean())


@pytest.mark.parametrize("region", ["lower", "head"])
def test_no_seam_at_the_mask_border(region):
    template, head, alpha = _scene()
    labels, lm = _labels(), _landmarks()
    settings = BlendSettings(region=region)
    mask, face_h = portrait_mask(labels, lm, mediapipe_layout(478), settings)
    assert face_h == pytest.approx(2 * RY, rel=0.02)
    assert mask.max() == pytest.approx(1.0) and mask.min() == 0.0
    support = mask > 0
    if region == "lower":  # under the eyes only: nothing above the face centre
        assert not support[: int(CY) - 2].any() and support[int(CY) + 15, int(CX)]
    out = blend(head, alpha, template, template, labels, mask, face_h, settings)
    assert np.array_equal(out[~support], template[~support])  # nothing outside the mask changes
    ratio = _border_vs_elsewhere(out, support)
    # the same render pasted hard (no feather, no colour match) does show a seam: the test can fail
    hard = template.copy()
    hard[support] = (np.clip(head, 0, 1)[support] * 255 + 0.5).astype(np.uint8)
    assert _border_vs_elsewhere(hard, support) > 1.6
    # ... and so does the feather alone, with the render's brightness left as it is
    plain = blend(head, alpha, template, template, labels, mask, face_h, BlendSettings(region=region, colour_max=0.0))
    assert _border_vs_elsewhere(plain, support) > 1.2
    assert ratio <= 1.1, ratio


def test_colour_is_matched_inside():
    """The render 0.12 brighter than the template comes out within ~0.03 of it inside the face."""
    template, head, alpha = _scene()
    labels = _labels()
    mask, face_h = portrait_mask(labels, _landmarks(), mediapipe_layout(478))
    out = blend(head, alpha, template, template, labels, mask, face_h)
    inner = mask > 0.99
    assert inner.sum() > 300
    diff = out[inner].astype(np.float32).mean() - template[inner].astype(np.float32).mean()
    assert abs(diff) < 0.03 * 255, diff


def test_no_track_leaves_the_template():
    labels = _labels()
    bad = np.full((478, 2), np.nan)
    mask, _ = portrait_mask(labels, bad, mediapipe_layout(478))
    assert not mask.any()
    template, head, alpha = _scene()
    assert np.array_equal(blend(head, alpha, template, template, labels, mask, 0.0), template)
