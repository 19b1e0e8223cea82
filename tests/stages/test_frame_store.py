"""frames.h5 holding the source video (frame_cache.py) through `talkctl track`: the same frames as
the JPEG layout, read through a cache that is rebuilt when missing or damaged and kept within its
size limit; auto picks the smaller form."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from talkctl import frame_cache, h5files
from talkctl.cli import main
from talkctl.jpeg_frames import frame_images

import track_fixtures as fx  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "bump.mp4"
    fx.bump_clip(path, n=40, size=128)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKCTL_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "frames"


def _track(clip, run, store: str) -> None:
    assert main(["track", str(clip), "--run", str(run), "--size", "128", "-q", "--set", f"frame_store={store}"]) == 0


def _frames(run) -> np.ndarray:
    with h5py.File(run / "frames.h5", "r") as f:
        return frame_images(f, "frames")[:]


def test_source_store_reads_the_same_frames_and_rebuilds_its_cache(clip, tmp_path, cache, capsys):
    _track(clip, tmp_path / "jpeg", "jpeg")
    _track(clip, tmp_path / "src", "source")
    assert not list((tmp_path / "src").glob("*partial"))  # nothing staged is left behind
    with h5py.File(tmp_path / "src" / "frames.h5", "r") as f:
        g = f["frames"]
        assert g.attrs["codec"] == "source" and g["source"][()].tobytes() == clip.read_bytes()
        digest = str(g.attrs["digest"])
    with h5py.File(tmp_path / "jpeg" / "frames.h5", "r") as f:
        assert str(f["frames"].attrs["digest"]) == digest  # the very JPEG bytes the source decodes to
    want = _frames(tmp_path / "jpeg")
    entry = cache / f"{digest}.h5"
    assert entry.exists() and want.shape == (40, 128, 128, 3)
    assert np.array_equal(_frames(tmp_path / "src"), want)

    entry.unlink()  # evicted: rebuilt from the bytes in frames.h5, even with the video gone
    moved = clip.with_name("gone.mp4")
    clip.rename(moved)
    try:
        assert np.array_equal(_frames(tmp_path / "src"), want) and entry.exists()
    finally:
        moved.rename(clip)

    with open(entry, "r+b") as fh:  # damaged: noticed by its checksums, rebuilt with a warning
        fh.seek(entry.stat().st_size // 2)
        fh.write(os.urandom(2048))
    h5files.forget_verified()
    capsys.readouterr()
    assert np.array_equal(_frames(tmp_path / "src"), want)
    assert "is damaged" in " ".join(capsys.readouterr().err.split())


def test_auto_stores_the_smaller_form(clip, tmp_path, cache):
    _track(clip, tmp_path / "auto", "auto")
    with h5py.File(tmp_path / "auto" / "frames.h5", "r") as f:
        kind = f["frames"].attrs["codec"]
        digest = str(f["frames"].attrs["digest"])
    _track(clip, tmp_path / "jpeg", "jpeg")
    with h5py.File(tmp_path / "jpeg" / "frames.h5", "r") as f:
        jpeg_bytes = f["frames/data"].shape[0]
    assert kind == ("source" if clip.stat().st_size < jpeg_bytes else "jpeg")
    assert (cache / f"{digest}.h5").exists() == (kind == "source")  # a JPEG frames.h5 needs no cache


def test_cache_keeps_the_most_recent_entries_within_its_limit(clip, tmp_path, cache, monkeypatch):
    _track(clip, tmp_path / "a", "source")
    (old,) = cache.glob("*.h5")
    os.utime(old, (1, old.stat().st_mtime))  # used long ago
    (cache / ("0" * 64 + ".h5")).write_bytes(b"x" * 1000)  # another subject's, used now
    monkeypatch.setenv("TALKCTL_CACHE_GB", str(2000 / 1e9))
    frame_cache.evict()
    assert not old.exists() and (cache / ("0" * 64 + ".h5")).exists()
    assert np.array_equal(_frames(tmp_path / "a").shape, (40, 128, 128, 3))  # rebuilt on demand
    assert old.exists()  # the entry in use is kept, though over the limit


def test_unknown_frame_store_is_refused_before_any_work(clip, tmp_path, cache):
    run = tmp_path / "r"
    assert main(["track", str(clip), "--run", str(run), "-q", "--set", "frame_store=png"]) == 2
    assert not list(run.glob("*.h5")) and not list(run.glob("*.partial"))


def test_a_cache_that_cannot_be_written(clip, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TALKCTL_CACHE_DIR", str(blocker / "cache"))  # below a file: cannot be made
    capsys.readouterr()
    assert main(["track", str(clip), "--run", str(tmp_path / "forced"), "--size", "128", "-q",
                 "--set", "frame_store=source"]) == 5
    err = " ".join(capsys.readouterr().err.split())
    assert "is not writable" in err and "TALKCTL_CACHE_DIR" in err
    assert not list((tmp_path / "forced").glob("*.h5"))
    _track(clip, tmp_path / "auto", "auto")  # auto keeps the JPEG frames instead, and says so
    with h5py.File(tmp_path / "auto" / "frames.h5", "r") as f:
        assert f["frames"].attrs["codec"] == "jpeg"
    assert "keeps the JPEG frames" in " ".join(capsys.readouterr().err.split())


def test_two_processes_rebuilding_one_entry_at_once(clip, tmp_path, cache):
    import subprocess
    import sys

    _track(clip, tmp_path / "r", "source")
    (entry,) = cache.glob("*.h5")
    want = _frames(tmp_path / "r")
    entry.unlink()
    code = ("import sys, h5py, numpy as np; from talkctl.jpeg_frames import frame_images; "
            "f = h5py.File(sys.argv[1], 'r'); np.save(sys.argv[2], frame_images(f, 'frames')[:])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r" / "frames.h5"), str(tmp_path / f"{i}.npy")])
             for i in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    for i in range(2):
        assert np.array_equal(np.load(tmp_path / f"{i}.npy"), want)
    assert [p.name for p in cache.iterdir()] == [entry.name]  # one entry, nothing private left
