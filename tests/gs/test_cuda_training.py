"""The training stages on a real CUDA GPU (skipped without one; bench/gpu_check.sh runs them).

The tiny generated scene through init-static, train-deform (fused Adam and torch.compile on)
and train-torso with the best rasteriser there (gsplat when installed), then a render: the
stages finish, learn (held-out PSNR above the untrained start) and land near the CPU result.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from gs_scene import make_scene
from talkctl.pipeline import run_stage

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")]

SIZE = 48
STATIC = dict(resolution=SIZE, head_gaussians=300, head_iterations=150, torso_iterations=50, val_every=50)
DEFORM = dict(resolution=SIZE, iterations=150, val_every=50, fused_adam=True, compile=True)
TORSO = dict(resolution=SIZE, iterations=50, val_every=25, fused_adam=True)


def test_stages_train_on_cuda(tmp_path):
    run, _ = make_scene(tmp_path / "run", T=33, size=SIZE)
    results = {}
    for name, overrides in (("init-static", STATIC), ("train-deform", DEFORM), ("train-torso", TORSO)):
        results[name] = run_stage(name, run, preset="tiny", device="cuda", overrides=overrides)
        assert results[name]["status"] == "done"
    for name, artifact, group in (("init-static", "static.h5", "head/val_psnr"),
                                  ("train-deform", "deform.h5", "val_psnr")):
        with h5py.File(run.path / artifact) as f:
            curve = f[group][()]
        assert np.isfinite(curve[:, 1]).all() and curve[-1, 1] > curve[0, 1] + 1.0, (name, curve)
    out = tmp_path / "held_out.mp4"
    summary = run_stage("render", run, device="cuda", overrides={"output": str(out)})
    assert out.is_file() and summary["frames"] == 3
