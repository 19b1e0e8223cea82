"""Composite modes on the tiny trained run: portrait frames are the template outside the feathered
face mask (exactly, before encoding), render records the mode in its summary and mp4 metadata,
"auto" picks model for poses from elsewhere, and portrait refuses them."""
import json

import numpy as np
import pytest

import trained_run
from talkctl.cli import main
from media_helpers import read_tags, read_video_frames

COMMON = ["--device", "cpu", "-q"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _render(capsys, run, *args):
    capsys.readouterr()
    rc = main(["render", "--run", str(run.path), "--json", *COMMON, *args])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else None), cap.err


def test_portrait_frames_are_the_template_outside_the_mask(trained):
    from talkctl.head.composite import Compositor, composited_batches
    from talkctl.head.drive import self_drive
    from talkctl.head.renderer import Renderer

    run, _ = trained
    renderer = Renderer.load(run, "cpu", 64)
    drive = self_drive(run)
    comp = Compositor(run, "portrait", renderer.size)
    seen_face = 0
    try:
        assert not comp.needs_torso
        for idx, out, frames, masks, secs in composited_batches(renderer, drive, comp, 4):
            assert "full" not in out and secs > 0  # the torso is not rendered for a portrait
            for j, i in enumerate(drive.source_frames[idx]):
                template = comp.template.get(int(i))[0]
                outside = masks[j][0] == 0
                assert np.array_equal(frames[j][outside], template[outside])
                seen_face += int((masks[j][0] > 0.5).sum() > 20)
    finally:
        comp.close()
    assert seen_face >= 1  # the face was found and blended in


def test_render_records_the_composite(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "p.mp4"
    rc, s, err = _render(capsys, run, "-o", str(out), "--composite", "portrait")
    assert rc == 0, err
    assert s["composite"] == "portrait"
    tags = read_tags(out)
    assert tags["talkctl_composite"].startswith("portrait") and json.loads(tags["comment"])["composite"] == "portrait"
    rc, s, err = _render(capsys, run, "-o", str(tmp_path / "m.mp4"), "--composite", "model", "--size", "32")
    assert rc == 0 and s["composite"] == "model", err
    assert read_tags(tmp_path / "m.mp4")["talkctl_composite"].startswith("model")


def test_auto_and_poses_from_elsewhere(trained, tmp_path, capsys):
    import h5py

    run, _ = trained
    speech = trained_run.write_wav(tmp_path / "v.wav", trained_run.voice(1.0), 16000)
    with h5py.File(run.file("track.h5")) as f:
        np.savez(tmp_path / "poses.npz", world_to_cam=f["world_to_cam"][:5])
    common = ["--audio", str(speech), "--pose", str(tmp_path / "poses.npz"), "--size", "32"]
    rc, s, err = _render(capsys, run, *common, "-o", str(tmp_path / "a.mp4"))
    assert rc == 0 and s["composite"] == "model", err  # auto: no template frames for these poses
    rc, _, err = _render(capsys, run, *common, "-o", str(tmp_path / "b.mp4"), "--composite", "portrait")
    assert rc == 2 and "--composite model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b.mp4").exists()
    rc, _, err = _render(capsys, run, "--audio", str(speech), "-o", str(tmp_path / "c.mp4"), "--composite", "both")
    assert rc == 2 and "portrait or model" in err
    rc, s, err = _render(capsys, run, "--audio", str(speech), "-o", str(tmp_path / "d.mp4"), "--size", "32")
    assert rc == 0 and s["composite"] == "portrait", err  # auto with the training poses (ping-pong)


def test_full_frame_portrait_keeps_the_source_outside_the_face(trained, tmp_path, capsys):
    """--full-frame --composite portrait: the source video at its own resolution everywhere but the
    face (up to H.264's error), the face region changed."""
    import h5py

    from talkctl.head.drive import held_out_range

    run, subject = trained
    out = tmp_path / "ff.mp4"
    rc, s, err = _render(capsys, run, "-o", str(out), "--full-frame", "--composite", "portrait")
    assert rc == 0 and s["composite"] == "portrait" and s["full_frame"], err
    a, _ = held_out_range(run)
    got = next(read_video_frames(out, fps=None)).astype(float)
    src = [f for _, f in zip(range(a + 1), read_video_frames(subject.video_path, fps=None))][a].astype(float)
    with h5py.File(run.file("frames.h5")) as f:
        x0, y0, side = (int(v) for v in f.attrs["crop"])
    with h5py.File(run.file("parse.h5")) as f:
        head = f["labels"][a] > 0
    import cv2

    person = cv2.resize(head.astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST).astype(bool)
    away = np.ones(got.shape[:2], bool)  # everything but the person's pixels (and a margin)
    grown = cv2.dilate(person.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    ys, xs = np.nonzero(grown)
    ok = (ys + y0 >= 0) & (ys + y0 < away.shape[0]) & (xs + x0 >= 0) & (xs + x0 < away.shape[1])
    away[ys[ok] + y0, xs[ok] + x0] = False
    assert np.abs(got - src)[away].mean() < 4
