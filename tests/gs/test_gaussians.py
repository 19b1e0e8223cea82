"""Gaussian model: parameters, HDF5 round trip, 3DGS PLY export, quaternion helpers."""
import h5py
import numpy as np
import torch

from talkctl.gs.gaussians import (GaussianModel, ply_fields, quat_multiply, quat_to_rotmat, read_ply)


def _model(n=50, degree=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = GaussianModel.random(n, (-1, -1, -1), (1, 1, 1), sh_degree=degree, generator=g)
    m.params["sh_rest"].data.normal_(generator=g)
    m.params["quats"].data.normal_(generator=g)
    return m


def test_random_init_in_box_and_activations():
    m = _model(200)
    assert m.num == 200
    assert bool((m.means.abs() <= 1).all())
    assert torch.allclose(m.quats.norm(dim=1), torch.ones(200))
    assert bool(((m.opacities > 0.09) & (m.opacities < 0.11)).all())
    assert m.params["sh_rest"].shape == (200, 8, 3)  # degree 2: 9 coefficients, 8 beyond DC
    colors, deg = m.color_inputs(1)
    assert deg == 1 and colors.shape == (200, 9, 3)
    colors, deg = m.color_inputs(0)
    assert deg is None and colors.shape == (200, 3) and bool(((colors >= 0.39) & (colors <= 0.61)).all())


def test_h5_round_trip(tmp_path):
    m = _model()
    with h5py.File(tmp_path / "g.h5", "w") as f:
        m.save_h5(f.create_group("head"))
    with h5py.File(tmp_path / "g.h5", "r") as f:
        back = GaussianModel.load_h5(f["head"])
    assert back.sh_degree == 2
    for k, v in m.params.items():
        assert torch.equal(v, back.params[k]), k


def test_ply_has_the_3dgs_names_and_values(tmp_path):
    m = _model(30, degree=1)
    path = m.write_ply(tmp_path / "static.ply")
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header and "element vertex 30" in header
    names = [line.split()[2] for line in header.splitlines() if line.startswith("property")]
    assert names == ply_fields(3)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    data = read_ply(path)
    p = {k: v.detach().numpy() for k, v in m.params.items()}
    assert np.allclose(data["x"], p["means"][:, 0]) and np.allclose(data["z"], p["means"][:, 2])
    assert np.allclose(data["f_dc_1"], p["sh_dc"][:, 1])
    # reference order: all coefficients of red first, then green, then blue
    assert np.allclose(data["f_rest_0"], p["sh_rest"][:, 0, 0])
    assert np.allclose(data["f_rest_1"], p["sh_rest"][:, 1, 0])
    assert np.allclose(data["f_rest_3"], p["sh_rest"][:, 0, 1])
    assert np.allclose(data["opacity"], p["opacity_logits"])
    assert np.allclose(data["scale_2"], p["log_scales"][:, 2])
    assert np.allclose(data["rot_0"], p["quats"][:, 0])
    assert np.all(data["nx"] == 0)


def test_quaternion_product_matches_rotation_product():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-5)
    ident = torch.tensor([[1.0, 0, 0, 0]])
    assert torch.allclose(quat_multiply(a, ident), a)
