"""The brow raise (face.brows): normalised per subject, read from a track's landmarks through the
canonical head space (so a head turn or a move towards the camera is not a brow raise), and the
eye inputs (blink, brow) padded or cut to what a head was trained with."""
import numpy as np
import torch

from talkctl import artifacts
from talkctl.face.brows import BROWS, brow_gap, brow_raise, read_eye_inputs
from talkctl.head.models import fit_eye_columns
from talkctl.rundir import RunDir

BROW_IDX, EYE_IDX = BROWS[478]


def _face(rng) -> np.ndarray:
    """A canonical 478-point face (L,3): eye corners at y=0, brows 0.12 above (y towards the chin)."""
    pts = rng.uniform(-0.5, 0.5, (478, 3)) * [1, 1, 0.1]
    pts[list(EYE_IDX), 1] = 0.0
    pts[list(BROW_IDX), 1] = -0.12
    return pts


def test_brow_raise_is_zero_at_the_median_and_one_at_the_raised_level():
    rng = np.random.default_rng(0)
    face = _face(rng)
    gaps = np.concatenate([np.full(80, 0.12), np.linspace(0.12, 0.16, 20), [0.10, 0.30]])
    pts = np.repeat(face[None], len(gaps), 0)
    pts[:, list(BROW_IDX), 1] = -gaps[:, None]
    assert np.allclose(brow_gap(pts, 478), gaps, atol=1e-6)
    raise_ = brow_raise(pts, 478)
    assert abs(raise_[:80]).max() < 1e-5  # the usual brows: 0
    assert raise_[-2] < -0.2  # a frown: below 0
    assert raise_[-1] == 2.0  # clipped
    hi = np.percentile(gaps, 95)
    assert abs(raise_[np.argmin(abs(gaps[:100] - hi))] - 1.0) < 0.1


def _posed_track(run: RunDir, gaps: np.ndarray, shift_z: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """track.h5 whose 2D landmarks are a canonical face with these brow gaps, projected at these
    head poses; returns the blink written."""
    rng = np.random.default_rng(1)
    face = _face(rng)
    T = len(gaps)
    K = np.array([[500.0, 0, 128], [0, 500.0, 128], [0, 0, 1]])
    w2c = np.tile(np.eye(4), (T, 1, 1))
    c, s = np.cos(yaw), np.sin(yaw)
    w2c[:, 0, 0], w2c[:, 0, 2], w2c[:, 2, 0], w2c[:, 2, 2] = c, s, -s, c
    w2c[:, 2, 3] = 4.0 + shift_z
    pts = np.repeat(face[None], T, 0)
    pts[:, list(BROW_IDX), 1] = -gaps[:, None]
    cam = np.einsum("tij,tlj->tli", w2c[:, :3, :3], pts) + w2c[:, None, :3, 3]
    uv = (cam @ K.T)[..., :2] / cam[..., 2:3]
    blink = (np.arange(T) % 7 == 0).astype(np.float32)
    with artifacts.write(run, "track", fingerprint="track-brows", producer="test", config={}, inputs={}) as f:
        f["landmarks2d"] = uv.astype(np.float32)
        f["landmarks3d"] = np.concatenate([uv, cam[..., 2:3]], -1).astype(np.float32)
        f["valid"] = np.ones(T, bool)
        f["world_to_cam"] = w2c.astype(np.float32)
        f["intrinsics"] = K.astype(np.float32)
        f["canonical_shape"] = face.astype(np.float32)
        f["blink"] = blink
        f.attrs.update(landmark_backend="mediapipe", n_landmarks=478, rigid_indices=list(EYE_IDX), fps=25, size=256)
    return blink


def test_eye_inputs_follow_the_brows_not_the_head_pose(tmp_path):
    T = 60
    gaps = np.where(np.arange(T) % 20 < 5, 0.16, 0.12)  # brows up a quarter of the time
    run = RunDir(tmp_path / "run")
    blink = _posed_track(run, gaps, shift_z=np.sin(np.arange(T) / 5), yaw=0.3 * np.cos(np.arange(T) / 7))
    eye = read_eye_inputs(run)
    assert eye.shape == (T, 2) and eye.dtype == np.float32
    assert np.array_equal(eye[:, 0], blink)
    up = gaps > 0.14
    assert eye[up, 1].min() > 0.8 and abs(eye[~up, 1]).max() < 0.1  # the pose moved, the brow input did not
    assert np.array_equal(read_eye_inputs(run, slice(10, 30)), eye[10:30])  # normalised over the whole clip


def test_eye_inputs_without_usable_landmarks_are_the_blink_alone(tmp_path):
    run = RunDir(tmp_path / "run")
    with artifacts.write(run, "track", fingerprint="track-nolm", producer="test", config={}, inputs={}) as f:
        f["world_to_cam"] = np.tile(np.eye(4, dtype=np.float32), (5, 1, 1))
        f["blink"] = np.linspace(0, 1, 5, dtype=np.float32)
    eye = read_eye_inputs(run)
    assert eye.shape == (5, 1) and np.allclose(eye[:, 0], np.linspace(0, 1, 5))


def test_fit_eye_columns_pads_neutral_brows_and_drops_extra_columns():
    blink_only = torch.tensor([[0.0], [1.0]])
    assert fit_eye_columns(blink_only, 2).tolist() == [[0.0, 0.0], [1.0, 0.0]]
    both = torch.tensor([[0.5, 1.5], [0.0, -1.0]])
    assert fit_eye_columns(both, 1).tolist() == [[0.5], [0.0]]
    assert torch.equal(fit_eye_columns(both, 2), both)
