"""The inference render path on one tiny trained run: the compiled rasteriser by default on the CPU,
the per-Gaussian constants made once, the same images as the torch reference, and the live API
(`Renderer.frames`) giving the same frames as a batch render, from several threads at once."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import trained_run
from talkctl.head.drive import feed, self_drive
from talkctl.head.field import apply_deform
from talkctl.head.renderer import Renderer, render_batches

pytest.importorskip("numba", reason="numba is not installed")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _all_frames(renderer, drive, batch):
    return np.concatenate([o["full"] for _, o, _ in render_batches(renderer, drive, batch)])


def test_rasterizer_choice(trained, monkeypatch):
    from talkctl.gs.splat import inference_rasterizer

    monkeypatch.delenv("TALKCTL_RASTER", raising=False)
    assert inference_rasterizer("auto", "cpu") == "numba"
    assert inference_rasterizer("torch", "cpu") == "torch"
    monkeypatch.setenv("TALKCTL_RASTER", "torch")
    assert inference_rasterizer("auto", "cpu") == "torch"


def test_default_render_matches_the_torch_reference(trained, monkeypatch):
    monkeypatch.delenv("TALKCTL_RASTER", raising=False)
    run, _ = trained
    drive = self_drive(run)
    fast, ref = Renderer.load(run, "cpu", 48), Renderer.load(run, "cpu", 48, "torch")
    assert (fast.rasterizer, ref.rasterizer) == ("numba", "torch")
    a, b = _all_frames(fast, drive, 1), _all_frames(ref, drive, 4)
    assert a.shape == b.shape and a.std() > 1  # a real image, not a blank plate
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    assert _psnr(a, b) > 55


def test_frame_constants_give_the_per_frame_computation(trained):
    run, _ = trained
    r = Renderer.load(run, "cpu", 48)
    head, drive = r.head, self_drive(run)
    feed(head, drive, np.arange(6))
    frames, blink = np.arange(6), drive.blink[:6]
    means, quats, scales = head.deformed(frames, blink)
    with torch.no_grad():  # what render computed before: every input from the parameters, every frame
        g, code = head.gaussians, head.codes(frames)
        eye = torch.as_tensor(blink, dtype=torch.float32).reshape(len(frames), -1)[:, :head.field.eye_dim]  # [blink, brow]
        d = head.field(g.means, code, eye, pg=head.condition.per_gaussian(code, g.means))
        ref = apply_deform(g.means, g.params["quats"], g.params["log_scales"], *d)
        assert torch.equal(head.constants.opacities, g.opacities)
    for x, y in zip((means, quats, scales), ref):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_live_frames_match_batches_and_threads_share_one_renderer(trained):
    run, _ = trained
    drive = self_drive(run)
    r = Renderer.load(run, "cpu", 32)
    batch = _all_frames(r, drive, 3)
    before, after = r.context
    n = drive.n_frames

    def live(i):  # one frame from the window of driving data around it, as a stream has it
        lo, hi = max(0, i - before), min(n, i + after + 1)
        return r.frames(drive.features[lo:hi], [i - lo], drive.world_to_cam[i:i + 1], drive.blink[i:i + 1],
                        source_frames=drive.source_frames[i:i + 1])[0]  # the pose's frame: the torso's shift

    assert live(0).dtype == np.uint8 and live(0).shape == (32, 32, 3)
    singles = np.stack([live(i) for i in range(n)])
    assert np.abs(singles.astype(int) - batch.astype(int)).max() <= 1
    got = {}

    def worker(k):
        for i in range(k, n, 3):
            got[i] = live(i)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(n))
    assert all(np.array_equal(got[i], singles[i]) for i in range(n))


def test_self_drive_realigns_the_sound_as_training_did(trained, tmp_path):
    """A head trained on a realigned clip (deform.h5 av_offset_applied_s) is driven on its own
    held-out frames by the same realigned sound: features and the muxed waveform move together."""
    import shutil

    import h5py

    from talkctl.audio.av_offset import shift_waveform
    from talkctl.rundir import RunDir

    run = trained[0]
    before = self_drive(run)
    copy = RunDir(shutil.copytree(run.path, tmp_path / "run"), create=False)
    with h5py.File(copy.path / "deform.h5", "a") as f:
        f.attrs["av_offset_applied_s"] = 0.08  # the picture 80 ms ahead: frame t hears t + 80 ms
    after = self_drive(copy)
    with h5py.File(run.path / "audio.h5") as f:
        frames, whole = f["feature_frames"][()], f["waveform"][()]
    a, b = before.held_out
    assert after.held_out == (a, b) and after.features.shape == before.features.shape
    assert np.array_equal(after.features[0], frames[4 * a + 2 - 8 + 8:][:after.features.shape[1]])
    assert np.array_equal(after.wav, shift_waveform(whole, 0.08)[a * 640:b * 640])
    assert not np.array_equal(after.wav, before.wav)
