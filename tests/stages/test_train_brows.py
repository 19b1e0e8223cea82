"""train-deform's brow input (face.brows): the field sees [blink, brow raise] and uses it.

On the tiny generated scene (tests/fixtures/gs_scene.py) the audio is made uninformative and the
moving "mouth" is handed to the field as the brow input instead: with brows=true the head explains
the motion, with brows=false it cannot. Rendering then takes the eye inputs as (C,2), or (C,)
blinks alone (a pose source without brows: neutral brows).
"""
import shutil

import h5py
import numpy as np
import pytest

from gs_scene import make_scene, run_frames
from talkctl import artifacts
from talkctl.gs.training import psnr
from talkctl.face.brows import head_uses_brows
from talkctl.head.models import load_head
from talkctl.pipeline import run_stage
from talkctl.rundir import RunDir

SIZE = 32
STATIC = dict(resolution=SIZE, head_gaussians=300, head_iterations=120, torso_iterations=40, val_every=40)
DEFORM = dict(resolution=SIZE, iterations=200, val_every=100, lr_mlp=3e-3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_brow_input_reaches_the_field(tmp_path, monkeypatch):
    run, sig = make_scene(tmp_path / "run", T=33, size=SIZE)
    with h5py.File(run.path / "audio.h5") as f:
        feats = f["features"][()]
    with artifacts.write(run, "audio", producer="test", fingerprint="const", config={}, inputs={}) as f:
        f["features"] = np.broadcast_to(feats.mean(0, keepdims=True), feats.shape).copy()
    run_stage("init-static", run, preset="tiny", device="cpu", overrides=STATIC)
    eye = np.stack([np.zeros_like(sig), 2 * sig - 1], 1).astype(np.float32)  # the mouth's motion as "brows"
    monkeypatch.setattr("talkctl.gs.scene.read_eye_inputs", lambda run, **kw: eye)
    shutil.copytree(run.path, tmp_path / "without")
    without = RunDir(tmp_path / "without")
    run_stage("train-deform", run, preset="tiny", device="cpu", overrides={**DEFORM, "brows": True})
    run_stage("train-deform", without, preset="tiny", device="cpu", overrides=DEFORM)  # default: blink only
    assert head_uses_brows(run) and not head_uses_brows(without)  # drives read the brows only for the first

    idx = np.nonzero(np.abs(sig - np.median(sig)) > 0.25)[0]  # frames with the mouth far from its median
    fr, head, w2c, K = run_frames(run, idx)
    scores, heads = {}, {}
    for name, r in (("brows", run), ("without", without)):
        h = load_head(r.path)
        assert h.field.eye_dim == (2 if name == "brows" else 1)
        with h5py.File(r.path / "audio.h5") as f:
            h.set_audio(f["features"][()])
        out = h.render(idx, w2c, K, SIZE, blink=eye[idx])
        scores[name], heads[name] = psnr(out.rgb, fr * head, head), h
    assert scores["brows"] > scores["without"] + 1.0, scores
    h = heads["brows"]
    blink_only = h.render(idx, w2c, K, SIZE, blink=eye[idx, 0])  # no brow column: neutral brows
    neutral = h.render(idx, w2c, K, SIZE, blink=np.stack([eye[idx, 0], np.zeros(len(idx))], 1))
    assert np.allclose(blink_only.rgb.numpy(), neutral.rgb.numpy(), atol=1e-6)
