"""Tri-plane hash-grid encoder: layout, interpolation, hashing, bounds, gradients, backends."""
from __future__ import annotations

import copy

import pytest
import torch

from talkctl.errors import MissingToolError, UsageError
from talkctl.kernels.hashgrid import TriplaneHashGrid
from talkctl.kernels.hashgrid.levels import PRIME_Y, make_levels
from talkctl.kernels.hashgrid.torch_impl import LevelTensors, encode, slot_indices

F64 = torch.float64
HAS_CUDA = torch.cuda.is_available()


def small(**kw):
    cfg = dict(n_levels=4, features_per_level=1, base_resolution=6, max_resolution=40,
               log2_hashmap_size=8, bounds=(-1.0, 1.0))
    cfg.update(kw)
    torch.manual_seed(0)
    enc = TriplaneHashGrid(**cfg)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)  # make features large enough to compare meaningfully
    return enc


def test_shapes_and_default_layout():
    enc = TriplaneHashGrid()
    assert enc.out_dim == 3 * 14 * 1
    y = enc(torch.rand(7, 3) * 2 - 1)
    assert y.shape == (7, 42) and y.dtype == torch.float32
    lv = enc.levels
    assert lv[0].resolution == 64 and lv[0].dense
    assert lv[-1].resolution == 513 and not lv[-1].dense  # tcnn's float32 formula: scale 511.0002
    res = [x.resolution for x in lv]
    assert res == sorted(res) and len(set(res)) == len(res)  # coarse to fine, growing
    assert all(x.size <= 1 << 16 for x in lv)  # table size respected
    assert enc.table.shape == (3, lv[-1].offset + lv[-1].size, 1)
    # dense exactly while the level's grid fits the table
    assert all(x.dense == (x.resolution ** 2 <= 1 << 16) for x in lv)


def _libm():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("m")
    if name is None:
        pytest.skip("no C math library to compare with")
    lib = ctypes.CDLL(name)
    for fn in (lib.log2f, lib.exp2f):
        fn.argtypes, fn.restype = [ctypes.c_float], ctypes.c_float
    return lib


@pytest.mark.parametrize("n_levels,base,top,log2_size,top_res", [
    (14, 16, 512, 17, 512), (8, 16, 256, 14, 256), (14, 64, 512, 16, 513)])
def test_level_scales_follow_tcnn_host_formula(n_levels, base, top, log2_size, top_res):
    """tcnn sizes its tables on the host with float32 C code:
    exp2f(l * log2f(per_level_scale)) * base - 1.0f. Evaluate it with the C library's own
    log2f/exp2f (float32 products via numpy) and compare bit for bit."""
    import numpy as np

    from talkctl.kernels.hashgrid.levels import per_level_scale

    lib = _libm()
    f32 = np.float32
    b = f32(per_level_scale(n_levels, base, top))
    log2b = f32(lib.log2f(b))
    expected = [float(f32(f32(lib.exp2f(f32(lvl) * log2b)) * f32(base)) - f32(1.0))
                for lvl in range(n_levels)]
    levels = make_levels(n_levels, base, top, log2_size)
    assert [lv.scale for lv in levels] == expected
    # numpy's float32 log2/exp2 gave 513 and 257 for the first two (1-6 ulp off)
    assert levels[-1].resolution == top_res


def test_bilinear_reproduces_linear_functions_on_dense_levels():
    enc = small(n_levels=1, base_resolution=9, max_resolution=9, log2_hashmap_size=10)
    (lv,) = enc.levels
    assert lv.dense
    i, j = torch.meshgrid(torch.arange(lv.resolution), torch.arange(lv.resolution), indexing="ij")
    with torch.no_grad():
        enc.table.zero_()
        for p in range(3):  # value at vertex (i, j) = 0.5 i - 0.25 j + p
            enc.table[p, (i + j * lv.resolution).reshape(-1), 0] = \
                (0.5 * i - 0.25 * j + p).reshape(-1).float()
    # pos = u*8 + 0.5 must stay below 8 (x < 0.875): in the last half cell tcnn's layout
    # (which we keep for compatible tables) wraps the missing vertex to the next row.
    x = torch.rand(50, 3, dtype=torch.float32) * 1.8 - 0.95
    y = enc(x)
    u = (x + 1) / 2
    pos = u * lv.scale + 0.5
    for p, (a, b) in enumerate(((0, 1), (1, 2), (0, 2))):
        expected = 0.5 * pos[:, a] - 0.25 * pos[:, b] + p
        torch.testing.assert_close(y[:, p], expected, atol=1e-5, rtol=0)


