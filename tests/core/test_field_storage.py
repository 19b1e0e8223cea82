"""Model weights in HDF5 (head.field.save_state_dict / read_state_dict): hash-grid tables at half
precision, everything else exact; the stored model moves the field's output by a tiny fraction."""
from __future__ import annotations

import h5py
import numpy as np
import torch

from talkctl.head.field import DeformField, ENCODING_DEFAULTS, grid_kwargs, make_encoder, read_state_dict, \
    save_state_dict


def _field(seed: int) -> DeformField:
    torch.manual_seed(seed)
    cfg = {**ENCODING_DEFAULTS, "grid_levels": 4, "grid_log2_size": 10}
    field = DeformField(make_encoder("hashgrid", [-1.0, 1.0], grid_kwargs(cfg), "torch"), cond_dim=8, hidden=32)
    with torch.no_grad():  # trained-looking weights: tables of order 1, a non-zero output layer
        for p in field.parameters():
            p.uniform_(-1.0, 1.0)
    return field


def test_tables_half_precision_rest_exact(tmp_path):
    field = _field(0)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        save_state_dict(f.create_group("field"), field)
    with h5py.File(tmp_path / "m.h5", "r") as f:
        table = f["field/encoder.grid.table"]
        assert table.dtype == np.float16 and table.compression == "gzip"
        assert f["field/out.weight"].dtype == np.float32
        state = read_state_dict(f["field"])
    assert all(v.dtype == torch.float32 for v in state.values())
    sd = field.state_dict()
    for k, v in state.items():
        if k.endswith("grid.table"):
            assert torch.allclose(v, sd[k], rtol=2 ** -10, atol=1e-7) and not torch.equal(v, sd[k])
        else:
            assert torch.equal(v, sd[k]), k

    loaded = _field(1)
    loaded.load_state_dict(state)
    xyz = torch.rand(500, 3) * 2 - 1
    code = torch.randn(3, 8)
    eye = torch.rand(3, 1)
    with torch.no_grad():
        want, got = field(xyz, code, eye), loaded(xyz, code, eye)
    for w, g in zip(want, got):
        scale = float(w.abs().max())
        assert float((w - g).abs().max()) < 2e-3 * scale  # half precision's 2^-11, through a 2-layer MLP
