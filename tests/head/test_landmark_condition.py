"""train-deform --condition landmarks on the tiny generated scene (tests/fixtures/gs_scene.py + lm_scene.py).

The scene's mouth blob moves with a synthetic signal; its landmarks (iBUG-68 layout) move with it.
A head trained on them must explain the mouth better than one trained on still landmarks, and
editing the landmarks' mouth opening must move the rendered mouth.
"""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from gs_scene import make_scene, run_frames
from lm_scene import MOUTH, add_landmarks
from talkctl.errors import ArtifactError, InputError, UsageError
from talkctl.pipeline import run_stage
from talkctl.rundir import RunDir
from talkctl.head.field import build_condition
from talkctl.head.models import load_head
from talkctl.head.landmark_condition import LandmarkCondition, apply_edit, parse_edit
from talkctl.head.landmark_source import resolve_landmarks
from talkctl.gs.training import psnr

SIZE = 32
STATIC = dict(resolution=SIZE, head_gaussians=300, head_iterations=120, torso_iterations=20, val_every=40)
# the scene's 68 points are sparse (20 around the mouth, ~0.05 apart): a kernel wider than the default.
# 400 steps: at 200 whether the field had found the mouth yet depended on the CPU's rounding (an Intel
# Xeon: 1.8 dB lip margin where AMD EPYC gave 3.9), on ulp-level changes (tcnn-exact grid scales) and on
# the seed (seeds 4, 5: 0.7, 0.3 dB). At 400, over seeds 0-7 and other float paths
# (ATEN_CPU_CAPABILITY=default, MKL_CBWR=COMPATIBLE), the lip margin was 3.9-8.2 dB and the whole-head
# margin 1.35-5.8 dB; the asserts below leave room under the worst of them.
DEFORM = dict(resolution=SIZE, iterations=400, val_every=100, lr_mlp=3e-3, condition="landmarks", landmark_sigma=0.15)
LIPS = (slice(None), slice(int(SIZE * 0.5), int(SIZE * 0.9)), slice(int(SIZE * 0.25), int(SIZE * 0.75)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """(moving run, still run, signal, true landmarks): both trained with condition=landmarks."""
    base = tmp_path_factory.mktemp("lm")
    run, sig = make_scene(base / "moving", T=33, size=SIZE)
    pts = add_landmarks(run, sig, moving=True)
    run_stage("init-static", run, preset="tiny", device="cpu", overrides=STATIC)
    shutil.copytree(run.path, base / "still")
    still = RunDir(base / "still")
    add_landmarks(still, sig, moving=False)
    for r in (run, still):
        run_stage("train-deform", r, preset="tiny", device="cpu", overrides=DEFORM)
    return run, still, sig, pts


def test_landmark_condition_learns_the_mouth(lm_runs):
    run, still, sig, pts = lm_runs
    idx = np.nonzero(np.abs(sig - np.median(sig)) > 0.25)[0]
    fr, head, w2c, K = run_frames(run, idx)
    scores = {}
    for name, r, lm in (("moving", run, pts), ("still", still, np.repeat(pts.mean(0, keepdims=True), len(pts), 0))):
        h = load_head(r.path)
        assert h.condition_name == "landmarks" and h.field.eye_dim == 0
        h.set_landmarks(lm)
        out = h.render(idx, w2c, K, SIZE)
        scores[name] = (psnr(out.rgb, fr * head, head), psnr(out.rgb[LIPS], (fr * head)[LIPS]))
    assert scores["moving"][1] > scores["still"][1] + 2.0, scores  # the lips: what moving landmarks explain
    assert scores["moving"][0] > scores["still"][0], scores  # and no worse over the whole head
    with h5py.File(run.path / "deform.h5") as f:
        assert f.attrs["condition"] == "landmarks"
        spec = json.loads(f.attrs["condition_spec"])
        assert spec["name"] == "landmarks" and spec["n_landmarks"] == 68
        assert set(MOUTH) <= set(f["landmark_indices"][()].tolist())
        assert f["landmark_neutral"].shape == (68, 3)
        assert f.attrs["landmark_sigma"] == pytest.approx(0.15) and "audio_mean" not in f
        np.testing.assert_allclose(f["landmark_neutral"][()][MOUTH], pts[:30, MOUTH].mean(0), atol=0.02)


def _mouth_row(out):
    """Mean row of the dark (mouth blob) pixels inside the rendered head."""
    dark = (out.alpha[0, ..., 0] > 0.5) & (out.rgb[0].mean(-1) < 0.3)
    return float(torch.nonzero(dark)[:, 0].float().mean())


def test_mouth_opening_edit_moves_the_rendered_mouth(lm_runs):
    """The issue's test: scaling the landmarks' mouth offsets (x0, x1, x2) changes the rendered mouth."""
    run, still, sig, pts = lm_runs
    # a training frame a little open: x2 stays inside the range of openings seen in training
    off = sig[:30] - sig[:30].mean()
    t = int(np.argmin(np.abs(off - 0.45 * off.max())))
    fr, head, w2c, K = run_frames(run, [t])
    h = load_head(run.path)
    with h5py.File(run.path / "deform.h5") as f:
        neutral = f["landmark_neutral"][()]
    renders = {}
    for s in (0.0, 1.0, 2.0):
        h.set_landmarks(apply_edit(pts, neutral, 68, {"mouth_scale": s}))
        renders[s] = h.render([t], w2c, K, SIZE)
    rows = {s: _mouth_row(renders[s]) for s in renders}
    renders = {s: o.rgb for s, o in renders.items()}
    diff = {s: float((renders[s][LIPS] - renders[1.0][LIPS]).abs().mean()) for s in (0.0, 2.0)}
    assert diff[0.0] > 0.01 and diff[2.0] > 0.01, diff
    assert rows[0.0] < rows[1.0] < rows[2.0], rows  # the mouth opens downwards (+y) with the scale
    # outside the lip region the edit changes little
    top = (slice(None), slice(0, int(SIZE * 0.35)))
    assert float((renders[0.0][top] - renders[1.0][top]).abs().mean()) < 0.3 * diff[0.0]


def test_condition_unit_codes_and_edits():
    rng = np.random.default_rng(0)
    neutral = rng.normal(size=(68, 3)).astype(np.float32) * 0.3
    idx = np.arange(48, 68)
    cond = LandmarkCondition(idx, 68, k=4, sigma=0.1, scale=0.05, neutral=neutral)
    lm = np.repeat(neutral[None], 5, 0)
    lm[2, idx, 1] += 0.05
    cond.set_source(landmarks=lm)
    code = cond.encode(torch.arange(5))
    assert code.shape == (5, 60) and torch.allclose(code[0], torch.zeros(60))
    assert torch.allclose(code[2].reshape(20, 3)[:, 1], torch.ones(20), atol=1e-5)
    means = torch.as_tensor(neutral[idx] + 0.02)  # Gaussians next to the mouth points
    far = torch.full((3, 3), 5.0)
    pg = cond.per_gaussian(code, torch.cat([means, far]))
    assert pg.shape == (5, 23, 7)
    assert torch.allclose(pg[0, :, 3:6], torch.zeros(23, 3), atol=1e-6)  # neutral face: no local motion
    assert float(pg[2, :20, 4].abs().min()) > 0.05  # the mouth moved: Gaussians near it see it
    assert float(pg[:, 20:].abs().max()) < 1e-6  # far from every landmark: no code
    # neighbour sets: kept while an optimizer moves the means in place, rebuilt for a new set
    gauss = torch.nn.Parameter(torch.cat([means, far]))
    nbr = cond.neighbours(gauss)
    with torch.no_grad():
        gauss.add_(0.001)  # an Adam step bumps the version, not the set
    assert cond.neighbours(gauss) is nbr
    assert cond.neighbours(torch.nn.Parameter(gauss.detach()[:-1].clone())) is not nbr
    # spec + state rebuild it (what deform.h5 stores)
    again = build_condition(cond.spec(), cond.state_dict())
    again.set_source(landmarks=lm)
    assert torch.allclose(again.encode(torch.arange(5)), code)
    with pytest.raises(UsageError, match="68"):
        cond.set_source(landmarks=np.zeros((5, 478, 3)))
    # edits
    assert parse_edit("mouth_scale=1.5, eyes_open=1") == {"mouth_scale": 1.5, "eyes_open": 1.0}
    with pytest.raises(UsageError, match="unknown key"):
        parse_edit("smile=1")
    with pytest.raises(UsageError, match="key=value"):
        parse_edit("mouth_scale")
    e = apply_edit(lm, neutral, 68, {"mouth_scale": 2.0})
    np.testing.assert_allclose(e[2, idx] - neutral[idx], 2 * (lm[2, idx] - neutral[idx]), atol=1e-6)
    lm[3, 36:48] += 0.1
    e = apply_edit(lm, neutral, 68, "eyes_open=1")
    np.testing.assert_allclose(e[3, 36:48], neutral[36:48], atol=1e-6)
    np.testing.assert_allclose(e[2], lm[2], atol=1e-6)


def landmark_source(run, audio_features=None, other_run=None, edit=None):
    """(T, L, 3): another run's landmarks (re-enactment) when other_run is given, else a2l's for audio_features."""
    source = str(other_run) if other_run is not None else "a2l"
    return resolve_landmarks(run, source, audio_features=audio_features, edit=edit).landmarks


def test_landmark_sources_a2l_reenactment_track_and_edit(lm_runs, tmp_path):
    from talkctl.head.a2l_predict import load_predictor

    run, still, sig, pts = lm_runs
    with h5py.File(run.path / "deform.h5") as f:
        neutral = f["landmark_neutral"][()]
    with h5py.File(run.path / "audio.h5") as f:
        feats = f["features"][()]
    # a2l: its predicted offsets of the moving points on this head's neutral face
    with pytest.raises(ArtifactError, match="train-a2l"):
        landmark_source(run, audio_features=feats)
    run_stage("train-a2l", run, preset="tiny", device="cpu",
              overrides={"iterations": 40, "seq_len": 8, "batch": 4, "d_model": 32})
    lm = landmark_source(run, audio_features=feats[:20])
    pred = load_predictor(run)
    assert lm.shape == (20, 68, 3)
    still_pts = np.setdiff1d(np.arange(68), pred.indices)
    np.testing.assert_allclose(lm[:, still_pts], np.broadcast_to(neutral[still_pts], (20, len(still_pts), 3)), atol=1e-6)
    np.testing.assert_allclose(lm[:, pred.indices] - neutral[pred.indices], pred.offsets(feats[:20]), atol=1e-5)
    # re-enactment: the moving run's motion on the still run's head (same neutral face here)
    re = landmark_source(still, other_run=run.path)
    np.testing.assert_allclose(re[:, MOUTH], pts[:, MOUTH], atol=0.02)
    # and the still run's (no) motion on the moving head: its neutral face throughout
    np.testing.assert_allclose(landmark_source(run, other_run=still.path), np.broadcast_to(neutral, (33, 68, 3)), atol=1e-4)
    # the run's own tracked landmarks, held-out frames, with an edit recorded in the description
    d = resolve_landmarks(run, "track", frames=np.arange(30, 33), edit="mouth_scale=0")
    assert d.landmarks.shape == (3, 68, 3) and "mouth_scale=0" in d.description and d.edit == {"mouth_scale": 0.0}
    np.testing.assert_allclose(d.landmarks[:, MOUTH], np.broadcast_to(neutral[MOUTH], (3, 20, 3)), atol=1e-6)
    with pytest.raises(InputError, match="re-enactment"):
        landmark_source(run, other_run=tmp_path / "nope")


def test_landmark_source_refuses_an_audio_head(tmp_path):
    from talkctl import artifacts
    r = RunDir(tmp_path / "audio_run")
    with artifacts.write(r, "deform", producer="test", fingerprint="x", config={}, inputs={}) as f:
        f.attrs["condition"] = "audio"
    with pytest.raises(UsageError, match="condition landmarks"):
        landmark_source(r, audio_features=np.zeros((3, 4, 3), np.float32))


# ---- the image torso (train-torso --mode image) on the landmark-driven head -------------------
def test_image_torso_learns_and_composites(lm_runs, capsys):
    from talkctl.cli import main
    from talkctl.head.models import composite, load_torso
    from talkctl.head.torso_image import ImageTorsoModel

    run, still, sig, pts = lm_runs
    rc = main(["train-torso", "--run", str(run.path), "--mode", "image", "--preset", "tiny", "--device", "cpu",
               "-q", "--json", "--set", f"resolution={SIZE}", "--set", "val_every=20"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["mode"] == "image" and s["n_parameters"] > 1000
    with h5py.File(run.path / "torso.h5") as f:
        curve = f["val_psnr"][()]
        assert f.attrs["mode"] == "image" and "net" in f and f["background"].shape == (SIZE, SIZE, 3)
    assert curve[-1, 1] > curve[0, 1] + 3.0, curve
    idx = np.array([30, 31, 32])
    fr, head_mask, w2c, K = run_frames(run, idx)
    head, torso = load_head(run.path), load_torso(run.path)
    assert isinstance(torso, ImageTorsoModel) and torso.mode == "image"
    head.set_landmarks(pts)
    h_out = head.render(idx, w2c, K, SIZE)
    with pytest.raises(UsageError, match="head_rgb"):
        torso.render(w2c, K, SIZE)
    t_out = torso.render(w2c, K, SIZE, head_rgb=h_out.rgb, head_alpha=h_out.alpha)
    assert t_out.rgb.shape == (3, SIZE, SIZE, 3) and t_out.alpha.shape == (3, SIZE, SIZE, 1)
    img = composite(torso.attrs["background"], t_out, h_out)
    assert img.shape == (3, SIZE, SIZE, 3)
    assert psnr(img, fr) == pytest.approx(s["psnr_full"], abs=0.5)
    # another output size: the network runs at its training size, outputs are resized
    big = head.render(idx, w2c, K * 2 * np.array([[1], [1], [0.5]]), 2 * SIZE)
    assert torso.render(w2c, None, 2 * SIZE, head_rgb=big.rgb, head_alpha=big.alpha).rgb.shape == (3, 2 * SIZE, 2 * SIZE, 3)
    # the Gaussian torso still trains on a landmark-driven head (the head is driven by the tracked landmarks)
    g = run_stage("train-torso", still, preset="tiny", device="cpu", overrides=dict(resolution=SIZE, iterations=10, val_every=10))
    with h5py.File(still.path / "torso.h5") as f:
        assert f.attrs["mode"] == "gaussian" and g["n_gaussians"] > 0


def test_landmarks_for_drive_choices(lm_runs, tmp_path):
    """What render/eval call: auto picks a2l (present after the a2l test) or the track; audio heads refuse edits."""
    from talkctl.head.landmark_source import landmarks_for_drive

    run, still, sig, pts = lm_runs
    with h5py.File(run.path / "audio.h5") as f:
        feats = f["features"][()]
    d = landmarks_for_drive(still, feats[30:], source_frames=np.arange(30, 33))  # still has no a2l.h5
    assert "tracked" in d.description and d.landmarks.shape == (3, 68, 3)
    with pytest.raises(ArtifactError, match="train-a2l"):
        landmarks_for_drive(still, feats[:5])
    long = np.concatenate([feats, feats])  # longer than the other run: its frames are cycled
    d = landmarks_for_drive(still, long, cfg={"landmarks": str(run.path), "edit": "eyes_open=1"})
    assert d.landmarks.shape == (66, 68, 3) and "re-enactment" in d.description and "eyes_open=1" in d.description
    d = landmarks_for_drive(still, feats[:7], cfg={"landmarks": "track"})
    assert d.landmarks.shape == (7, 68, 3)
    # an audio-driven head: nothing to do, unless landmarks or an edit are asked for
    from talkctl import artifacts

    r = RunDir(tmp_path / "audio_run")
    with artifacts.write(r, "deform", producer="test", fingerprint="x", config={}, inputs={}) as f:
        f.attrs["condition"] = "audio"
    assert landmarks_for_drive(r, feats) is None
    with pytest.raises(UsageError, match="landmark-driven"):
        landmarks_for_drive(r, feats, cfg={"edit": "mouth_scale=2"})
