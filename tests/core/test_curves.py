"""Training curves in TensorBoard: every training stage writes event files under RUN/tb/<stage>/."""
import pytest

import trained_run

pytest.importorskip("tensorboard", reason="tensorboard (the `view` extra, in `dev`) writes the event files")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _tags(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_every_training_stage_writes_losses_validation_and_images(trained):
    run, _ = trained
    tb = run.path / "tb"
    for stage in ("init-static-head", "init-static-torso", "train-deform", "train-torso"):
        acc = _tags(tb / stage)
        scalars = set(acc.Tags()["scalars"])
        assert {"train/loss", "val/psnr"} <= scalars, (stage, scalars)
        assert any(t.startswith("lr/") for t in scalars), (stage, scalars)
        psnr = [e.value for e in acc.Scalars("val/psnr")]
        assert len(psnr) >= 2 and all(5 < v < 80 for v in psnr), (stage, psnr)
        assert "val/real_vs_rendered" in acc.Tags()["images"], stage
    assert "train/gaussians" in set(_tags(tb / "train-deform").Tags()["scalars"])


def test_without_tensorboard_the_stage_says_so_once(tmp_path, monkeypatch, caplog):
    import logging

    from talkctl import curves
    from talkctl.rundir import RunDir

    monkeypatch.setattr(curves, "tensorboard_missing", lambda: "the tensorboard package is not installed")
    with caplog.at_level(logging.INFO, logger="t"):
        c = curves.Curves(RunDir(tmp_path / "r"), "train-deform", logging.getLogger("t"))
        c.scalars(1, {"loss": 1.0})
        c.close()
    assert not (tmp_path / "r" / "tb").exists()
    assert sum("only in report.html" in r.getMessage() for r in caplog.records) == 1
