"""Head / neck / torso cut on a real photo (skimage's astronaut): hair, turtleneck, long hair."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from fake_track import face_mesh
from talkctl.parsing import regions as hr


@pytest.fixture(scope="module")
def astronaut():
    import mediapipe as mp
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[0:330, 20:350])
    lm, valid = face_mesh(img[None])
    assert valid[0]
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        person = seg.process(img).segmentation_mask > 0.5
    return img, lm[0], person


def _geometry(lm):
    lay = hr.mediapipe_layout(478)
    out = lay.outline(lm)
    top, chin = out[0], out[lay.chin]
    jaw_y = max(out[lay.jaw_left][1], out[lay.jaw_right][1])
    return top, chin, jaw_y, out[:, 0].min(), out[:, 0].max()


def test_hair_is_head_and_turtleneck_is_torso(astronaut):
    img, lm, person = astronaut
    labels = hr.split_person(img, person, lm, hr.mediapipe_layout(478))
    top, chin, jaw_y, x0, x1 = _geometry(lm)
    # everything of the person above the forehead landmark is hair -> head
    above = person.copy()
    above[int(top[1]):] = False
    assert (labels[above] == hr.HEAD).mean() > 0.97
    # her black turtleneck, well below the chin: torso, not neck
    h = chin[1] - top[1]
    y, x = int(chin[1] + 0.35 * h), int(chin[0])
    patch = labels[y - 3:y + 4, x - 10:x + 11]
    assert img[y, x].max() < 80  # (it is the dark turtleneck)
    assert (patch == hr.TORSO).mean() > 0.9
    # the face oval is head, and nothing of the head hangs far below the chin
    assert (labels[int(chin[1] + 0.3 * h):] == hr.HEAD).sum() == 0


def test_long_hair_below_the_jaw_stays_with_the_head(astronaut):
    img, lm, person = astronaut
    top, chin, jaw_y, x0, x1 = _geometry(lm)
    h = chin[1] - top[1]
    hair_colour = np.median(img[int(top[1]) - 10:int(top[1]), int(x0) + 10:int(x1) - 10].reshape(-1, 3), 0)
    strands = np.zeros(person.shape, np.uint8)
    for side, xs in ((-1, x0), (1, x1)):  # two locks from the temples down onto the shoulders
        pts = np.array([[xs + side * 4, top[1] + 0.3 * h], [xs + side * 10, jaw_y],
                        [xs + side * 16, chin[1] + 0.6 * h]], np.int32)
        cv2.polylines(strands, [pts], False, 1, thickness=int(0.12 * h))
    strands = strands.astype(bool)
    img2 = img.copy()
    img2[strands] = hair_colour.astype(np.uint8)
    person2 = person | strands
    below = strands & (np.arange(img.shape[0])[:, None] > jaw_y + 0.1 * h)
    lay = hr.mediapipe_layout(478)
    with_hair = hr.split_person(img2, person2, lm, lay, hr.RegionParams(long_hair=True))
    without = hr.split_person(img2, person2, lm, lay, hr.RegionParams(long_hair=False))
    assert (with_hair[below] == hr.HEAD).mean() > 0.7
    assert (without[below] == hr.HEAD).mean() < 0.3
    # the suit under the locks is not taken along
    suit = person & ~strands & (np.arange(img.shape[0])[:, None] > chin[1] + 0.5 * h)
    assert (with_hair[suit] == hr.HEAD).mean() < 0.02


def test_68_point_landmarks_give_a_head_too(astronaut):
    img, lm, person = astronaut
    # a rough iBUG-68 set from mediapipe points (jaw, brows, nose, mouth, eyes)
    mp_for_68 = [127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
                 70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 168, 197, 5, 4, 75, 97, 2, 326, 305,
                 33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291,
                 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87]
    lm68 = lm[mp_for_68]
    labels = hr.split_person(img, person, lm68, hr.layout_for(68))
    inner = np.floor(lm68[17:]).astype(int)
    assert (labels[inner[:, 1], inner[:, 0]] == hr.HEAD).all()
    assert (labels == hr.TORSO).sum() > (labels == hr.HEAD).sum() * 0.5


def test_unknown_landmark_count_is_refused():
    with pytest.raises(ValueError, match="no face outline"):
        hr.layout_for(5)
