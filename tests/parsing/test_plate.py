"""The background plate's fill (parsing.plate): never-seen pixels are a smooth continuation of
their surroundings, with no streaks; rarely seen pixels mix their own median with the fill."""
import cv2
import numpy as np

from talkctl.parsing.plate import PlateBuilder, fill


def _background(S: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return np.stack([60 + xx, 90 + 0.5 * yy, 200 - 0.6 * xx], -1).clip(0, 255).astype(np.uint8)


def _hole(S: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:S, 0:S]
    return ((xx - 64) / 30.0) ** 2 + ((yy - 80) / 40.0) ** 2 <= 1


def test_fill_is_a_smooth_continuation():
    bg, hole = _background(), _hole()
    img = bg.copy()
    img[hole] = 0
    # a few dark specks on the hole's border: a border-marching inpaint drags them into streaks
    ring = cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~hole
    specks = np.flatnonzero(ring.ravel())[::9]
    img.reshape(-1, 3)[specks] = 20
    out = fill(img, (~hole).astype(np.float32))
    assert np.array_equal(out[~hole], img[~hole])  # seen pixels are kept as they are
    err = np.abs(out[hole].astype(np.float32) - bg[hole]).mean()
    telea = cv2.inpaint(img, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    err_telea = np.abs(telea[hole].astype(np.float32) - bg[hole]).mean()
    assert err < 12 and err < err_telea, (err, err_telea)
    # smooth: the Laplacian inside the hole is small (no streaks, no blocks)
    def roughness(x):
        return np.abs(cv2.Laplacian(x.astype(np.float32), cv2.CV_32F)).mean(-1)[inner].mean()

    inner = cv2.erode(hole.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    assert roughness(out) < 1.5 and roughness(out) < 0.6 * roughness(telea), (roughness(out), roughness(telea))


def test_rarely_seen_pixels_mix_their_median_with_the_fill():
    S = 64
    bg = _background(S)
    b = PlateBuilder(10, S, S)
    hole = np.zeros((S, S), bool)
    hole[20:40, 20:40] = True
    for k in range(10):
        mask = ~hole
        if k == 0:
            mask = mask | (hole & (np.arange(S)[None, :] < 30))  # left half of the hole seen once
        b.add(bg, mask)
    plate, seen = b.finish(min_count=4)
    assert not seen[hole].any() and seen[~hole].all()
    assert np.array_equal(plate[~hole], bg[~hole])
    # seen once (1/4 of min_count): closer to the truth than the never-seen right half
    left = np.abs(plate[20:40, 20:30].astype(float) - bg[20:40, 20:30]).mean()
    right = np.abs(plate[20:40, 30:40].astype(float) - bg[20:40, 30:40]).mean()
    assert left < right + 1e-6 and right < 12


def test_all_unseen_is_grey():
    img = np.zeros((16, 16, 3), np.uint8)
    assert (fill(img, np.zeros((16, 16), np.float32)) == 127).all()
