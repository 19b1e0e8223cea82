"""The shared training loop on a toy problem: checkpoints, resume, stop_after, finished phases."""
import logging
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from talkctl.errors import StageError
from talkctl.progress import NullTask
from talkctl.rundir import RunDir
from talkctl.gs.training import TRAIN_DEFAULTS, clear_checkpoints, train


class Toy:
    """Fit w to noisy samples drawn with the loop's numpy RNG (so resume must restore it)."""

    def __init__(self):
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.optimizers = {"opt": torch.optim.Adam([self.w], lr=0.05)}
        self.steps = 0

    def arrays(self):
        return {"w": self.w.detach().numpy().copy()}

    def load_arrays(self, arrays):
        self.w = torch.nn.Parameter(torch.as_tensor(arrays["w"]))
        self.optimizers = {"opt": torch.optim.Adam([self.w], lr=0.05)}

    def step(self, step, rng):
        self.steps += 1
        target = torch.tensor([1.0, -2.0, 0.5]) + torch.as_tensor(rng.normal(size=3), dtype=torch.float32) * 0.1
        loss = ((self.w - target) ** 2).sum() + torch.randn(()) * 0  # touches the torch RNG too
        loss.backward()
        self.optimizers["opt"].step()
        self.optimizers["opt"].zero_grad()
        return {"loss": float(loss.detach())}

    def validate(self):
        return float(-((self.w.detach() - torch.tensor([1.0, -2.0, 0.5])) ** 2).sum())


def _ctx(path):
    @contextmanager
    def progress(total, desc):
        yield NullTask()

    return SimpleNamespace(run=RunDir(path), fingerprint="fp", progress=progress, log=logging.getLogger("test"))


def test_stop_and_resume_equals_one_run(tmp_path):
    cfg = {**TRAIN_DEFAULTS, "checkpoint_every": 7, "val_every": 5}
    a = Toy()
    ra = train(_ctx(tmp_path / "a"), "toy", a, 30, cfg)
    b = Toy()
    with pytest.raises(StageError, match="--resume"):
        train(_ctx(tmp_path / "b"), "toy", b, 30, {**cfg, "stop_after": 12})
    b2 = Toy()
    rb = train(_ctx(tmp_path / "b"), "toy", b2, 30, {**cfg, "resume": True})
    assert b2.steps == 18  # continued from step 12
    assert torch.equal(a.w, b2.w)
    assert ra["val_curve"] == rb["val_curve"]
    assert torch.equal(a.optimizers["opt"].state_dict()["state"][0]["exp_avg"],
                       b2.optimizers["opt"].state_dict()["state"][0]["exp_avg"])


def test_finished_phase_is_kept_until_cleared(tmp_path):
    cfg = {**TRAIN_DEFAULTS, "checkpoint_every": 10, "val_every": 10}
    ctx = _ctx(tmp_path)
    a = Toy()
    train(ctx, "phase1", a, 20, cfg)
    ck = tmp_path / "checkpoints" / "phase1.h5"
    assert ck.exists()
    again = Toy()
    r = train(ctx, "phase1", again, 20, {**cfg, "resume": True})
    assert again.steps == 0 and torch.equal(again.w, a.w) and r["val_curve"][-1][0] == 20
    clear_checkpoints(ctx, ["phase1"])
    assert not ck.exists()


def test_checkpoint_of_other_settings_is_not_used(tmp_path):
    cfg = {**TRAIN_DEFAULTS, "checkpoint_every": 5, "val_every": 5}
    train(_ctx(tmp_path), "toy", Toy(), 10, cfg)
    other = _ctx(tmp_path)
    other.fingerprint = "changed"
    t = Toy()
    train(other, "toy", t, 10, {**cfg, "resume": True})
    assert t.steps == 10


def test_audio_shorter_than_video_drops_the_frames_without_audio():
    import logging

    import pytest

    from talkctl.errors import ArtifactError
    from talkctl.timebase import held_out_start
    from talkctl.gs.scene import Scene
    from talkctl.timebase import split_frames

    train, held = split_frames(4500)
    assert held[0] == held_out_start(4500) and len(train) + len(held) == 4500
    scene = Scene.__new__(Scene)
    scene.T, scene.train_idx, scene.held_idx = 4500, train, held
    scene.limit_to_audio(4466, logging.getLogger("test"), "RUN")
    assert scene.train_idx[-1] == train[-1]  # the split is the video's: no frame changes side
    assert scene.held_idx[0] == held[0] and scene.held_idx[-1] == 4465
    short = Scene.__new__(Scene)
    short.T, short.train_idx, short.held_idx = 4500, train, held
    with pytest.raises(ArtifactError, match="covers 2000 of 4500"):
        short.limit_to_audio(2000, logging.getLogger("test"), "RUN")


def test_checkpoint_keeps_the_cuda_generator_state(tmp_path, monkeypatch):
    """On CUDA the densify split samples on the GPU: a resumed run restores every device's state."""
    import h5py

    from talkctl.devices import load_torch_rng, save_torch_rng

    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = {}
    for name, value in (("is_available", lambda: True), ("is_initialized", lambda: True),
                        ("device_count", lambda: 2), ("get_rng_state_all", lambda: states),
                        ("set_rng_state", lambda s, i: restored.__setitem__(i, s.clone()))):
        monkeypatch.setattr(torch.cuda, name, value)
    with h5py.File(tmp_path / "ck.h5", "w") as f:
        save_torch_rng(f)
    with h5py.File(tmp_path / "ck.h5", "r") as f:
        assert f["cuda_rng"].shape == (2, 16)
        load_torch_rng(f)
    assert sorted(restored) == [0, 1] and all(torch.equal(restored[i], states[i]) for i in (0, 1))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)  # a CPU run on a GPU machine
    with h5py.File(tmp_path / "cpu.h5", "w") as f:
        save_torch_rng(f)
        assert "cuda_rng" not in f and "torch_rng" in f
