"""Optimising a Gaussian set with density control: the part every Gaussian stage shares.

`GaussianOptim` owns one Gaussian set, its Adam (one group per parameter, named for the
density strategy), the means learning-rate decay, the progressive SH degree and the
checkpoint arrays. Stages add their own networks and losses around it.
"""
from __future__ import annotations

import numpy as np

from talkctl.gs.densify import DensifyConfig, DensifyStrategy, gaussian_param_groups
from talkctl.gs.gaussians import PARAM_NAMES, GaussianModel
from talkctl.gs.training import adam, exp_lr

GAUSSIAN_DEFAULTS = {
    "sh_degree": 0,
    "sh_increase_every": 1000,   # raise the active SH degree every N steps (0 = full degree at once)
    "lr_means": 1.6e-3,          # x scene extent; decays exponentially to lr_means_final
    "lr_means_final": 1.6e-5,
    "lr_scales": 5e-3,
    "lr_quats": 1e-3,
    "lr_opacity": 5e-2,
    "lr_sh": 2.5e-3,
    "densify": True,
    "densify_start": 100,
    "densify_stop": 1500,
    "densify_every": 100,
    "densify_reset_every": 1000,
    "densify_grad_threshold": 0.0002,
    "densify_percent_dense": 0.01,
    "densify_min_opacity": 0.005,
    "densify_max_screen_fraction": 0.15,
    "densify_max_gaussians": 8000,
}


class GaussianOptim:
    def __init__(self, model: GaussianModel, cfg: dict, iterations: int, extent: float, prefix: str = "g"):
        self.model, self.cfg, self.iterations, self.extent, self.prefix = model, cfg, iterations, extent, prefix
        self.strategy = None
        if cfg["densify"]:
            dc = DensifyConfig.from_config(cfg)
            dc.extent = extent
            self.strategy = DensifyStrategy(dc)
        self.build_optimizer()

    def lrs(self) -> dict[str, float]:
        c = self.cfg
        return {"means": c["lr_means"] * self.extent, "quats": c["lr_quats"], "log_scales": c["lr_scales"],
                "opacity_logits": c["lr_opacity"], "sh_dc": c["lr_sh"], "sh_rest": c["lr_sh"] / 20}

    def build_optimizer(self) -> None:
        self.opt = adam(gaussian_param_groups(self.model, self.lrs()), self.cfg, eps=1e-15)

    def active_degree(self, step: int) -> int:
        every = int(self.cfg["sh_increase_every"])
        return self.model.sh_degree if every <= 0 else min(self.model.sh_degree, step // every)

    def before_step(self, step: int) -> None:
        c = self.cfg
        lr = exp_lr(step, self.iterations, c["lr_means"] * self.extent, c["lr_means_final"] * self.extent)
        for g in self.opt.param_groups:
            if g["name"] == "means":
                g["lr"] = lr

    def after_backward(self, step: int, out, size: int) -> dict:
        """Adam step, then density control (which may change the set), then clear grads."""
        self.opt.step()
        info = {}
        if self.strategy is not None:
            info = self.strategy.post_backward(step, self.model, self.opt, out, size, size)
        self.opt.zero_grad(set_to_none=True)
        return info

    # ---- checkpoint arrays -------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"{self.prefix}.{k}": v for k, v in self.model.state_arrays().items()}
        if self.strategy is not None:
            out.update({f"{self.prefix}_densify.{k}": v for k, v in self.strategy.state_arrays().items()})
        return out

    def load_arrays(self, arrays: dict) -> None:
        self.model.load_arrays_({k: arrays[f"{self.prefix}.{k}"] for k in PARAM_NAMES})
        if self.strategy is not None:
            pre = f"{self.prefix}_densify."
            self.strategy.load_state_arrays({k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)},
                                            device=self.model.means.device)
        self.build_optimizer()
