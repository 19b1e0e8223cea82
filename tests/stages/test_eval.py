"""`talkctl eval` on the tiny trained run: eval.json figures, LPIPS reported unavailable with
its reason, report.html, the comparison table over two runs, and the run lock."""
import json
import math
import shutil

import numpy as np
import pytest

import trained_run
from talkctl.cli import main
from talkctl.rundir import RunDir

COMMON = ["--device", "cpu"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


@pytest.fixture(autouse=True)
def _no_weights(tmp_path, monkeypatch):
    """No LPIPS / SyncNet weights anywhere: the figures must say so, never invent a number."""
    monkeypatch.setenv("TALKCTL_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))


def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def _other_speaker(d):
    """Another synthetic person (other seed, the unseen voice): the drive video with a real mouth."""
    from talkctl.synthetic import UNSEEN_VOICE, make_subject

    return make_subject(d / "other", seconds=2.0, size=128, seed=5, voice=UNSEEN_VOICE,
                        out_name="other").video_path


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    import os

    run, _ = trained
    d = tmp_path_factory.mktemp("eval")
    wav = trained_run.write_wav(d / "voice.wav", trained_run.voice(2.0, seed=11), 16000)
    other = _other_speaker(d)
    old = {k: os.environ.get(k) for k in ("TALKCTL_WEIGHTS", "TORCH_HOME")}
    os.environ["TALKCTL_WEIGHTS"], os.environ["TORCH_HOME"] = str(d / "w"), str(d / "t")
    try:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(["eval", str(run.path), "--audio", str(wav), "--drive-video", str(other), "--json", "-q", *COMMON])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), run, wav


def test_eval_json_figures_are_finite_and_complete(evaluated):
    rc, out, run, _ = evaluated
    assert rc == 0
    printed = json.loads(out)
    on_disk = json.loads(run.file("eval.json").read_text())
    assert on_disk["figures"] == printed["figures"]
    fig = on_disk["figures"]
    for key in ("psnr", "ssim", "portrait_psnr", "model_psnr", "model_ssim", "head_psnr", "render_fps", "peak_memory_mb",
                "train_seconds", "sync_corr_real"):
        assert isinstance(fig[key], float) and math.isfinite(fig[key]), key
    assert 5 < fig["psnr"] < 60 and 0 < fig["ssim"] <= 1 and fig["render_fps"] > 0
    # the headline is what the mp4 shows: the default composite (portrait for the held-out frames)
    assert fig["composite"] == on_disk["composite"] == "portrait"
    assert fig["psnr"] == fig["portrait_psnr"] == on_disk["composites"]["portrait"]["psnr"]
    assert fig["render_fps"] == on_disk["composites"]["portrait"]["render_fps"]
    assert set(on_disk["composites"]) == {"portrait", "model"} and on_disk["head_over_real"]["psnr"] == fig["head_psnr"]
    assert fig["gaussians"]["head"] > 0 and fig["gaussians"]["torso"] > 0
    # the comparison's method, model size, training peak memory and time per stage
    assert fig["method"] == "gstalker" and fig["model_mb"] > 0
    assert 50 < fig["train_peak_memory_mb"] < 24 * 1024
    assert fig["seconds:train-deform"] > 0 and fig["seconds:train-torso"] > 0
    assert fig["train_peak_memory_mb"] == max(v for k, v in fig.items() if k.startswith("peak_rss_mb:"))
    for path, v in _numbers(on_disk):
        assert math.isfinite(v), path
    # lip figures: numbers, or None with a reason
    lip = on_disk["lip"]
    assert lip["landmark_backend"] == "mediapipe" and lip["frames_with_face_real"] > 0
    assert (lip["lmd"] is not None and lip["lmd"] >= 0) or lip.get("reason")
    if fig["mouth_corr"] is not None and fig["mouth_frames"] >= 20:  # how sure: an interval around the figure
        lo, hi = fig["mouth_corr_ci95"]
        assert -1 <= lo <= fig["mouth_corr"] <= hi <= 1
    else:  # too few frames with a face to resample: no interval rather than a false one
        assert fig["mouth_corr_ci95"] is None
    cross = on_disk["sync"]["cross_driven"]
    assert cross["frames"] == 50 and ((cross["corr"] is not None and -2 <= cross["lag"] <= 2) or cross.get("reason"))
    assert set(on_disk["efficiency"]["stage_seconds"]) == {"extract-audio", "track", "parse", "init-static",
                                                           "train-deform", "train-torso"}


def test_drive_video_figures(evaluated):
    """--drive-video: the head driven by another video's audio, its mouth against that video's
    real speaker: per-drive figures in eval.json, medians in the figures, both curves in the report."""
    _, _, run, _ = evaluated
    data = json.loads(run.file("eval.json").read_text())
    (d,) = data["drive_videos"]
    assert d["video"].endswith("other.mp4") and d["frames"] == 50 and d["frames_with_face_real"] >= 45
    assert d["frames_with_face_rendered"] > 0  # a 40-step 48 px head: the detector misses some frames
    fig = data["figures"]
    assert fig["xsync_drives"] == 1
    if d["corr"] is None:  # too few rendered faces to compare: said, not invented
        assert "too few" in d["reason"] and fig["xsync_corr"] is None
        return
    assert -1 <= d["corr"] <= 1 and -3 <= d["best_lag"] <= 3 and d["best_corr"] >= d["corr"] - 1e-9
    assert d["amp"] > 0 and len(d["mouth_real"]) == len(d["mouth_rendered"]) == 50
    assert fig["xsync_corr"] == d["corr"] and fig["xsync_amp"] == d["amp"]
    lo, hi = d["corr_ci95"]  # 50 frames: five blocks to resample
    assert -1 <= lo <= d["corr"] <= hi <= 1
    # 2 s of a synthetic voice: too little to place the video's own offset, and it says so
    assert d["av_offset_ms"] is None and "too little speech" in d["av_offset_reason"] and fig["xsync_offset_corr"] is None
    assert fig["clip_av_offset_ms"] is None or abs(fig["clip_av_offset_ms"]) <= 200
    html = run.file("report.html").read_text()
    assert "Driven by other.mp4" in html and "real speaker" in html


class _EchoRenderer:
    """A stand-in renderer whose "render" is the drive video's own frames: the pass must then
    find the real speaker's mouth again, at lag 0 and amplitude 1."""

    def __init__(self, frames):
        self.frames, self.size, self.next = frames, frames.shape[1], 0
        self.head = type("Head", (), {"condition": None, "set_audio": lambda *a: None})()

    def render(self, idx, world_to_cam, blink, real=None, torso=True, source=None):  # batches come in order
        out = self.frames[self.next:self.next + len(idx)]
        self.next += len(idx)
        return {"full": out, "seconds": {"head": 0.0, "model": 0.0}}


def test_drive_video_pass_aligns_real_and_rendered(trained, tmp_path):
    from talkctl.face.reader import LandmarkReader
    from talkctl.head.drive_video import drive_video_figures
    from media_helpers import read_video_frames
    from talkctl.progress import null_progress
    from talkctl.stages.eval import DEFAULTS

    run, _ = trained
    video = _other_speaker(tmp_path)
    frames = np.stack(list(read_video_frames(video)))
    reader = LandmarkReader("mediapipe")
    try:
        d = drive_video_figures(run, _EchoRenderer(frames), video, reader,
                                 {**DEFAULTS, "batch": 8, "composite": "model"}, "cpu", null_progress)  # "full" as is
    finally:
        reader.close()
    assert d["frames"] == 50 and d["frames_with_face_real"] == d["frames_with_face_rendered"] >= 45
    assert d["corr"] > 0.99 and d["best_lag"] == 0 and abs(d["amp"] - 1) < 0.02


def test_missing_weights_are_unavailable_with_a_reason(evaluated):
    _, _, run, _ = evaluated
    fig = json.loads(run.file("eval.json").read_text())["figures"]
    assert fig["lpips"] is None and fig["model_lpips"] is None and "alex" in fig["lpips_reason"]
    assert fig["syncnet_confidence"] is None and "syncnet_v2.model" in fig["syncnet_reason"]


def test_report_html(evaluated):
    _, _, run, _ = evaluated
    html = run.file("report.html").read_text()
    assert html.startswith("<!doctype html>") and html.count("<img") >= 6  # real, rendered, error x 2 frames+
    assert "Mouth opening" in html and "train-deform" in html and "unavailable" in html
    assert not list(run.path.glob("*.partial"))


def test_two_runs_give_one_table(trained, tmp_path, capsys):
    run, _ = trained
    other = tmp_path / "other"
    shutil.copytree(run.path, other)
    capsys.readouterr()
    rc = main(["eval", str(run.path), str(other), "--json", *COMMON, "--set", "report_frames=1"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    data = json.loads(cap.out)
    assert [r["run"] for r in data["table"]] == ["run", "other"]
    assert len(data["runs"]) == 2 and (other / "eval.json").exists()
    assert "talkctl eval" in cap.err and "other" in cap.err and "PSNR" in cap.err


def test_eval_takes_the_lock(trained, capsys):
    run, _ = trained
    with RunDir(run.path, create=False).lock("talkctl train-torso"):
        rc = main(["eval", str(run.path), "-q", *COMMON])
    assert rc == 6 and "train-torso" in capsys.readouterr().err


def test_eval_needs_a_run(capsys, tmp_path):
    assert main(["eval", "-q"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert main(["eval", str(empty), "-q"]) == 4
    err = capsys.readouterr().err
    assert "extract-audio (audio.h5 missing)" in err and "--to train-torso" in err


def test_demo_end_to_end_small(tmp_path):
    """The demo's whole path (every stage, render with an unseen voice, eval) at test sizes."""
    import torch

    from talkctl.demo import run_demo
    from talkctl.media.ffmpeg import probe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = run_demo(tmp_path / "demo", preset="tiny", seconds=3.0, size=128, device="cpu", voice_seconds=1.2,
                       overrides={**trained_run.OVERRIDES, "render": {"size": 32}, "eval": {"report_frames": 1}})
    finally:
        torch.set_num_threads(threads)
    assert res["status"] == "complete"
    from talkctl.pipeline import CHAIN

    assert res["stages"] == list(CHAIN) + ["render", "eval"]
    info = probe(res["demo_video"])
    assert res["demo_video"] == str(tmp_path / "demo" / "demo.mp4") and info["video"]["width"] == 32 and info["audio"]
    assert abs(info["duration"] - 1.2) < 0.08
    assert (tmp_path / "demo" / "run" / "report.html").exists() and (tmp_path / "demo" / "run" / "eval.json").exists()
