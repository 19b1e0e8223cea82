"""Training curves of one stage as TensorBoard event files under RUN/tb/<stage>/.

Written with the `tensorboard` package's writer (torch.utils.tensorboard; the optional extra
`view`, in `dev`). Without it a stage trains the same and says once that its curves are only in
report.html. Scalars go under train/<name> (losses by term, Gaussian count), val/psnr and
lr/<group>; every validation adds a real-vs-rendered image pair.
"""
from __future__ import annotations

import importlib.util
import shlex

import numpy as np


def tensorboard_missing() -> str | None:
    if importlib.util.find_spec("tensorboard") is None:
        return "the tensorboard package is not installed (pip install 'talkctl[view]')"
    return None


class Curves:
    def __init__(self, run, stage: str, log):
        self.writer = None
        why = tensorboard_missing()
        if why:
            log.info("%s: training curves only in report.html: %s", stage, why)
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.path / "tb" / stage), flush_secs=30)
        log.info("training curves: tensorboard --logdir %s", shlex.quote(str(run.path / "tb")))

    def scalars(self, step: int, values: dict, prefix: str = "train") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", float(v), step)

    def learning_rates(self, step: int, optimizers: dict) -> None:
        if self.writer is None:
            return
        for name, opt in optimizers.items():
            for i, group in enumerate(opt.param_groups):
                label = group.get("name") or str(i)
                self.writer.add_scalar(f"lr/{name}/{label}", float(group["lr"]), step)

    def image_pair(self, step: int, real, rendered, tag: str = "val/real_vs_rendered") -> None:
        """Two (H,W,3) images in [0,1] (tensors or arrays), side by side."""
        if self.writer is None:
            return
        pair = np.concatenate([_hwc(real), _hwc(rendered)], axis=1)
        self.writer.add_image(tag, np.clip(pair, 0, 1), step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _hwc(img) -> np.ndarray:
    if hasattr(img, "detach"):
        img = img.detach().float().cpu().numpy()
    return np.asarray(img, np.float32)[..., :3]