def test_hash_collisions_share_a_slot_and_slots_stay_in_table():
    enc = small(n_levels=1, base_resolution=40, max_resolution=40, log2_hashmap_size=7)
    (lv,) = enc.levels
    assert not lv.dense and lv.size == 128
    # find two different vertices with the same hashed slot
    i = torch.arange(lv.resolution)
    ii, jj = torch.meshgrid(i, i, indexing="ij")
    slot = (ii ^ (jj * PRIME_Y)) & (lv.size - 1)
    flat = slot.reshape(-1)
    inner = ((ii > 0) & (ii < lv.resolution - 1) & (jj > 0) & (jj < lv.resolution - 1)).reshape(-1)
    a = int(torch.nonzero(inner)[0])  # vertices on the edge of [0, 1]² are not reachable exactly
    b = int(torch.nonzero((flat == flat[a]) & inner).reshape(-1)[1])
    va = (int(ii.reshape(-1)[a]), int(jj.reshape(-1)[a]))
    vb = (int(ii.reshape(-1)[b]), int(jj.reshape(-1)[b]))
    assert va != vb

    def point_at(v):  # x whose xy-plane position sits exactly on vertex v (pos = u*scale + 0.5)
        u = (torch.tensor(v, dtype=F64) - 0.5) / lv.scale
        return torch.tensor([[u[0] * 2 - 1, u[1] * 2 - 1, 0.0]], dtype=torch.float32)

    ya, yb = enc(point_at(va))[0, 0], enc(point_at(vb))[0, 0]
    assert torch.allclose(ya, yb, atol=1e-5)
    assert torch.allclose(ya, enc.table[0, int(flat[a]), 0], atol=1e-5)
    # every slot index of random points stays within its level and the table
    lt = LevelTensors(enc.levels, "cpu", torch.float32)
    rows, _ = slot_indices(torch.rand(1000, 2), lt)
    assert rows.min() >= 0 and rows.max() < lv.size == enc.table.shape[1]


def test_dense_levels_have_no_collisions():
    levels = make_levels(3, 8, 20, 12)
    lt = LevelTensors(levels, "cpu", F64)
    for k, lv in enumerate(levels):
        assert lv.dense
        # the centre of cell (i, j) is at pos = u * scale + 0.5 = (i + ½, j + ½): its first
        # corner is vertex (i, j); all cells inside [0, 1]² must give distinct slots
        idx = torch.arange(int(lv.scale) + 1, dtype=F64)
        g = torch.stack(torch.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2)
        rows, _ = slot_indices((g / lv.scale).clamp(0, 1), lt)
        first = rows[:, k, 0]
        assert first.unique().numel() == first.numel() == g.shape[0]


def test_box_bounds_per_axis():
    cube = small(bounds=(-1.0, 1.0))
    box = small(bounds=((-2.0, -1.0, 0.0), (2.0, 1.0, 4.0)))
    box.load_state_dict(cube.state_dict())
    x = torch.rand(20, 3) * 2 - 1
    torch.testing.assert_close(box(x * torch.tensor([2.0, 1.0, 2.0]) + torch.tensor([0, 0, 2.0])),
                               cube(x))
    with pytest.raises(ValueError, match="bounds"):
        small(bounds=(1.0, -1.0))


