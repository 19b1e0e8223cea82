"""`talkctl render` on one tiny trained run: mp4 streams and frame counts, pose sources,
--full-frame, streaming (frames written as made), metadata, and bad inputs."""
import json
import shutil

import numpy as np
import pytest

import trained_run
from media_helpers import read_tags, read_video_frames
from talkctl.media.ffmpeg import probe
from talkctl.rundir import RunDir


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    d = tmp_path_factory.mktemp("speech")
    return trained_run.write_wav(d / "voice.wav", trained_run.voice(2.3), 16000)


_render = trained_run.render_cli


def _count_frames(path) -> int:
    return sum(1 for _ in read_video_frames(path, fps=None))


def test_new_audio_gives_mp4_with_sound_and_metadata(trained, speech, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "out.mp4"
    rc, s, err = _render(capsys, run, "--audio", str(speech), "-o", str(out))
    assert rc == 0, err
    info = probe(out)
    assert info["video"] and info["audio"], info
    assert info["video"]["fps"] == 25
    n = round(2.3 * 25)
    assert s["frames"] == n and _count_frames(out) == n
    assert abs(info["duration"] - 2.3) < 0.08
    assert s["model_fps"] > 0 and s["end_to_end_fps"] > 0 and "cpu" in s["device"]
    assert "ping-pong" in s["pose"]
    tags = read_tags(out)
    assert tags["talkctl_audio"] == str(speech.absolute())
    assert "ping-pong" in tags["talkctl_pose"] and "fps" in tags["talkctl_speed"]
    assert tags["talkctl_blink"] == s["blink"] and "pose source" in s["blink"]
    assert not list(tmp_path.glob("*partial*")) and not list(tmp_path.glob("*tagging*"))


def test_default_renders_the_held_out_frames(trained, tmp_path, capsys):
    run, _ = trained
    rc, s, err = _render(capsys, run, "-o", str(tmp_path / "held.mp4"))
    assert rc == 0, err
    from talkctl.head.drive import held_out_range

    a, b = held_out_range(run)
    assert b - a >= 1 and s["frames"] == b - a and "held-out" in s["pose"]
    assert probe(tmp_path / "held.mp4")["audio"] is not None


def test_full_frame_has_the_source_size(trained, speech, tmp_path, capsys):
    run, subject = trained
    out = tmp_path / "full.mp4"
    rc, s, err = _render(capsys, run, "--audio", str(speech), "-o", str(out), "--full-frame", "--set", "batch=16")
    assert rc == 0, err
    src, got = probe(subject.video_path)["video"], probe(out)["video"]
    assert (got["width"], got["height"]) == (src["width"], src["height"])
    assert s["full_frame"] and s["size"] == [src["width"], src["height"]]
    # outside the crop the output is the source frame the pose came from (ping-pong from frame 0)
    import h5py

    with h5py.File(run.file("frames.h5")) as f:
        x0, y0, side = (int(v) for v in f.attrs["crop"])
    outside = np.ones((src["height"], src["width"]), bool)
    outside[max(y0, 0):y0 + side, max(x0, 0):x0 + side] = False
    if outside.any():
        got0 = next(read_video_frames(out, fps=None)).astype(float)
        src0 = next(read_video_frames(subject.video_path, fps=None)).astype(float)
        assert np.abs(got0 - src0)[outside].mean() < 10


def test_pose_sources(trained, speech, tmp_path, capsys):
    run, _ = trained
    rc, s, _ = _render(capsys, run, "--audio", str(speech), "-o", str(tmp_path / "a.mp4"), "--pose", "still", "--size", "32")
    assert rc == 0 and "held still" in s["pose"] and s["size"] == [32, 32]
    import h5py

    with h5py.File(run.file("track.h5")) as f:
        w2c = f["world_to_cam"][:5]
    npz = tmp_path / "poses.npz"
    np.savez(npz, world_to_cam=w2c)
    rc, s, _ = _render(capsys, run, "--audio", str(speech), "-o", str(tmp_path / "b.mp4"), "--pose", str(npz))
    assert rc == 0 and str(npz) in s["pose"] and "eyes open" in s["pose"]
    rc, _, err = _render(capsys, run, "--audio", str(speech), "-o", str(tmp_path / "c.mp4"), "--pose", str(tmp_path / "none.npz"))
    assert rc == 2 and "does not exist" in err


def test_frames_are_written_as_they_are_rendered(trained, tmp_path, monkeypatch):
    """A long-ish audio: never more than one batch rendered ahead of the encoder."""
    from talkctl.head.renderer import Renderer
    from talkctl.media.video_out import VideoWriter
    from talkctl.stages import render as rmod

    run, _ = trained
    wav = trained_run.write_wav(tmp_path / "long.wav", trained_run.voice(12.0, seed=3), 16000)
    counts = {"rendered": 0, "written": 0, "ahead": 0}
    real_render, real_write = Renderer.render, VideoWriter.write

    def render(self, frames, *a, **k):
        counts["rendered"] += len(frames)
        return real_render(self, frames, *a, **k)

    def write(self, frame):
        counts["ahead"] = max(counts["ahead"], counts["rendered"] - counts["written"])
        counts["written"] += 1
        return real_write(self, frame)

    monkeypatch.setattr(Renderer, "render", render)
    monkeypatch.setattr(VideoWriter, "write", write)
    with RunDir(run.path, create=False).lock("test"):
        s = rmod.render_to_file(run, tmp_path / "long.mp4", audio=wav, cfg={"batch": 4, "size": 24}, device="cpu")
    assert counts["rendered"] == counts["written"] == s["frames"] == 300
    assert counts["ahead"] <= 4


def test_audio_formats_and_silence(trained, tmp_path, capsys):
    run, _ = trained
    cases = {
        "8k.wav": (trained_run.voice(1.0, 8000), 8000),
        "96k.wav": (trained_run.voice(1.0, 96000), 96000),
        "6ch.wav": (np.repeat(trained_run.voice(1.0)[:, None], 6, axis=1) * np.linspace(0.2, 1, 6), 16000),
        "silence.wav": (np.zeros(16000), 16000),
    }
    for name, (x, rate) in cases.items():
        wav = trained_run.write_wav(tmp_path / name, x, rate)
        rc, s, err = _render(capsys, run, "--audio", str(wav), "-o", str(tmp_path / (name + ".mp4")), "--size", "24")
        assert rc == 0, (name, err)
        assert s["frames"] == 25, name
        assert probe(tmp_path / (name + ".mp4"))["audio"] is not None


def test_bad_inputs(trained, speech, tmp_path, capsys):
    run, _ = trained
    short = trained_run.write_wav(tmp_path / "short.wav", trained_run.voice(1.0)[:320], 16000)
    rc, _, err = _render(capsys, run, "--audio", str(short), "-o", str(tmp_path / "s.mp4"))
    assert rc == 2 and "shorter than one video frame" in err and len(err.strip().splitlines()) == 1

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = _render(capsys, run, "--audio", str(speech), "-o", str(blocker / "out.mp4"))
    assert rc == 2 and "cannot write" in err

    partial = tmp_path / "partial_run"
    shutil.copytree(run.path, partial)
    (partial / "torso.h5").unlink()
    rc, _, err = _render(capsys, RunDir(partial, create=False), "--audio", str(speech), "-o", str(tmp_path / "p.mp4"))
    assert rc == 4 and "train-torso" in err

    with RunDir(run.path, create=False).lock("talkctl train-deform"):
        rc, _, err = _render(capsys, run, "--audio", str(speech), "-o", str(tmp_path / "l.mp4"))
    assert rc == 6 and "train-deform" in err
    assert not (tmp_path / "l.mp4").exists()


def test_lazy_windows_and_batch_slices_match_the_whole_sequence(trained, speech):
    """The per-batch audio slices give exactly what features_for_audio + the whole sequence give."""
    import torch

    from talkctl.stages import render as rmod
    from talkctl.audio.recipe import features_for_audio
    from talkctl.head import drive as hdrive, renderer as hrenderer
    from talkctl.media.audio import load_waveform

    run, _ = trained
    wav = load_waveform(speech)
    lazy = hdrive.driving_features(wav, run)
    full = features_for_audio(wav, run)
    assert lazy.shape == full.shape and np.array_equal(lazy[:], full) and np.array_equal(lazy[5:9], full[5:9])
    drive = hdrive.audio_drive(run, speech, rmod.DEFAULTS)
    r = hrenderer.Renderer.load(run, "cpu", 24)
    sliced = np.concatenate([o["full"] for _, o, _ in hrenderer.render_batches(r, drive, batch=5)])
    r.set_audio(full, drive.speech)
    with torch.no_grad():
        whole = r.render(np.arange(len(full)), drive.world_to_cam, drive.blink, source=drive.source_frames)["full"]
    assert sliced.shape == whole.shape
    assert np.abs(sliced.astype(int) - whole.astype(int)).max() <= 1


def test_subprocess_held_out_full_frame_json_only_on_stdout(trained, tmp_path):
    """The real entry point: stdout is exactly the JSON summary (pipeable), progress goes to stderr."""
    import os
    import subprocess
    import sys

    run, subject = trained
    out = tmp_path / "held_full.mp4"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    p = subprocess.run([sys.executable, "-m", "talkctl", "render", "--run", str(run.path), "-o", str(out),
                        "--full-frame", "--device", "cpu", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads(p.stdout)
    from talkctl.head.drive import held_out_range

    a, b = held_out_range(run)
    assert s["frames"] == b - a and s["full_frame"] and "held-out" in s["pose"]
    assert probe(out)["video"]["width"] == probe(subject.video_path)["video"]["width"]
