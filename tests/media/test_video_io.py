import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import subprocess

import numpy as np
import pytest

from media_helpers import read_video_frames
from talkctl.errors import InputError, StageError
from talkctl.media.ffmpeg import ffmpeg_exe, probe
from talkctl.media.audio import decode_audio
from talkctl.media.video_out import VideoWriter, paste_full_frame


def _frame(i: int, w: int, h: int) -> np.ndarray:
    """A smooth picture that changes with i (H.264 keeps it nearly intact)."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)).astype(np.uint8)
    g = (y * 255 // max(h - 1, 1)).astype(np.uint8)
    b = np.full((h, w), (i * 10) % 256, np.uint8)
    return np.stack([r, g, b], -1)


def _sine(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_audio_longer_than_frames_pads_with_last_frame(tmp_path):
    out = tmp_path / "out.mp4"
    with VideoWriter(out, fps=25, size=(64, 48), audio=_sine(1.52)) as vw:
        for i in range(10):
            vw.write(_frame(i, 64, 48))
    st = vw.stats()
    assert st["frames"] == 38 and st["frames_written"] == 10 and st["frames_padded"] == 28
    info = probe(out)
    assert info["video"]["width"] == 64 and info["video"]["height"] == 48
    assert info["audio"] is not None
    frames = list(read_video_frames(out))
    assert len(frames) == 38
    # padding repeats the last written frame
    assert np.abs(frames[-1].astype(int) - _frame(9, 64, 48)).mean() < 3
    assert not (tmp_path / "out.partial.mp4").exists()
    back = decode_audio(out)
    assert abs(len(back) / 16000 - 38 / 25) < 0.03  # AAC priming aside, durations match


def test_extra_frames_are_dropped_and_content_survives(tmp_path):
    out = tmp_path / "o.mp4"
    with VideoWriter(out, size=(64, 64), audio=_sine(1.0)) as vw:
        for i in range(30):
            vw.write(_frame(i, 64, 64).astype(np.float32) / 255.0)  # float frames accepted
    assert vw.stats()["frames"] == 25 and vw.frames_dropped == 5
    frames = list(read_video_frames(out))
    assert len(frames) == 25
    mse = np.mean((frames[7].astype(float) - _frame(7, 64, 64)) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-9)) > 35


def test_audio_from_file_and_odd_size(tmp_path):
    wav = tmp_path / "a.wav"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=0.8",
                    "-ar", "44100", str(wav)], check=True)
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, size=(33, 21), audio=wav) as vw:
        vw.write(_frame(0, 33, 21))
    assert vw.target_frames == 20
    info = probe(out)
    assert (info["video"]["width"], info["video"]["height"]) == (34, 22)  # padded to even for yuv420p
    assert len(list(read_video_frames(out))) == 20


def test_no_audio_keeps_every_frame(tmp_path):
    out = tmp_path / "silent.mp4"
    with VideoWriter(out, size=(32, 32), metadata={"comment": "talkctl render; poses: still"}) as vw:
        for i in range(7):
            vw.write(_frame(i, 32, 32))
    assert probe(out)["audio"] is None
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "talkctl render; poses: still" in listing
    assert len(list(read_video_frames(out))) == 7
    assert vw.stats()["encode_seconds"] > 0


def test_error_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "fail.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, size=(32, 32), audio=_sine(2.0)) as vw:
            for i in range(5):
                vw.write(_frame(i, 32, 32))
            proc = vw._proc
            raise KeyboardInterrupt
    assert proc.poll() is not None  # ffmpeg was stopped
    assert sorted(os.listdir(tmp_path)) == []


def test_bad_frame_shape_aborts_cleanly(tmp_path):
    out = tmp_path / "shape.mp4"
    with pytest.raises(ValueError):
        with VideoWriter(out, size=(32, 32)) as vw:
            vw.write(np.zeros((16, 16, 3), np.uint8))
    assert not out.exists() and not (tmp_path / "shape.partial.mp4").exists()


def test_unwritable_output_is_one_line_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError) as e:
        with VideoWriter(blocker / "sub" / "out.mp4", size=(32, 32)):
            pass
    assert "\n" not in e.value.message and "writable" in e.value.message
    with pytest.raises(InputError):
        VideoWriter(tmp_path, size=(32, 32)).open()  # a directory as output


def test_no_frames_is_stage_error(tmp_path):
    with pytest.raises(StageError):
        with VideoWriter(tmp_path / "empty.mp4", size=(32, 32)):
            pass
    assert os.listdir(tmp_path) == []


def test_read_video_frames_resamples_and_stops_early(tmp_path):
    src = tmp_path / "src.mp4"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=30:duration=1",
                    "-pix_fmt", "yuv420p", str(src)], check=True)
    frames = list(read_video_frames(src, fps=25))
    assert len(frames) == 25 and frames[0].shape == (32, 48, 3) and frames[0].dtype == np.uint8
    assert len(list(read_video_frames(src, fps=None))) == 30
    gen = read_video_frames(src)
    next(gen)
    gen.close()  # must not hang or leave ffmpeg running
    with pytest.raises(InputError):
        next(read_video_frames(tmp_path / "missing.mp4"))


def test_paste_full_frame_inside_outside_and_resized():
    src = np.zeros((40, 60, 3), np.uint8)
    render = np.full((10, 10, 3), 200, np.uint8)
    out = paste_full_frame(render, src, [5, 7, 10])
    assert (out[7:17, 5:15] == 200).all() and out.sum() == 200 * 3 * 100
    assert src.sum() == 0  # input untouched
    # crop partly outside the frame (padded crop): only the overlap is pasted
    render = np.arange(20 * 20 * 3, dtype=np.int64).reshape(20, 20, 3) % 251
    render = render.astype(np.uint8)
    out = paste_full_frame(render, src, [-5, 30, 20])
    assert np.array_equal(out[30:40, 0:15], render[0:10, 5:20])
    assert out[:30].sum() == 0 and out[:, 15:].sum() == 0
    # render at another resolution than the crop side is resized
    out = paste_full_frame(np.full((64, 64, 3), 90, np.uint8), src, [10, 10, 16])
    assert (out[10:26, 10:26] == 90).all() and out[:10].sum() == 0
    # a mask blends
    out = paste_full_frame(np.full((4, 4, 3), 100, np.uint8), np.full((8, 8, 3), 50, np.uint8), [2, 2, 4],
                           mask=np.full((4, 4), 0.5, np.float32))
    assert out[3, 3, 0] == 75 and out[0, 0, 0] == 50
    # entirely outside: unchanged
    assert paste_full_frame(np.ones((4, 4, 3), np.uint8), src, [100, 100, 4]).sum() == 0


def test_ffmpeg_dying_midway_is_stage_error_and_leaves_nothing(tmp_path):
    out = tmp_path / "dies.mp4"
    with pytest.raises(StageError, match="ffmpeg"):
        with VideoWriter(out, size=(64, 64), audio=_sine(4.0), queue_frames=2) as vw:
            vw.write(_frame(0, 64, 64))
            vw._proc.kill()
            for i in range(100):  # the writer notices on a later write or at close
                vw.write(_frame(i, 64, 64))
    assert os.listdir(tmp_path) == []


def test_bad_audio_file_leaves_nothing(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"not audio at all")
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "out" / "a.mp4", size=(32, 32), audio=tmp_path / "nope.wav").open()
    assert os.listdir(tmp_path / "out") == []
    with pytest.raises(InputError, match="audio"):
        with VideoWriter(tmp_path / "out" / "b.mp4", size=(32, 32), audio=tmp_path / "x.wav"):
            pass
    assert os.listdir(tmp_path / "out") == []


def test_audio_timestamp_gap_is_silence_on_the_files_timeline(tmp_path):
    """A file joined from clips has jumps in its audio timestamps: decoding must keep the sound
    where the timestamps put it (gap = silence), or the audio drifts ahead of the video."""
    path = tmp_path / "gap.m4a"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=16000:duration=2", "-af",
                    "asetpts='PTS+gte(N\\,16000)*0.5/TB'", "-c:a", "aac", str(path)], check=True)
    wav = decode_audio(path)
    assert abs(len(wav) / 16000 - 2.5) < 0.05  # 2 s of tone on a 2.5 s timeline
    rms = np.sqrt(np.convolve(wav.astype(np.float64) ** 2, np.ones(800) / 800, mode="valid"))
    quiet = rms < 0.01
    assert 0.4 < quiet.sum() / 16000 < 0.6 and rms[:8000].min() > 0.05 and rms[-8000:].min() > 0.05
