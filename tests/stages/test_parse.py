"""The parse stage: labels, background plate, the torso targets made from them, preview, CLI errors, backends."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import cv2
import h5py
import numpy as np
import pytest

from fake_track import astronaut_clip, write_frames_track
from talkctl import artifacts
from talkctl.cli import main
from talkctl.gs.scene import Scene
from talkctl.jpeg_frames import frame_images
from talkctl.rundir import RunDir
from talkctl.parsing import regions as hr
from talkctl.parsing.torso_target import torso_maker

T, S = 24, 192


@pytest.fixture(scope="module")
def clip():
    return astronaut_clip(T, S)


@pytest.fixture(scope="module")
def parsed(clip, tmp_path_factory):
    """A run with the synthetic clip's frames.h5/track.h5, parsed once (with a preview)."""
    frames, lms, _, _ = clip
    run = tmp_path_factory.mktemp("parse") / "run"
    write_frames_track(RunDir(run), frames, lms)
    rc = main(["parse", "--run", str(run), "--preview", "--json", "-q"])
    assert rc == 0
    return run


def _read(run):
    with h5py.File(run / "parse.h5", "r") as f:
        return {k: frame_images(f, k)[:] for k in f}, dict(f.attrs)


def _near(a, b, tol: int = 12) -> np.ndarray:
    """Pixels of a and b (..., 3) that agree within a JPEG's error (frames are stored >= 45 dB)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) <= tol


def test_labels_have_documented_values_and_shapes(parsed):
    d, attrs = _read(parsed)
    assert d["labels"].shape == (T, S, S) and d["labels"].dtype == np.uint8
    assert set(np.unique(d["labels"])) <= {0, 1, 2, 3}
    assert {1, 3} <= set(np.unique(d["labels"]))  # head and torso in every synthetic frame
    assert d["background"].shape == (S, S, 3) and d["background"].dtype == np.uint8
    assert "torso_frames" not in d  # made from frames.h5 and the labels when read (parsing/torso_target.py)
    assert {"neck_fill", "neck_extend", "head_dilate"} <= set(json.loads(attrs["config"]))
    assert attrs["schema"] == "talkctl.parse" and attrs["parsing_backend"] == "mediapipe"
    assert json.loads(attrs["backend"]) == {"parsing": "mediapipe"}


def test_person_mask_matches_truth_and_head_holds_the_face(parsed, clip):
    _, lms, masks, _ = clip
    labels = _read(parsed)[0]["labels"]
    person = labels > 0
    iou = (person & masks).sum() / (person | masks).sum()
    assert iou > 0.9, iou
    xy = np.floor(lms).astype(int).clip(0, S - 1)  # landmarks: pixel centres at i + 0.5
    at_landmarks = labels[np.arange(T)[:, None], xy[..., 1], xy[..., 0]]
    assert (at_landmarks == hr.HEAD).mean() > 0.98


def test_torso_below_head_and_neck_between(parsed):
    labels = _read(parsed)[0]["labels"]
    rows = np.arange(S)[:, None]
    for lab in labels:
        head_y = np.broadcast_to(rows, lab.shape)[lab == hr.HEAD].mean()
        torso_y = np.broadcast_to(rows, lab.shape)[lab == hr.TORSO].mean()
        assert torso_y > head_y + 0.15 * S
        if (lab == hr.NECK).sum() > 10:
            neck_y = np.broadcast_to(rows, lab.shape)[lab == hr.NECK].mean()
            assert head_y < neck_y < torso_y


def test_background_plate_matches_the_true_background(parsed, clip):
    _, _, masks, bg = clip
    d, _ = _read(parsed)
    seen = d["background_seen"]
    assert 0.5 < seen.mean() < 1.0  # the person slides: most, not all, of the background shows
    uncovered = ~masks.all(0)  # truth: pixels some frame shows
    assert (seen & ~uncovered).sum() == 0 or (seen & ~uncovered).mean() < 0.01
    err = d["background"][seen].astype(np.float64) - bg[seen]
    psnr = 10 * np.log10(255 ** 2 / max((err ** 2).mean(), 1e-9))
    assert psnr > 35, psnr


def _torso_targets(run) -> np.ndarray:
    """The torso targets of every frame, as parse's preview makes them from the run's artifacts."""
    with h5py.File(run / "parse.h5", "r") as pf, h5py.File(run / "frames.h5", "r") as ff, \
            h5py.File(run / "track.h5", "r") as tf:
        lms, plate, frames = tf["landmarks2d"][()], pf["background"][()], frame_images(ff, "frames")[:]
        make = torso_maker(json.loads(pf.attrs["config"]), plate.shape[0], hr.layout_for(lms.shape[1]), plate)
        return np.stack([make(frames[t], pf["labels"][t], lms[t]) for t in range(len(frames))])


def test_torso_targets_have_no_head(parsed, clip):
    frames = clip[0]
    d, attrs = _read(parsed)
    assert attrs["neck_fill"] == "extend"
    labels, torso, plate = d["labels"], _torso_targets(parsed), d["background"]
    head = labels == hr.HEAD
    # head pixels show the plate, except the strip right above the neck (the neck continued up)
    same_as_plate = _near(torso, plate[None])
    assert same_as_plate[head].mean() > 0.85
    assert not same_as_plate[head].all()  # the neck continuation is there
    body = labels == hr.TORSO
    assert _near(torso[body], frames[body]).mean() > 0.99


def test_preview_and_rerun_up_to_date(parsed, capsys):
    img = cv2.imread(str(parsed / "parse_preview.png"))
    assert img is not None and img.shape[0] > 256 and img.shape[1] > 512
    capsys.readouterr()
    assert main(["parse", "--run", str(parsed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "up to date"
    (parsed / "parse_preview.png").unlink()  # --preview alone does not change the result: no rerun
    assert main(["parse", "--run", str(parsed), "--json", "--preview"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "up to date" and (parsed / "parse_preview.png").exists()


def test_parse_without_track_names_the_track_stage(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "talkctl", "parse", "--run", str(tmp_path / "empty")],
                          capture_output=True, text=True)
    assert proc.returncode == 4
    assert "--to track" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "empty").exists()  # a verb that reads a run never makes one


def test_stale_track_is_refused(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video, but hashed all the same")
    run.set_video(video)
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    write_frames_track(run, frames, np.full((2, 478, 2), 16, np.float32), inputs={"video": "an-older-video"})
    capsys.readouterr()
    assert main(["parse", "--run", str(run.path)]) == 4
    err = capsys.readouterr().err
    assert "track (frames.h5 stale" in err and "--to track" in err
    assert not (run.path / "parse.h5").exists()


def test_explicit_facexlib_unusable_is_one_line(parsed, capsys):
    capsys.readouterr()
    assert main(["parse", "--run", str(parsed), "--parsing", "facexlib", "--force"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "facexlib" in err
    assert "torchvision" in err or "parsing_bisenet.pth" in err


def test_neck_fill_background_removes_the_neck(clip, tmp_path):
    frames, lms, _, _ = clip
    run = tmp_path / "run"
    write_frames_track(RunDir(run), frames[:6], lms[:6])
    assert main(["parse", "--run", str(run), "--set", "neck_fill=background", "--set", "plate_frames=6", "-q"]) == 0
    d, attrs = _read(run)
    assert attrs["neck_fill"] == "background"
    neck = d["labels"] == hr.NECK
    assert neck.any()
    torso = _torso_targets(run)
    assert _near(torso[neck], np.broadcast_to(d["background"], torso.shape)[neck]).mean() > 0.99
    # and what the torso stage trains on: the plate on the neck, the frame on the torso
    ctx = SimpleNamespace(run=RunDir(run), device="cpu", read=lambda name: artifacts.open_for_read(RunDir(run), name))
    with Scene(ctx, {"resolution": S}) as scene:
        target, mask = scene.torso_targets(np.arange(6))
        target = (target.numpy() * 255).round().astype(np.uint8)
    on_neck = neck & (mask.numpy()[..., 0] > 0.99)
    assert _near(target[on_neck], np.broadcast_to(d["background"], target.shape)[on_neck]).mean() > 0.99
    body = d["labels"] == hr.TORSO
    assert _near(target[body], frames[:6][body]).mean() > 0.99


@pytest.mark.parametrize("setting", ["neck_fill=blur", "plate_frames=0", "person_threshold=1.5", "facexlib_model=x"])
def test_bad_settings_are_usage_errors(parsed, capsys, setting):
    capsys.readouterr()
    assert main(["parse", "--run", str(parsed), "--set", setting, "--force"]) == 2
    assert setting.split("=")[0] in capsys.readouterr().err


# ---- facexlib backend: real code around a tiny stand-in network ---------------------------
def test_facexlib_class_mapping():
    import torch

    from talkctl.parsing.facexlib_backend import labels_from_logits

    for model, cls in (("bisenet", {0: 0, 1: 1, 17: 1, 14: 2, 16: 3, 7: 1}),
                       ("parsenet", {0: 0, 1: 1, 13: 1, 17: 2, 16: 2, 18: 3, 8: 1})):
        ids = torch.tensor(list(cls))
        logits = torch.nn.functional.one_hot(ids, 19).float().T[None, :, :, None]  # (1,19,n,1)
        assert labels_from_logits(logits, model)[0, :, 0].tolist() == list(cls.values())


def test_facexlib_parser_runs_a_network_and_keeps_frame_order():
    import torch

    from talkctl.parsing.facexlib_backend import FacexlibParser

    class Tiny(torch.nn.Module):  # BiSeNet-like: a tuple of 19-class maps at the input size
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 19, 1)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                self.conv.weight[16, 2] = 5.0  # blue -> cloth (torso)
                self.conv.weight[1, 0] = 5.0  # red -> skin (head)

        def forward(self, x):
            y = self.conv(x)
            return y, y[:, :, ::2, ::2], y[:, :, ::4, ::4]

    frames = np.zeros((3, 64, 64, 3), np.uint8)
    frames[:, :32, :, 0] = 255
    frames[:, 32:, :, 2] = 255
    cfg = {"facexlib_model": "bisenet", "batch": 2}
    parser = FacexlibParser(cfg, "cpu", 478, model=Tiny().eval())
    out = list(parser.stream((t, frames[t], None) for t in range(3)))
    assert [t for t, _, _ in out] == [0, 1, 2]
    lab = out[1][2]
    assert lab.shape == (64, 64) and (lab[:30] == hr.HEAD).all() and (lab[34:] == hr.TORSO).all()
    assert parser.person(frames[0]).all()


def test_facexlib_weights_are_found_in_the_documented_folder(tmp_path, monkeypatch):
    from talkctl.parsing import facexlib_weights as parsing

    monkeypatch.setenv("TALKCTL_WEIGHTS", str(tmp_path))
    assert parsing.find_weights("parsing_bisenet.pth") is None
    (tmp_path / "parsing_bisenet.pth").write_bytes(b"x")
    assert parsing.find_weights("parsing_bisenet.pth") == tmp_path / "parsing_bisenet.pth"
    assert parsing.weights_dirs()[0] == tmp_path


# ---- the real chain: synthetic talking subject -> track -> parse ---------------------------
@pytest.fixture(scope="module")
def subject_parsed(synthetic_subject, tmp_path_factory):
    run = tmp_path_factory.mktemp("subject") / "run"
    assert main(["track", str(synthetic_subject.video_path), "--run", str(run), "--size", "256", "-q"]) == 0
    assert main(["parse", "--run", str(run), "-q"]) == 0
    return run


def test_real_track_then_parse_on_the_synthetic_subject(subject_parsed, synthetic_subject):
    from talkctl import synthetic

    d, attrs = _read(subject_parsed)
    with h5py.File(subject_parsed / "frames.h5", "r") as f:
        x0, y0, side = (int(v) for v in f.attrs["crop"])
    with h5py.File(subject_parsed / "track.h5", "r") as f:
        lms = f["landmarks2d"][()]
    T2, S2 = d["labels"].shape[:2]
    # the backdrop the subject was composited on (synthetic.py draws it from seed [seed, 4]),
    # cut and scaled like track's crop
    back = synthetic._backdrop(synthetic_subject.size, np.random.default_rng([0, 4]))
    back = np.round(back * 255).astype(np.uint8)
    canvas = np.zeros((side, side, 3), np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, back.shape[1]), min(y0 + side, back.shape[0])
    canvas[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = back[sy0:sy1, sx0:sx1]
    truth = cv2.resize(canvas, (S2, S2), interpolation=cv2.INTER_AREA)
    seen = d["background_seen"]
    assert seen.mean() > 0.3
    err = d["background"][seen].astype(np.float64) - truth[seen]
    psnr = 10 * np.log10(255 ** 2 / (err ** 2).mean())
    assert psnr > 30, psnr  # (the clip is H.264: a few dB of coding noise)
    xy = np.floor(lms).astype(int).clip(0, S2 - 1)
    assert (d["labels"][np.arange(T2)[:, None], xy[..., 1], xy[..., 0]] == hr.HEAD).mean() > 0.98
