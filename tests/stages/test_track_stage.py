"""`talkctl track` end to end on small generated clips (mediapipe on CPU).

The clips come from tests/fixtures/track_fixtures.py: the astronaut photo on a face-like bump turned
by known head poses (pose recovery), and bad inputs: no face, two faces, a face leaving the
picture, portrait, tiny, too short; plus a run directory whose frames came from another video.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from talkctl.cli import main
from talkctl.jpeg_frames import frame_images

import track_fixtures as fx  # noqa: E402
from repo import REPO


def _no_outputs(run: Path) -> bool:
    return not any(run.glob("*.h5")) and not any(run.glob("*.partial"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    out = {"bump": d / "bump.mp4"}
    out["truth"] = fx.bump_clip(out["bump"], n=60, size=192)
    return out


@pytest.fixture(scope="module")
def bump_run(clips, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "bump"
    rc = main(["track", str(clips["bump"]), "--run", str(run), "--size", "192", "--preview", "-q",
               "--set", "frame_store=jpeg"])  # the JPEG layout; tests/stages/test_frame_store.py: the source one
    assert rc == 0
    return run


def test_pose_recovery_on_a_turning_face(bump_run, clips):
    with h5py.File(bump_run / "track.h5", "r") as f:
        R = f["world_to_cam"][:, :3, :3].astype(np.float64)
        rel_est = np.einsum("tij,kj->tik", R, R[0])
    Rt = clips["truth"]["R"]
    err = fx.rotation_angle_deg(rel_est, np.einsum("tij,kj->tik", Rt, Rt[0]))
    truth_range = fx.rotation_angle_deg(Rt, Rt[0]).max()
    assert truth_range > 20  # the clip really turns the head
    assert np.median(err) < 3.0 and err.max() < 5.0, (np.median(err), err.max())


def test_artifacts_follow_the_layout(bump_run):
    with h5py.File(bump_run / "frames.h5", "r") as f:
        assert f.attrs["schema"] == "talkctl.frames"
        fr = frame_images(f, "frames")
        assert fr.shape == (60, 192, 192, 3) and fr.dtype == np.uint8 and f["frames"].attrs["codec"] == "jpeg"
        assert f["frames/quality"].shape == (60,) and f["frames/offsets"].shape == (61,)
        assert list(f.attrs["crop"]) == [0, 0, 192] and list(f.attrs["source_size"]) == [192, 192]
        assert f.attrs["fps"] == 25 and f.attrs["size"] == 192
        first = fr[0]
    # the JPEG frames decode to the video's first frame (within the codec's >= 45 dB)
    from talkctl.media.video_in import read_still

    still = read_still(Path(json.loads((bump_run / "run.json").read_text())["video"]["path"]))
    assert np.abs(first.astype(int) - still.astype(int)).mean() < 2.0
    with h5py.File(bump_run / "track.h5", "r") as f:
        T, L = 60, 478
        shapes = {"landmarks2d": (T, L, 2), "landmarks3d": (T, L, 3), "valid": (T,), "world_to_cam": (T, 4, 4),
                  "intrinsics": (3, 3), "canonical_shape": (L, 3), "reproj_error": (T,), "blink": (T,),
                  "eye_area": (T,), "mouth_open": (T,), "lip_box": (T, 4), "face_box": (T, 4)}
        for name, shape in shapes.items():
            assert f[name].shape == shape, name
        assert f["valid"][:].all()
        assert f.attrs["landmark_backend"] == "mediapipe" and f.attrs["n_landmarks"] == L
        assert len(f.attrs["rigid_indices"]) > 20
        assert np.median(f["reproj_error"][:]) < 1.5
        assert np.abs(f["canonical_shape"][:]).max() < 1.0
        K = f["intrinsics"][:]
        assert K[0, 2] == K[1, 2] == 96 and 100 < K[0, 0] < 1000
        lip = f["lip_box"][:]
        assert ((lip[:, 2] > lip[:, 0]) & (lip[:, 3] > lip[:, 1])).all() and lip.min() >= 0 and lip.max() <= 192
    png = bump_run / "track_preview.png"
    assert png.exists() and png.stat().st_size > 10_000


def test_rerun_is_up_to_date_and_json_goes_to_stdout(bump_run, clips, capsys):
    capsys.readouterr()
    rc = main(["track", str(clips["bump"]), "--run", str(bump_run), "--size", "192", "--json"])
    out = capsys.readouterr().out
    assert rc == 0 and json.loads(out)["status"] == "up to date"
    # --preview on an up-to-date run draws the sheet from the artifacts without tracking again
    png = bump_run / "track_preview.png"
    png.unlink()
    rc = main(["track", str(clips["bump"]), "--run", str(bump_run), "--size", "192", "--preview", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["status"] == "up to date" and summary["preview"] == str(png) and png.exists()


def test_no_face_fails_with_one_line_and_writes_nothing(tmp_path, capsys):
    video = fx.lavfi_clip(tmp_path / "pattern.mp4", seconds=1.5)
    run = tmp_path / "run"
    rc = main(["track", str(video), "--run", str(run), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 5
    assert err.startswith("error: no face found") and len(err.splitlines()) == 1
    assert _no_outputs(run)


def test_face_leaving_the_picture_for_two_seconds_fails_with_the_time_range(tmp_path, capsys):
    video = fx.face_clip(tmp_path / "leaves.mp4", n=125, width=160, height=160,
                         visible=lambda i: not 25 <= i < 75)
    run = tmp_path / "run"
    rc = main(["track", str(video), "--run", str(run), "--size", "128", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 5 and len(err.splitlines()) == 1
    assert "no face in 50 of 125 frames" in err and "1.00-3.00 s" in err and "trim" in err
    assert _no_outputs(run)


def test_a_short_gap_is_interpolated_and_flagged(tmp_path):
    video = fx.face_clip(tmp_path / "gap.mp4", n=100, width=160, height=160, visible=lambda i: not 40 <= i < 48)
    run = tmp_path / "run"
    assert main(["track", str(video), "--run", str(run), "--size", "128", "-q"]) == 0
    with h5py.File(run / "track.h5", "r") as f:
        valid = f["valid"][:]
        lm = f["landmarks2d"][:]
    assert (~valid).sum() >= 6 and not valid[42:46].any() and valid[:38].all() and valid[50:].all()
    assert np.isfinite(lm).all()
    # interpolated landmarks lie between their neighbours
    assert np.abs(lm[44] - (lm[38] + lm[50]) / 2).max() < 0.2 * 128


def test_two_faces_track_the_largest_one_with_a_warning(tmp_path, capsys):
    video = fx.face_clip(tmp_path / "two.mp4", n=30, width=384, height=216, two_faces=True)
    run = tmp_path / "run"
    rc = main(["track", str(video), "--run", str(run), "--size", "128", "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert rc == 0 and summary["two_faces"] is True
    assert "more than one face" in captured.err
    with h5py.File(run / "frames.h5", "r") as f:
        x0, y0, side = f.attrs["crop"]
    with h5py.File(run / "track.h5", "r") as f:
        centres = (f["face_box"][:, :2] + f["face_box"][:, 2:]) / 2 * side / 128 + [x0, y0]
    assert (centres[:, 0] < 2 * 384 / 3).all()  # always the big face on the left, never the one on the right


def test_portrait_video_gets_a_square_crop_inside_the_picture(tmp_path):
    video = fx.face_clip(tmp_path / "portrait.mp4", n=30, width=180, height=320)
    run = tmp_path / "run"
    assert main(["track", str(video), "--run", str(run), "--size", "128", "-q"]) == 0
    with h5py.File(run / "frames.h5", "r") as f:
        x0, y0, side = (int(v) for v in f.attrs["crop"])
        assert frame_images(f, "frames").shape == (30, 128, 128, 3)
        assert list(f.attrs["source_size"]) == [180, 320]
    assert side <= 180 and 0 <= x0 and x0 + side <= 180 and 0 <= y0 and y0 + side <= 320


def test_tiny_video_is_upscaled_with_a_warning_and_a_too_small_one_refused(tmp_path, capsys):
    video = fx.face_clip(tmp_path / "tiny.mp4", n=30, width=128, height=128)
    rc = main(["track", str(video), "--run", str(tmp_path / "run"), "--size", "320", "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert rc == 0 and summary["face_rate"] > 0.9
    side = summary["crop"][2]
    assert side <= 128 and f"upscaled {320 / side:.1f}x" in summary["warnings"][0]
    assert "upscaled" in captured.err  # the warning is also shown on the terminal
    small = fx.face_clip(tmp_path / "small.mp4", n=30, width=48, height=48)
    rc = main(["track", str(small), "--run", str(tmp_path / "run2"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc in (2, 5) and len(err.splitlines()) == 1  # too small for a crop, or no face found in it
    assert _no_outputs(tmp_path / "run2")


def test_audio_file_is_refused(tmp_path, capsys):
    from talkctl.media.ffmpeg import ffmpeg_exe

    wav = tmp_path / "speech.wav"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=2", str(wav)],
                   check=True)
    rc = main(["track", str(wav), "--run", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "has no video stream" in err and len(err.splitlines()) == 1
    assert _no_outputs(tmp_path / "run")


def test_too_short_clip_is_refused(tmp_path, capsys):
    video = fx.face_clip(tmp_path / "short.mp4", n=15, width=128, height=128)
    rc = main(["track", str(video), "--run", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "0.60 s long" in err and len(err.splitlines()) == 1
    assert _no_outputs(tmp_path / "run")


def test_frames_from_another_video_are_stale_and_rebuilt(bump_run, tmp_path, capsys):
    import shutil

    from talkctl.rundir import RunDir

    run = tmp_path / "copy"
    shutil.copytree(bump_run, run)
    other = fx.face_clip(tmp_path / "other.mp4", n=40, width=192, height=192)
    RunDir(run).set_video(other)  # the run now points at another video
    capsys.readouterr()
    assert main(["status", str(run), "--json"]) == 0
    rows = {r["artifact"]: r for r in json.loads(capsys.readouterr().out)["stages"]}
    assert rows["frames.h5"]["state"] == "stale" and "video" in rows["frames.h5"]["why"]
    assert rows["track.h5"]["state"] == "stale"
    assert main(["track", str(other), "--run", str(run), "--size", "192", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "done"
    with h5py.File(run / "frames.h5", "r") as fr, h5py.File(run / "track.h5", "r") as tr:
        assert frame_images(fr, "frames").shape[0] == tr["valid"].shape[0] == 40  # nothing mixed from the old video
        assert fr.attrs["fingerprint"] == tr.attrs["fingerprint"]
    assert main(["status", str(run), "--json"]) == 0
    rows = {r["artifact"]: r for r in json.loads(capsys.readouterr().out)["stages"]}
    assert rows["frames.h5"]["state"] == rows["track.h5"]["state"] == "done"


def test_face_alignment_backend_is_reported_missing():
    from talkctl.backends import available

    fa = {b.name: b for b in available("landmarks")}["face-alignment"]
    reason = fa.why_unusable("cpu")
    assert reason and "face-alignment is not installed" in reason and "pip install" in reason


def test_explicit_face_alignment_exits_3_with_one_line(bump_run, clips, tmp_path, capsys):
    rc = main(["track", str(clips["bump"]), "--run", str(tmp_path / "run"), "--landmarks", "face-alignment"])
    err = capsys.readouterr().err.strip()
    assert rc == 3 and len(err.splitlines()) == 1
    assert "face-alignment" in err and "not installed" in err
    assert _no_outputs(tmp_path / "run")


def test_cli_subprocess_json(clips, tmp_path):
    """The real entry point in a fresh process: stdout is exactly the JSON summary."""
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "talkctl", "track", str(clips["bump"]), "--run", str(run),
                           "--size", "128", "--preset", "tiny", "--json"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 60 and summary["face_rate"] == 1.0
    assert summary["median_reproj_px"] < 1.5 and summary["max_rotation_step_deg"] < 10
    assert "Created TensorFlow" not in proc.stderr  # the C++ side's chatter is kept off the terminal
