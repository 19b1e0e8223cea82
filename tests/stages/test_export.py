"""`talkctl export`: the head as INRIA .ply and web .splat files, read back by an independent reader."""
import json

import numpy as np
import pytest

import trained_run
from talkctl.cli import main
from talkctl.gs.gaussians import SH_C0

plyfile = pytest.importorskip("plyfile", reason="plyfile (the `dev` extra) reads the exported PLY back")

SPLAT = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _export(capsys, run, *args):
    capsys.readouterr()
    rc = main(["export", "--run", str(run.path), "--json", "-q", "--device", "cpu", *args])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else None), cap.err


def _canonical(run):
    from talkctl.head.models import load_head

    return load_head(run, "cpu", "torch").gaussians.state_arrays()


def test_canonical_ply_reads_back_with_plyfile(trained, tmp_path, capsys):
    run, _ = trained
    rc, s, err = _export(capsys, run, "-o", str(tmp_path / "head.ply"))
    assert rc == 0, err
    g = _canonical(run)
    v = plyfile.PlyData.read(str(tmp_path / "head.ply"))["vertex"]
    n = len(g["means"])
    assert v.count == n == s["gaussians"]
    names = set(v.data.dtype.names)
    assert {"x", "y", "z", "nx", "f_dc_0", "opacity", "scale_0", "rot_0", "rot_3"} <= names
    np.testing.assert_allclose(np.stack([v["x"], v["y"], v["z"]], 1), g["means"], rtol=0, atol=0)
    np.testing.assert_allclose(v["opacity"], g["opacity_logits"].reshape(-1))
    np.testing.assert_allclose(np.stack([v[f"scale_{i}"] for i in range(3)], 1), g["log_scales"])
    np.testing.assert_allclose(np.stack([v[f"rot_{i}"] for i in range(4)], 1), g["quats"])


def test_splat_is_32_bytes_a_splat_with_colours_and_rotations(trained, tmp_path, capsys):
    run, _ = trained
    rc, s, err = _export(capsys, run, "--format", "splat", "-o", str(tmp_path / "head.splat"))
    assert rc == 0, err
    g = _canonical(run)
    raw = (tmp_path / "head.splat").read_bytes()
    n = len(g["means"])
    assert len(raw) == 32 * n
    rec = np.frombuffer(raw, SPLAT)
    # the same set of positions (reordered: biggest, most opaque first)
    order = np.lexsort(g["means"].T)
    got = rec["pos"][np.lexsort(rec["pos"].T)]
    np.testing.assert_allclose(got, g["means"][order], atol=1e-6)
    opacity = 1.0 / (1.0 + np.exp(-g["opacity_logits"].astype(np.float64).reshape(-1)))
    weight = np.exp(g["log_scales"].astype(np.float64).sum(1)) * opacity  # computed as the writer does
    np.testing.assert_allclose(rec["pos"], g["means"][np.argsort(-weight, kind="stable")], atol=1e-6)
    q = (rec["rot"].astype(np.float64) - 128) / 128
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=0.03)
    dc = np.clip(g["sh_dc"] * SH_C0 + 0.5, 0, 1)
    assert abs(np.sort(rec["rgba"][:, :3].astype(float).ravel()).mean() - (dc * 255).mean()) < 1.0


def test_deformed_frames_differ_and_bad_ranges_are_one_line(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "frames"
    rc, s, err = _export(capsys, run, "--frames", "0:3", "-o", str(out))
    assert rc == 0, err
    files = sorted(out.glob("head_*.ply"))
    assert [f.name for f in files] == ["head_00000.ply", "head_00001.ply", "head_00002.ply"]
    canon = _canonical(run)["means"]
    xyz = [np.stack([plyfile.PlyData.read(str(f))["vertex"][c] for c in "xyz"], 1) for f in files]
    assert all(x.shape == canon.shape for x in xyz)
    assert any(np.abs(x - canon).max() > 0 for x in xyz)  # the field moved the head
    rc, s, err = _export(capsys, run, "--frame", "1", "-o", str(tmp_path / "one.ply"))
    assert rc == 0, err
    np.testing.assert_allclose(np.stack([plyfile.PlyData.read(str(tmp_path / "one.ply"))["vertex"][c] for c in "xyz"], 1),
                               xyz[1], atol=1e-4)  # batch shapes change float rounding only
    for bad, msg in ((["--frames", "3:1"], "0 <= a < b"), (["--frames", "x"], "is not a:b"),
                     (["--format", "obj"], "unknown export format")):
        rc, _, err = _export(capsys, run, *bad)
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err
