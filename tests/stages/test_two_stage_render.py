"""The decoupled two-stage method end to end on the synthetic subject (tests/fixtures/trained_run.py):
train-a2l + train-deform --condition landmarks + train-torso --mode image, then `talkctl render`
with new audio (landmarks from a2l), re-enactment and an edit, and `talkctl eval`."""
import json
import shutil

import pytest

import trained_run
from media_helpers import read_tags
from talkctl.cli import main
from talkctl.pipeline import run_stage
from talkctl.rundir import RunDir

COMMON = ["--device", "cpu", "-q", "--json"]
SIZE = 48


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    import torch

    base, _ = trained_run.build(tmp_path_factory.mktemp("trained"))
    run = RunDir(tmp_path_factory.mktemp("two") / "run")
    shutil.rmtree(run.path)
    shutil.copytree(base.path, run.path)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stage("train-a2l", run, preset="tiny", device="cpu", overrides={"iterations": 40, "seq_len": 16, "batch": 4})
        run_stage("train-deform", run, preset="tiny", device="cpu", force=True,
                  overrides={"condition": "landmarks", "resolution": SIZE, "iterations": 40, "val_every": 20})
        run_stage("train-torso", run, preset="tiny", device="cpu", force=True,
                  overrides={"mode": "image", "resolution": SIZE, "iterations": 30, "val_every": 10})
    finally:
        torch.set_num_threads(n)
    return base, run


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    return trained_run.write_wav(d / "voice.wav", trained_run.voice(1.2), 16000)


_render = trained_run.render_cli


def test_render_new_audio_through_a2l_with_an_edit(two_stage, speech, tmp_path, capsys):
    base, run = two_stage
    out = tmp_path / "a2l.mp4"
    rc, s, err = _render(capsys, run, "--audio", str(speech), "-o", str(out), "--edit", "mouth_scale=1.5,eyes_open=1")
    assert rc == 0, err
    assert s["frames"] == 30 and "a2l prediction" in s["landmarks"] and "mouth_scale=1.5" in s["landmarks"]
    tags = read_tags(out)
    assert tags["talkctl_landmarks"] == s["landmarks"]
    # re-enactment: the other run's tracked landmarks (here the same subject's base run), held-out frames
    rc, s, err = _render(capsys, run, "-o", str(tmp_path / "re.mp4"), "--landmarks", str(base.path))
    assert rc == 0, err and "re-enactment" in s["landmarks"]
    # bad edits and landmarks on an audio-driven head are usage errors (exit 2, one line)
    rc, s, err = _render(capsys, run, "-o", str(tmp_path / "x.mp4"), "--edit", "smile=2")
    assert rc == 2 and "unknown key" in err
    rc, s, err = _render(capsys, base, "-o", str(tmp_path / "y.mp4"), "--edit", "mouth_scale=2")
    assert rc == 2 and "landmark-driven" in err


def test_eval_compares_the_two_methods(two_stage, capsys):
    base, run = two_stage
    capsys.readouterr()
    rc = main(["eval", str(base.path), str(run.path), *COMMON, "--set", "lpips=false"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    out = json.loads(cap.out)
    assert len(out["runs"]) == 2 and len(out["table"]) == 2
