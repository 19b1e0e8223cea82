"""Artifact checksums (issue 19): a corrupted file is refused with exit 4 naming the file and
the stage that rebuilds it, `talkctl status --verify` finds it, `talkctl run` rebuilds it."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import damage
import trained_run
from talkctl import artifacts, h5files, pipeline
from talkctl.cli import main
from talkctl.errors import ArtifactError
from talkctl.rundir import RunDir
from repo import REPO as REPO_PATH

REPO = str(REPO_PATH)


def talkctl(*args, env=None):
    """The real entry point in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "talkctl", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def fake_run(fake_pipeline, tmp_path):
    video = tmp_path / "v.bin"
    video.write_bytes(b"abcdef")
    assert main(["run", str(tmp_path / "r"), "--video", str(video), "-q"]) == 0
    return RunDir(tmp_path / "r", create=False)


def test_every_object_is_checksummed_and_reads_verify(fake_run):
    with h5py.File(fake_run.file("a.h5"), "r") as f:
        sums = json.loads(f.attrs[h5files.CHECKSUM_ATTR])
        assert set(sums) == {"/", "/value"}
        assert h5files.verify(f) is None
    h5files.forget_verified()
    damage.scribble(fake_run.file("a.h5"), damage.stored_extents(fake_run.file("a.h5"))["value"][0][0], 8)
    with pytest.raises(ArtifactError, match=r"a\.h5 is corrupt \(checksum mismatch in /value\).*`talkctl fake-a --run "):
        artifacts.open_for_read(fake_run, "fake_a")
    assert artifacts.state(fake_run, "fake_a") == ("done", "")  # status without --verify reads attributes only
    assert artifacts.state(fake_run, "fake_a", verify=True)[0] == "invalid"


def test_status_verify_exits_4_and_run_rebuilds(fake_run, fake_pipeline, capsys):
    path = fake_run.file("a.h5")
    damage.scribble(path, damage.stored_extents(path)["value"][0][0], 8)
    assert main(["status", str(fake_run.path), "-q"]) == 0  # attributes still look right
    capsys.readouterr()
    assert main(["status", str(fake_run.path), "--verify", "--json"]) == 4
    cap = capsys.readouterr()
    rows = {r["artifact"]: r for r in json.loads(cap.out)["stages"]}
    assert rows["a.h5"]["state"] == "invalid" and "checksum" in rows["a.h5"]["why"]
    assert rows["b.h5"]["state"] == "done"
    line = cap.err.strip()
    assert len(line.splitlines()) == 1 and "a.h5 is corrupt" in line and "`talkctl fake-a --run " in line
    calls = dict(fake_pipeline.calls)
    assert main(["run", str(fake_run.path), "-q"]) == 0
    assert fake_pipeline.calls["a"] == calls["a"] + 1  # rebuilt like a missing file
    assert fake_pipeline.calls["b"] == calls["b"]  # same bytes, same fingerprint: b stays up to date
    assert main(["status", str(fake_run.path), "--verify", "-q"]) == 0


def test_file_without_checksums_still_reads(fake_run):
    """Run directories made before checksums existed keep working (nothing to verify)."""
    with h5py.File(fake_run.file("a.h5"), "a") as f:
        del f.attrs[h5files.CHECKSUM_ATTR]
    h5files.forget_verified()
    with artifacts.open_for_read(fake_run, "fake_a") as f:
        assert f["value"][0] == 6


def test_checksums_cover_chunked_data_and_attributes(tmp_path):
    path = tmp_path / "x.h5"
    with h5files.atomic(path) as f:
        ds = f.create_dataset("frames", data=np.arange(4 * 32 * 32, dtype=np.uint8).reshape(4, 32, 32),
                              **artifacts.frame_chunks((4, 32, 32)))
        ds.attrs["unit"] = "px"
        f.create_group("g").attrs["n"] = np.arange(3)
    assert h5files.verify_path(path) is None
    assert not (tmp_path / "x.h5.partial").exists()
    damage.corrupt_dataset(path, "frames", nbytes=16)
    h5files.forget_verified()
    assert "checksum mismatch in /frames" in h5files.verify_path(path)


# ---- the real stages, on a copy of the tiny trained run ------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def test_corrupt_torso_is_refused_then_rebuilt_by_run(trained, tmp_path, capsys):
    run = RunDir(damage.copy_run(trained[0], tmp_path / "run"), create=False)
    hit = damage.corrupt_dataset(run.file("torso.h5"))  # 4 KB in the hash-grid table, as the probe did
    assert "field" in hit or "net" in hit
    rc, out, err = talkctl("status", run.path, "--verify")
    assert rc == 4, err
    assert err.strip().splitlines()[-1].startswith("error:") and "torso.h5 is corrupt" in err
    assert f"`talkctl train-torso --run {run.path}`" in err
    capsys.readouterr()
    assert main(["render", "--run", str(run.path), "--device", "cpu", "-q"]) == 4
    err = capsys.readouterr().err
    assert "torso.h5 is corrupt" in err and "talkctl train-torso" in err and len(err.strip().splitlines()) == 1
    before = run.file("torso.h5").stat().st_mtime_ns
    cfg = damage.config_file(tmp_path / "tiny.toml")
    assert main(["run", str(run.path), "--to", "train-torso", "--preset", "tiny", "--config", str(cfg),
                 "--device", "cpu", "--json"]) == 0
    states = {s["stage"]: s["status"] for s in json.loads(capsys.readouterr().out)}
    assert states["train-torso"] == "done" and states["train-deform"] == "up to date", states
    assert run.file("torso.h5").stat().st_mtime_ns != before
    assert main(["status", str(run.path), "--verify", "-q"]) == 0


def test_corrupt_compressed_frames_are_refused_by_the_reader(trained, tmp_path, capsys):
    run = RunDir(damage.copy_run(trained[0], tmp_path / "run"), create=False)
    with h5py.File(run.file("frames.h5"), "r") as f:  # the JPEG bytes, or the source video's (frame_cache)
        name = "frames/data" if "frames/data" in f else "frames/source"
    damage.corrupt_dataset(run.file("frames.h5"), name, nbytes=256)
    capsys.readouterr()
    rc = main(["train-deform", "--run", str(run.path), "--preset", "tiny", "--device", "cpu", "-q", "--force"])
    err = capsys.readouterr().err
    assert rc == 4 and "frames.h5 is corrupt" in err and "`talkctl track --run " in err, err


def test_damage_in_a_file_without_checksums_is_traced_to_it(trained, tmp_path, capsys):
    """An old file (no checksums) whose deflated chunks are damaged: the HDF5 read failure
    is traced to the file and its stage instead of an internal error."""
    run = RunDir(damage.copy_run(trained[0], tmp_path / "run"), create=False)
    with h5py.File(run.file("parse.h5"), "a") as f:
        del f.attrs[h5files.CHECKSUM_ATTR]
    damage.corrupt_dataset(run.file("parse.h5"), "labels", nbytes=64, every_chunk=True)
    h5files.forget_verified()
    capsys.readouterr()
    rc = main(["train-deform", "--run", str(run.path), "--preset", "tiny", "--device", "cpu", "-q", "--force"])
    err = capsys.readouterr().err
    assert rc == 4 and "parse.h5 is damaged" in err and "talkctl parse --run" in err, err
    assert "internal error" not in err