def test_out_of_bounds_points_are_clamped_to_the_box():
    enc = small(bounds=(-0.5, 1.5))
    inside = torch.tensor([[1.5, -0.5, 0.3], [0.2, 1.5, 1.5]])
    outside = torch.tensor([[9.0, -7.0, 0.3], [0.2, 2.0, 100.0]], requires_grad=True)
    torch.testing.assert_close(enc(outside), enc(inside))
    enc(outside).sum().backward()
    assert outside.grad[0, 0] == 0 and outside.grad[0, 1] == 0 and outside.grad[1, 2] == 0
    assert outside.grad[0, 2] != 0  # the in-bounds coordinate still has a gradient


@pytest.mark.parametrize("F", [1, 2])
def test_gradcheck_table_and_points(F):
    enc = small(features_per_level=F).double()
    torch.manual_seed(1)
    x = (torch.rand(6, 3, dtype=F64) * 1.6 - 0.8).requires_grad_(True)

    def f(table, pts):
        return encode(enc.plane_coords(pts), table, LevelTensors(enc.levels, "cpu", F64))

    assert torch.autograd.gradcheck(f, (enc.table.detach().clone().requires_grad_(True), x),
                                    eps=1e-6, atol=1e-6, fast_mode=True)


def test_module_trains_and_copies():
    enc = small()
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    x = torch.rand(256, 3) * 2 - 1
    target = torch.sin(3 * x).sum(1, keepdim=True)
    head = torch.nn.Linear(enc.out_dim, 1)
    opt.add_param_group({"params": head.parameters()})
    losses = []
    for _ in range(30):
        loss = ((head(enc(x)) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    twin = copy.deepcopy(enc)
    torch.testing.assert_close(twin(x), enc(x))
    fresh = small()
    fresh.load_state_dict(enc.state_dict())
    torch.testing.assert_close(fresh(x), enc(x))


def test_backend_choice():
    enc = small()
    enc(torch.zeros(1, 3))
    assert enc.backend == "torch"
    with pytest.raises(MissingToolError, match="tcnn"):
        small(backend="tcnn")(torch.zeros(1, 3))  # CUDA-only backend on CPU tensors
    with pytest.raises(UsageError):
        small(backend="nope")(torch.zeros(1, 3))
    with pytest.raises(ValueError):
        small()(torch.zeros(4, 2))


@pytest.mark.slow
def test_torch_compile_gives_the_same_output():
    """compile=True must not change results beyond float rounding (fused ops round differently)."""
    enc = small()
    comp = small(compile=True)
    comp.load_state_dict(enc.state_dict())
    x = (torch.rand(300, 3) * 2 - 1).requires_grad_(True)
    ya, yb = comp(x), enc(x)
    torch.testing.assert_close(ya, yb, atol=1e-6, rtol=1e-5)
    ga = torch.autograd.grad(ya.square().sum(), [comp.table, x])
    gb = torch.autograd.grad(yb.square().sum(), [enc.table, x])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch sees none)")
def test_torch_backend_cuda_matches_cpu():
    enc = small()
    x = torch.rand(500, 3) * 2 - 1
    y = enc(x)
    enc_cuda = copy.deepcopy(enc).cuda()
    torch.testing.assert_close(enc_cuda(x.cuda()).cpu(), y, atol=1e-6, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch sees none)")
@pytest.mark.parametrize("F", [1, 2])
def test_tcnn_matches_torch(F):
    pytest.importorskip("tinycudann", reason="tinycudann is not installed")
    ref = TriplaneHashGrid(n_levels=8, features_per_level=F, base_resolution=16, max_resolution=256,
                           log2_hashmap_size=12, backend="torch").cuda()
    with torch.no_grad():
        ref.table.uniform_(-1, 1)
    fast = TriplaneHashGrid(n_levels=8, features_per_level=F, base_resolution=16, max_resolution=256,
                            log2_hashmap_size=12, backend="tcnn").cuda()
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(5000, 3, device="cuda") * 2 - 1
    ya, yb = fast(x), ref(x)
    assert fast.backend == "tcnn"
    torch.testing.assert_close(ya, yb, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(ya)
    (ga,) = torch.autograd.grad((ya * g).sum(), fast.table)
    (gb,) = torch.autograd.grad((yb * g).sum(), ref.table)
    torch.testing.assert_close(ga, gb, atol=1e-3, rtol=1e-3)
