import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import h5py
import numpy as np
import pytest

from talkctl.errors import ArtifactError, InputError
from talkctl.head.poses import from_arrays, ping_pong_indices, pose_sequence, read_pose_file
from talkctl.rundir import RunDir


def _poses(n):
    w2c = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    w2c[:, 0, 3] = np.arange(n)  # frame index in the translation, to trace where poses came from
    blink = (np.arange(n) % 3 == 0).astype(np.float32)
    return w2c, blink


def test_ping_pong_indices():
    assert ping_pong_indices(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert ping_pong_indices(4, 6, start=2).tolist() == [2, 3, 2, 1, 0, 1]
    assert ping_pong_indices(1, 3).tolist() == [0, 0, 0]
    idx = ping_pong_indices(7, 500, start=5)
    assert np.abs(np.diff(idx)).max() == 1  # never jumps
    with pytest.raises(InputError):
        ping_pong_indices(4, 3, start=4)


def test_from_arrays_pingpong_and_still():
    w2c, blink = _poses(5)
    seq = from_arrays(w2c, blink, 12, start=3)
    assert seq.world_to_cam.shape == (12, 4, 4) and seq.blink.shape == (12,)
    assert seq.world_to_cam[:, 0, 3].tolist() == [3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2]
    assert np.array_equal(seq.blink, blink[seq.source_frames])
    assert "ping-pong" in seq.description and "frame 3" in seq.description
    still = from_arrays(w2c, blink, 6, start=2, mode="still")
    assert (still.world_to_cam[:, 0, 3] == 2).all()
    assert still.blink.tolist() == blink[[2, 3, 4, 3, 2, 1]].tolist()  # eyes keep blinking
    assert "held still" in still.description
    opened = from_arrays(w2c, blink, 6, blink_mode="open")
    assert (opened.blink == 0).all()
    assert (from_arrays(w2c, None, 4).blink == 0).all()


def test_bad_poses_are_input_errors():
    w2c, blink = _poses(3)
    with pytest.raises(InputError):
        from_arrays(w2c[:, :3], None, 4)
    bad = w2c.copy()
    bad[1, 3, 0] = 1
    with pytest.raises(InputError):
        from_arrays(bad, None, 4)
    with pytest.raises(InputError):
        from_arrays(w2c, blink[:2], 4)


def test_npz_and_track_h5_and_run_dir(tmp_path):
    w2c, blink = _poses(6)
    np.savez(tmp_path / "p.npz", world_to_cam=w2c, blink=blink)
    seq = pose_sequence(tmp_path / "p.npz", 8)
    assert seq.world_to_cam[:, 0, 3].tolist() == [0, 1, 2, 3, 4, 5, 4, 3]
    assert pose_sequence(f"still:{tmp_path / 'p.npz'}", 3, start=4).world_to_cam[:, 0, 3].tolist() == [4, 4, 4]
    np.savez(tmp_path / "nob.npz", world_to_cam=w2c)
    assert read_pose_file(tmp_path / "nob.npz")[1] is None
    np.savez(tmp_path / "wrong.npz", poses=w2c)
    with pytest.raises(InputError, match="world_to_cam"):
        read_pose_file(tmp_path / "wrong.npz")
    with pytest.raises(InputError):
        read_pose_file(tmp_path / "missing.npz")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputError):
        read_pose_file(tmp_path / "junk.h5")

    run = RunDir(tmp_path / "run")
    with pytest.raises(ArtifactError):
        pose_sequence("train", 4, run=run)
    with h5py.File(run.file("track.h5"), "w") as f:  # the attributes a track stage writes
        f.attrs.update({"schema": "talkctl.track", "schema_version": 1})
        f["world_to_cam"] = w2c
        f["blink"] = blink
    seq = pose_sequence("train", 7, start=1, run=run)
    assert seq.world_to_cam[:, 0, 3].tolist() == [1, 2, 3, 4, 5, 4, 3]
    assert "training track" in seq.metadata()["pose"]
    assert pose_sequence("still", 2, start=5, run=run).world_to_cam[:, 0, 3].tolist() == [5, 5]
    other = pose_sequence(tmp_path / "run", 3)  # another run directory -> its track.h5
    assert other.world_to_cam[:, 0, 3].tolist() == [0, 1, 2]
