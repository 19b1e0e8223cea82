"""train(keep_best_from=...): the weights of the best validation from that step on are kept (not
the last step's, not the untrained start's), across a stop and --resume too."""
import pytest
import torch

from talkctl.errors import StageError
from talkctl.gs.training import TRAIN_DEFAULTS, train
from test_train_loop import Toy, _ctx


class Overfit(Toy):
    """Validation peaks at step 10 and then falls, and is highest of all at the start."""

    SCORES = {0: 50.0, 5: 20.0, 10: 30.0, 15: 25.0, 20: 21.0}

    def validate(self):
        return self.SCORES[self.steps]


def test_best_validation_after_the_start_is_kept(tmp_path):
    cfg = {**TRAIN_DEFAULTS, "checkpoint_every": 0, "val_every": 5}
    t = Overfit()
    ref = Toy()
    train(_ctx(tmp_path / "ref"), "toy", ref, 10, cfg)  # the same steps: w at step 10
    r = train(_ctx(tmp_path / "a"), "toy", t, 20, cfg, keep_best_from=5)
    assert r["best_step"] == 10 and r["best_psnr"] == 30.0 and r["val_curve"][-1] == (20, 21.0)
    assert torch.allclose(t.w, ref.w)
    last = Overfit()
    r = train(_ctx(tmp_path / "b"), "toy", last, 20, cfg)  # off: the last step's weights
    assert r["best_step"] == 20 and not torch.allclose(last.w, ref.w)


def test_the_best_survives_a_resume(tmp_path):
    cfg = {**TRAIN_DEFAULTS, "checkpoint_every": 5, "val_every": 5}
    with pytest.raises(StageError):
        train(_ctx(tmp_path), "toy", Overfit(), 20, {**cfg, "stop_after": 15}, keep_best_from=5)
    t = Overfit()
    t.steps = 15  # the validation table is indexed by the step reached
    r = train(_ctx(tmp_path), "toy", t, 20, {**cfg, "resume": True}, keep_best_from=5)
    assert r["best_step"] == 10 and r["best_psnr"] == 30.0
