"""train-a2l: canonical landmarks, the audio-to-landmarks Transformer, a2l.h5 and the CLI.

The inputs are written directly as audio.h5 / track.h5 (artifacts.write): a synthetic
subject whose mouth and jaw offsets are a known smooth function of two feature channels,
seen through a moving, scaling head (landmarks3d in pixels), with a 68-point layout.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from talkctl import artifacts
from talkctl.cli import main
from talkctl.pipeline import run_stage
from talkctl.rundir import RunDir
from talkctl.face import canonical as cl
from talkctl.head import a2l_predict
from talkctl.stages import train_a2l

torch.set_num_threads(1)

RIGID_68 = (27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45, 0, 1, 2, 14, 15, 16)
NAMES = [f"logmel_{i}" for i in range(6)] + ["F1", "F2", "F3", "B1", "B2", "B3", "voicing", "log_energy"]
W = 8


def _smooth_noise(rng, n, d, sigma):
    from scipy.ndimage import gaussian_filter1d

    x = gaussian_filter1d(rng.standard_normal((n, d)), sigma, axis=0)
    return x / x.std(0)


def canonical_face(rng):
    shape = rng.normal(0, 0.25, (68, 3))
    shape[:, 2] = -0.5 + 0.05 * shape[:, 2]
    shape[36], shape[45] = (-0.325, 0.0, -0.55), (0.325, 0.0, -0.55)
    shape[62], shape[66] = (0.0, 0.45, -0.6), (0.0, 0.47, -0.6)
    return shape


def make_inputs(seed=0, T=275, noise_px=0.3, feature_noise=0.0, sigma=3.0):
    """(features (T,W,D), track dict, truth offsets (T,68,3) in canonical space)."""
    rng = np.random.default_rng(seed)
    D = len(NAMES)
    F = 4 * T + 8
    frames = _smooth_noise(rng, F, D, sigma)
    idx = np.clip(4 * np.arange(T)[:, None] + 2 - W // 2 + np.arange(W)[None], 0, F - 1)
    feats = frames[idx].astype(np.float32)
    centre = frames[4 * np.arange(T) + 2]
    opening = 0.06 * np.tanh(centre[:, 0] + 0.5 * centre[:, 6])  # driven by a mel and a formant channel
    width = 0.03 * np.tanh(centre[:, 1])
    canonical = canonical_face(rng)
    offsets = np.zeros((T, 68, 3))
    lower = [56, 57, 58, 65, 66, 67] + list(range(5, 12))
    upper = [50, 51, 52, 61, 62, 63]
    offsets[:, lower, 1] += opening[:, None]
    offsets[:, upper, 1] -= 0.3 * opening[:, None]
    offsets[:, [48, 60], 0] -= width[:, None]
    offsets[:, [54, 64], 0] += width[:, None]
    blink = np.clip(rng.normal(0, 1, T) - 2.0, 0, None) * 0.01  # eyelids: not predictable from audio
    offsets[:, [37, 38, 43, 44], 1] += blink[:, None]
    pts = canonical[None] + offsets
    # pose: rotation of a few degrees, scale ~200 px per unit, translation inside a 256 px crop
    from scipy.spatial.transform import Rotation

    ang = np.deg2rad(6.0) * _smooth_noise(rng, T, 3, 5.0)
    R = Rotation.from_rotvec(ang).as_matrix()
    s = 200.0 * (1.0 + 0.05 * _smooth_noise(rng, T, 1, 5.0))
    t = np.array([128.0, 128.0, 300.0]) + 5.0 * _smooth_noise(rng, T, 3, 5.0)
    lm3d = s[:, :, None] * np.einsum("tij,tlj->tli", R, pts) + t[:, None]
    lm3d += rng.normal(0, noise_px, lm3d.shape)
    # the same head seen by a perspective camera (world_to_cam = head pose, 4 units away)
    K = np.array([[600.0, 0, 128], [0, 600.0, 128], [0, 0, 1]])
    w2c = np.tile(np.eye(4), (T, 1, 1))
    w2c[:, :3, :3] = R
    w2c[:, :3, 3] = np.array([0.0, 0.0, 4.0]) + 0.05 * _smooth_noise(rng, T, 3, 5.0)
    cam = np.einsum("tij,tlj->tli", R, pts) + w2c[:, None, :3, 3]
    lm2d = (cam / cam[..., 2:3]) @ K.T
    lm2d = lm2d[..., :2] + rng.normal(0, noise_px, lm2d[..., :2].shape)
    if feature_noise:
        feats = feats + feature_noise * rng.standard_normal(feats.shape).astype(np.float32)
    track = {"landmarks3d": lm3d.astype(np.float32), "landmarks2d": lm2d.astype(np.float32),
             "valid": np.ones(T, bool), "canonical_shape": canonical.astype(np.float32),
             "world_to_cam": w2c.astype(np.float32), "intrinsics": K.astype(np.float32),
             "attrs": {"n_landmarks": 68, "rigid_indices": np.array(RIGID_68), "landmark_backend": "face-alignment"}}
    return feats, track, offsets


def write_inputs(run: RunDir, feats, track, audio=True, track_file=True):
    if audio:
        with artifacts.write(run, "audio", producer="test", fingerprint="a" * 32, config={}, inputs={}) as f:
            f.create_dataset("features", data=feats)
            f.attrs.update({"feature_names": json.dumps(NAMES), "extractor": "mel-formant", "window": W,
                            "feature_dim": len(NAMES), "fps": 25, "n_frames": len(feats)})
    if track_file:
        with artifacts.write(run, "track", producer="test", fingerprint="b" * 32, config={}, inputs={}) as f:
            for k, v in track.items():
                if k != "attrs":
                    f.create_dataset(k, data=v)
            f.attrs.update(track["attrs"])


TINY = {"iterations": 300, "d_model": 64, "layers": 2, "heads": 4, "seq_len": 32, "batch": 8, "lr": 2e-3,
        "lr_final": 2e-4, "eval_every": 150, "dropout": 0.0,
        "feature_noise": 0.0, "weight_decay": 1e-4, "pca_components": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    feats, track, offsets = make_inputs()
    run = RunDir(tmp_path_factory.mktemp("a2l") / "run")
    write_inputs(run, feats, track)
    summary = run_stage("train-a2l", run, preset="tiny", overrides=TINY, device="cpu")
    return run, summary, feats, offsets


# ---- canonical landmarks -----------------------------------------------------------
def test_procrustes_removes_the_head_pose():
    feats, track, offsets = make_inputs(noise_px=0.0, T=40)
    truth = track["canonical_shape"][None] + offsets
    lm = cl.canonical_landmarks(track, method="procrustes")
    assert np.abs(lm.points - truth).max() < 1e-3  # exact up to float32: rigid points do not move
    assert lm.rigid_rms.max() < 1e-3
    lifted = cl.canonical_landmarks(track)  # auto: the track has cameras
    assert lifted.method == "lift-2d" and lifted.rigid_rms.max() < 1e-4
    # moving points keep the neutral depth: the error lies along the viewing ray (mostly canonical
    # z); in the face plane it is far below the motion itself
    moving = np.linalg.norm(offsets, axis=-1) > 0
    err = np.abs(lifted.points - truth)[moving]
    motion = np.linalg.norm(offsets[moving], axis=-1).mean()
    assert err[:, :2].mean() < 0.05 * motion and err[:, 2].mean() < 0.15 * motion


def test_lift_2d_inverts_a_perspective_projection():
    rng = np.random.default_rng(1)
    canonical = canonical_face(rng)
    from scipy.spatial.transform import Rotation

    T = 5
    R = Rotation.from_rotvec(rng.normal(0, 0.2, (T, 3))).as_matrix()
    t = np.array([0.1, -0.05, 4.0]) + rng.normal(0, 0.1, (T, 3))
    K = np.array([[600.0, 0, 128], [0, 600.0, 128], [0, 0, 1]])
    cam = np.einsum("tij,lj->tli", R, canonical) + t[:, None]
    uv = (cam / cam[..., 2:3]) @ K.T
    w2c = np.tile(np.eye(4), (T, 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = R, t
    back = cl.lift_2d(uv[..., :2], w2c, K, canonical)
    assert np.abs(back - canonical[None]).max() < 1e-6


def test_moving_subsets_for_both_layouts():
    from talkctl.metrics import MOUTH_INDICES

    mp = cl.moving_indices(478, rigid=(33, 133, 362, 263))
    assert mp.max() < 478 and len(np.unique(mp)) == len(mp) and not {33, 133, 362, 263} & set(mp.tolist())
    assert set(cl.parts_for(478)["mouth"]) == set(MOUTH_INDICES[478])
    ib = cl.moving_indices(68, rigid=RIGID_68)
    assert set(ib.tolist()) == (set(range(3, 14)) | set(range(48, 68)) | {37, 38, 40, 41, 43, 44, 46, 47})
    assert list(cl.moving_indices(68, parts=("mouth",))) == list(range(48, 68))
    with pytest.raises(ValueError):
        cl.moving_indices(68, parts=("nose",))


# ---- the model learns, the stage writes -----------------------------------------------
def test_learns_the_audio_to_mouth_function(trained):
    run, summary, feats, offsets = trained
    assert summary["status"] == "done"
    assert summary["mouth_lmd"] < 0.35 * summary["mouth_lmd_baseline"], summary
    assert summary["mouth_open_corr"] > 0.9, summary
    with h5py.File(artifacts.spec("a2l").path(run), "r") as f:
        m = json.loads(f.attrs["metrics"])
        assert f["heldout_offsets"].shape == (275 - 250, len(f["landmark_indices"]), 3)
        curve = f["curve/heldout_mouth_lmd"][()]
        assert len(curve) == 2 and curve[-1] <= curve[0] * 1.05
        assert m["mouth_lmd"] == pytest.approx(summary["mouth_lmd"], abs=1e-4)
    # rerun: up to date
    again = run_stage("train-a2l", run, preset="tiny", overrides=TINY, device="cpu")
    assert again["status"] == "up to date"


def test_a2l_round_trips_and_predicts_new_audio(trained):
    run, summary, feats, offsets = trained
    pred = a2l_predict.load_predictor(run)
    with h5py.File(artifacts.spec("a2l").path(run), "r") as f:
        stored = f["heldout_offsets"][()]
        neutral = f["neutral"][()]
        idx = f["landmark_indices"][()]
    assert np.allclose(pred.offsets(feats[250:]), stored, atol=1e-5)
    new = make_inputs(seed=7, T=37)[0]
    lm = a2l_predict.load_predictor(run.path).landmarks(new)
    assert lm.shape == (37, 68, 3) and np.isfinite(lm).all()
    still = np.setdiff1d(np.arange(68), idx)
    assert np.array_equal(lm[:, still], np.repeat(neutral[None, still], 37, 0))
    assert np.abs(lm[:, idx] - neutral[idx]).max() > 1e-3
    from talkctl.errors import InputError

    with pytest.raises(InputError, match="do not fit"):
        pred.offsets(new[..., :5])
    # pauses (speech activity 0) give the closed mouth; speech (1) the prediction itself
    gate = np.r_[np.ones(20), np.zeros(17)].astype(np.float32)
    gated, free = pred.offsets(new, gate), pred.offsets(new)
    assert np.allclose(gated[:20], free[:20]) and np.allclose(gated[20:], pred.closed[None])
    assert pred.closed.shape == (len(idx), 3)
    assert 1.0 <= pred.gain <= 2.0  # the spread calibration train-a2l recorded


def test_formants_switch_changes_the_input(tmp_path):
    feats, track, _ = make_inputs(T=120)
    cfg = {**train_a2l.DEFAULTS, **TINY}
    with_f = train_a2l.prepare(_h5like(feats), track, {**cfg, "formants": True})
    without = train_a2l.prepare(_h5like(feats), track, {**cfg, "formants": False})
    assert with_f.features.shape[-1] == len(NAMES)
    assert without.features.shape[-1] == len(NAMES) - 6
    assert not {NAMES[i] for i in without.channels} & {"F1", "F2", "F3", "B1", "B2", "B3"}
    m1, _ = train_a2l.build_model(with_f, cfg)
    m0, _ = train_a2l.build_model(without, cfg)
    assert m1.encoder.conv[0].in_channels == len(NAMES) and m0.encoder.conv[0].in_channels == len(NAMES) - 6


class _h5like(dict):
    """audio.h5 as a dict with attrs (prepare reads `features` and attrs)."""

    def __init__(self, feats):
        super().__init__(features=feats)
        self.attrs = {"feature_names": json.dumps(NAMES)}


def test_velocity_loss_reduces_jitter():
    # per-frame noise in the features (not in the smooth truth) makes frame-wise predictions jitter
    feats, track, _ = make_inputs(T=275, feature_noise=2.0, sigma=8.0, noise_px=0.0)
    jit, verr = {}, {}
    for vw in (0.0, 10.0):
        cfg = {**train_a2l.DEFAULTS, **TINY, "velocity_weight": vw, "iterations": 200}
        data = train_a2l.prepare(_h5like(feats), track, cfg)
        model, _, _ = train_a2l.train_model(data, cfg)
        mouth = cl.part_positions(data.indices, 68, "mouth")
        pred = train_a2l.predict_offsets(model, data, cfg, frames=slice(0, None))[:, mouth]
        jit[vw] = train_a2l.jitter(pred)
        verr[vw] = float(np.abs(np.diff(pred, axis=0) - np.diff(data.targets[:, mouth], axis=0)).mean())
    assert verr[10.0] < 0.8 * verr[0.0], verr
    assert jit[10.0] < 0.9 * jit[0.0], jit


# ---- CLI --------------------------------------------------------------------------
def test_cli_missing_track_exits_4_naming_track(tmp_path, capsys):
    feats, track, _ = make_inputs(T=40)
    run = RunDir(tmp_path / "run")
    write_inputs(run, feats, track, track_file=False)
    rc = main(["train-a2l", "--run", str(run.path), "--preset", "tiny"])
    err = capsys.readouterr().err.strip()
    assert rc == 4
    assert len(err.splitlines()) == 1 and "track (" in err and "track.h5" in err and "--to track" in err


def test_cli_bad_setting_is_a_usage_error(tmp_path, capsys):
    feats, track, _ = make_inputs(T=40)
    run = RunDir(tmp_path / "run")
    write_inputs(run, feats, track)
    assert main(["train-a2l", "--run", str(run.path), "--set", "no_such_key=1"]) == 2
    assert main(["train-a2l", "--run", str(run.path), "--set", "d_model=30", "--set", "heads=4"]) == 2


def test_resume_equals_an_uninterrupted_run(tmp_path):
    feats, track, _ = make_inputs(T=400)  # long enough for a validation slice: the best weights are resumed too
    cfg = {**train_a2l.DEFAULTS, **TINY, "iterations": 40, "eval_every": 20, "checkpoint_every": 1000,
           "dropout": 0.1, "resume": True}
    data = train_a2l.prepare(_h5like(feats), track, cfg)
    whole, curve_whole, _ = train_a2l.train_model(data, cfg, checkpoint=tmp_path / "a.h5", fingerprint="x")
    train_a2l.train_model(data, cfg, checkpoint=tmp_path / "b.h5", fingerprint="y", stop_after=25)
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert int(f.attrs["step"]) == 25 and "model" in f and "optimizer" in f
    resumed, curve_resumed, _ = train_a2l.train_model(data, cfg, checkpoint=tmp_path / "b.h5", fingerprint="y")
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert curve_whole == curve_resumed and len(curve_whole["val_score"]) == 2
    # a checkpoint of another configuration is not resumed from
    other, _, _ = train_a2l.train_model(data, {**cfg, "iterations": 5}, checkpoint=tmp_path / "b.h5", fingerprint="z")
    assert not torch.equal(other.head.weight, resumed.head.weight)


def test_early_stopping_stops_and_keeps_the_best_weights(tmp_path):
    feats, track, _ = make_inputs(T=400)
    cfg = {**train_a2l.DEFAULTS, **TINY, "iterations": 200, "eval_every": 10, "patience": 3}
    data = train_a2l.prepare(_h5like(feats), track, cfg)
    n_val = train_a2l.validation_frames(data, cfg)
    assert n_val == round(0.1 * data.held_start) >= train_a2l.MIN_VAL_FRAMES
    # weights that cannot move never beat their first score: stop after `patience` more evaluations
    _, curve, _ = train_a2l.train_model(data, {**cfg, "lr": 1e-12, "lr_final": 1e-12})
    assert curve["step"] == [10, 20, 30, 40]
    # learning: the model handed back is the one with the best validation score, not the last one
    model, curve, _ = train_a2l.train_model(data, {**cfg, "patience": 0, "iterations": 80})
    val = slice(data.held_start - n_val, data.held_start)
    score = train_a2l.selection_score(train_a2l.heldout_metrics(
        train_a2l.predict_offsets(model, data, cfg, frames=val), data, val))
    assert curve["step"][-1] == 80 and score == pytest.approx(min(curve["val_score"]), rel=1e-5)
    # too short a clip for a validation slice: no early stopping, all steps run
    short_feats, short_track, _ = make_inputs(T=120)
    assert train_a2l.validation_frames(train_a2l.prepare(_h5like(short_feats), short_track, cfg), cfg) == 0


# ---- real stages on the synthetic talking subject -------------------------------------------
def test_real_stages_on_the_synthetic_subject(synthetic_subject, tmp_path):
    """extract-audio + track (mediapipe, 478 points) + train-a2l: the canonical mouth opening
    follows the rendered one, and a2l.h5 holds the mediapipe moving subset."""
    from talkctl.errors import MissingToolError

    run = RunDir(tmp_path / "run")
    run.set_video(synthetic_subject.video_path)
    run_stage("extract-audio", run, device="cpu")
    try:
        run_stage("track", run, preset="tiny", device="cpu")
    except MissingToolError as exc:
        pytest.skip(f"no landmark backend here: {exc.message}")
    with h5py.File(artifacts.spec("track").path(run), "r") as f:
        lm = cl.canonical_landmarks(f)
        mouth_open_2d = f["mouth_open"][()]
    from talkctl.metrics import pearson

    assert lm.n == 478 and lm.method == "lift-2d"
    truth = synthetic_subject.opening[:len(lm.points)]
    corr = pearson(cl.mouth_opening(lm.points, lm.n), truth)
    # as good as track's own 2D measure (tiny preset: 128 px crops, so mediapipe is the limit)
    assert corr > 0.8 and corr > pearson(mouth_open_2d, truth) - 0.03, corr
    summary = run_stage("train-a2l", run, preset="tiny", overrides={"iterations": 60, "eval_every": 30}, device="cpu")
    assert summary["landmarks"] == len(cl.moving_indices(478, rigid=lm.rigid))
    with h5py.File(artifacts.spec("a2l").path(run), "r") as f:
        assert f.attrs["n_landmarks"] == 478 and f["neutral"].shape == (478, 3)
        assert np.isfinite(json.loads(f.attrs["metrics"])["mouth_lmd"])
    assert not (run.path / "checkpoints" / "a2l.h5").exists()  # kept only while the stage is unfinished
    # new audio: 1.5 s of a gliding tone -> 37 frames of landmarks
    tt = np.arange(24000) / 16000.0
    wav = (0.3 * np.sin(2 * np.pi * (150 + 100 * tt) * tt)).astype(np.float32)
    lms = a2l_predict.landmarks_for_audio(run, wav)
    assert lms.shape == (37, 478, 3) and np.isfinite(lms).all()


def test_offset_basis_pca_and_plain():
    from talkctl.head.a2l_model import offset_basis

    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 3)) @ rng.standard_normal((3, 30))  # rank 3 in 30 dims
    B, info = offset_basis(X, pca_components=16)
    assert info["pca"] and info["components"] == 3 and B.shape == (3, 30)
    Xc = X - X.mean(0)
    coeff = Xc @ np.linalg.pinv(B)
    assert np.allclose(coeff @ B, Xc, atol=1e-4)  # the subject's offsets live in the basis
    assert np.allclose(coeff.std(0), 1.0, atol=0.05)  # unit-variance coefficients
    D, info = offset_basis(X, pca_components=0)
    assert not info["pca"] and D.shape == (30, 30) and np.allclose(np.diag(D), X.std(0), rtol=1e-4)


def test_a2l_scales_each_audios_lip_gap_to_the_subjects(trained):
    """amplitude=utterance (the default): over an audio's speech, the predicted lip gap spreads as
    far as the subject's tracked one did in training, whatever the voice."""
    from talkctl.face.canonical import mouth_opening
    from talkctl.head.mouth_state import UTTERANCE_GAIN_RANGE

    run, _, _, _ = trained
    pred = a2l_predict.load_predictor(run)
    assert pred.open_spread > 0
    new = make_inputs(seed=8, T=80)[0]
    speech = np.ones(80, np.float32)
    raw = pred.offsets(new) / pred.gain
    g = pred.utterance_gain(raw, speech)
    assert UTTERANCE_GAIN_RANGE[0] <= g <= UTTERANCE_GAIN_RANGE[1]
    gap = mouth_opening(a2l_predict.full_landmarks(pred.neutral, pred.indices, pred.offsets(new, speech)), 68)
    if UTTERANCE_GAIN_RANGE[0] < g < UTTERANCE_GAIN_RANGE[1]:
        assert abs(gap.std() - pred.open_spread) < 0.1 * pred.open_spread
    assert pred.utterance_gain(raw, np.zeros(80)) == pred.gain  # no speech: the trained gain
