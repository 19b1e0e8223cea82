"""Deformation field and conditions: identity at start, pluggable conditions, pose encoding."""
import math

import numpy as np
import pytest
import torch

from talkctl.errors import UsageError
from talkctl.head.conditions import AudioCondition, PoseCondition, pose_vector
from talkctl.head.field import DeformField, RawEncoding, apply_deform, build_condition


def test_field_starts_as_identity_and_learns():
    torch.manual_seed(0)
    field = DeformField(RawEncoding((-1.0, 1.0)), cond_dim=4, eye_dim=1, hidden=16, n_layers=2)
    xyz = torch.rand(50, 3) * 2 - 1
    quats = torch.nn.functional.normalize(torch.randn(50, 4), dim=1)
    log_s = torch.randn(50, 3) * 0.1
    d = field(xyz, torch.randn(3, 4), torch.zeros(3, 1))
    means, q, s = apply_deform(xyz, quats, log_s, *d)
    assert means.shape == (3, 50, 3) and torch.allclose(means, xyz.expand(3, 50, 3))
    assert torch.allclose(q, quats.expand(3, 50, 4), atol=1e-6) and torch.allclose(s, log_s.exp().expand(3, 50, 3))
    # the zero output layer still receives gradient
    d[0].sum().backward()
    assert field.out.weight.grad is not None and float(field.out.weight.grad.abs().sum()) > 0


def test_audio_condition_codes_depend_on_the_audio_window():
    torch.manual_seed(0)
    T, W, D = 20, 4, 3
    feats = np.random.default_rng(0).normal(size=(T, W, D)).astype(np.float32)
    mean, std = AudioCondition.stats(feats)
    cond = AudioCondition(D, W, code_dim=8, attn_window=4, mean=mean, std=std)
    cond.set_source(features=feats)
    codes = cond.encode(torch.tensor([0, 5, 19]))
    assert codes.shape == (3, 8) and not torch.allclose(codes[0], codes[1])
    # the same frame gives the same code; edges clamp their neighbourhood instead of failing
    assert torch.allclose(cond.encode(torch.tensor([5]))[0], codes[1])
    # a run of neighbouring frames (shared windows, encoded once) = each frame on its own
    run = cond.encode(torch.arange(3, 12))
    assert torch.allclose(run, torch.cat([cond.encode(torch.tensor([i])) for i in range(3, 12)]), atol=1e-6)
    with pytest.raises(UsageError, match="same extractor"):
        cond.set_source(features=np.zeros((T, W, D + 1), np.float32))
    # spec + state rebuild the same condition (what deform.h5 stores)
    again = build_condition(cond.spec(), cond.state_dict())
    again.set_source(features=feats)
    assert torch.allclose(again.encode(torch.tensor([0, 5, 19])), codes)


def test_condition_registry():
    lm = build_condition({"name": "landmarks", "indices": [1, 2], "n_landmarks": 4})
    assert lm.name == "landmarks" and lm.out_dim == 6 and lm.pg_dim > 0
    with pytest.raises(UsageError, match="unknown condition"):
        build_condition({"name": "video"})


def test_pose_vector_and_encoding():
    a = 0.3
    m = torch.eye(4)[None].repeat(2, 1, 1)
    m[0, :3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    m[0, :3, 3] = torch.tensor([0.1, 0.2, 3.0])
    v = pose_vector(m)
    assert torch.allclose(v[0], torch.tensor([0, a, 0, 0.1, 0.2, 3.0]), atol=1e-5)
    assert torch.allclose(v[1, :3], torch.zeros(3), atol=1e-3)
    pc = PoseCondition(n_freqs=6)
    assert pc.encode_pose(m).shape == (2, 6 * 13) == (2, pc.out_dim)
