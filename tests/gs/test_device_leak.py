"""Device tensors never reach numpy: every training stage and a render batch on a pretend GPU.

tests/fixtures/fake_cuda.py makes `--device cuda` run on the CPU with tensors that raise where a CUDA
tensor would (np.asarray, .numpy(), h5py writes). One or two steps of each stage (with a
densification, a checkpoint and the final validation), then one render batch: a stage that
hands a device tensor to host code fails here as it would at step 1 on a real GPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from fake_cuda import fake_cuda
from gs_scene import make_scene
from lm_scene import add_landmarks
from talkctl.pipeline import run_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32
STEPS = dict(resolution=SIZE, checkpoint_every=1, val_every=1, val_frames=1, seed=0)
DENSIFY = dict(densify=True, densify_start=1, densify_every=1, densify_stop=2)
STAGES = [
    ("init-static", dict(STEPS, head_gaussians=200, head_iterations=2, torso_gaussians=100,
                         torso_iterations=2, **DENSIFY)),
    ("train-deform", dict(STEPS, iterations=2, **DENSIFY)),
    ("train-torso", dict(STEPS, iterations=2, mode="gaussian", **DENSIFY)),
    ("train-a2l", dict(iterations=2, eval_every=1, checkpoint_every=1, seq_len=8, batch=2)),
]


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory):
    run, sig = make_scene(tmp_path_factory.mktemp("leak") / "run", T=33, size=SIZE)
    add_landmarks(run, sig)
    return run


def _run(name, run, overrides, monkeypatch):
    monkeypatch.setenv("TALKCTL_RASTER", "torch")  # the CUDA libraries are not here
    monkeypatch.setenv("TALKCTL_HASHGRID", "torch")
    with fake_cuda(monkeypatch):
        return run_stage(name, run, preset="tiny", device="cuda", overrides=overrides, force=True)


@pytest.mark.parametrize("name,overrides", STAGES, ids=[s[0] for s in STAGES])
def test_training_stage_keeps_device_tensors_on_the_device(scene_run, name, overrides, monkeypatch):
    summary = _run(name, scene_run, overrides, monkeypatch)
    assert summary["status"] == "done" and summary["device"] == "cuda"


def test_image_torso_and_landmark_head(scene_run, monkeypatch, tmp_path):
    import shutil

    from talkctl.rundir import RunDir

    run = RunDir(shutil.copytree(scene_run.path, tmp_path / "run"))
    for name, overrides in STAGES[:2]:
        _run(name, run, overrides, monkeypatch)
    _run("train-deform", run, dict(STAGES[1][1], condition="landmarks"), monkeypatch)
    summary = _run("train-torso", run, dict(STEPS, iterations=2, mode="image"), monkeypatch)
    assert summary["status"] == "done"


def test_render_batch_on_the_device(scene_run, monkeypatch, tmp_path):
    for name, overrides in STAGES[:3]:  # the artifacts render needs (after the other tests, or alone)
        _run(name, scene_run, overrides, monkeypatch)
    out = tmp_path / "held_out.mp4"
    summary = _run("render", scene_run, {"output": str(out), "batch": 8}, monkeypatch)
    assert out.is_file() and summary["frames"] == 3 and summary["device"].startswith("cuda")
    assert np.isfinite(summary["model_fps"])
