"""init-static: static head and torso Gaussians (static.h5, RUN/static.ply).

Head: random Gaussians in the canonical head cube [-1,1]^3, optimised as a static scene
seen through each frame's camera (world_to_cam = inverse head pose from track.h5,
intrinsics scaled to the training resolution); loss = L1 on the head region (frame ×
head mask, over black) + mask_weight · L1(alpha, head mask) + dssim_weight · D-SSIM.
Torso: the same from one fixed camera (identity world_to_cam) on parse.h5's torso frames ×
(neck|torso) mask; its Gaussians start in a slab filling the view frustum (and a margin past
its edges) behind the head's depth. With torso_tracking the torso's own 2D shift is tracked per
frame (gs.torso_track) and the torso is fitted in that stabilised frame (static.h5
torso/torso_shift). Density control on for both. Held-out frames (last 1/11) are never trained
on; their head-region PSNR is reported.
"""
from __future__ import annotations

import numpy as np
import torch

from talkctl.devices import to_device
from talkctl.gs.gaussians import HEAD_BOX, GaussianModel
from talkctl.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, Range
from talkctl.gs.optim import GAUSSIAN_DEFAULTS, GAUSSIAN_RANGES, GaussianOptim
from talkctl.gs.losses import dssim, l1
from talkctl.gs.scene import Scene
from talkctl.gs.splat import render, resolve_rasterizer
from talkctl.gs.training import (TRAIN_DEFAULTS, TRAIN_NON_SEMANTIC, TRAIN_RANGES, batch_schedule, clear_checkpoints, train,
                                 write_curves)

VERSION = 2  # 2: the torso fitted stabilised (gs.torso_track)
DEFAULTS = {
    "rasterizer": "auto",
    "resolution": 256,
    "batch": 1,
    "head_gaussians": 4000,
    "head_iterations": 1500,
    "torso_gaussians": 1500,
    "torso_iterations": 500,
    "mask_weight": 0.1,
    "dssim_weight": 0.2,
    "val_frames": 8,           # held-out frames checked during training (all at the end)
    "torso_tracking": True,    # fit the torso in a stabilised frame, drawn at each frame's tracked shift (gs.torso_track)
    **GAUSSIAN_DEFAULTS,
    "densify_stop": 1000,
    **TRAIN_DEFAULTS,
}
RANGES = {"resolution": Range(16, 4096), "batch": Range(1, 64), "head_gaussians": AT_LEAST_1,
          "head_iterations": AT_LEAST_1, "torso_gaussians": AT_LEAST_1, "torso_iterations": AT_LEAST_1,
          "mask_weight": NON_NEGATIVE, "dssim_weight": FRACTION, "val_frames": AT_LEAST_1,
          **GAUSSIAN_RANGES, **TRAIN_RANGES}
PRESETS = {
    # tiny trains at 128 px: a real face at 64 px renders as a smudge where the mouth is
    "tiny": {"resolution": 128, "head_gaussians": 600, "head_iterations": 150, "torso_gaussians": 300,
             "torso_iterations": 60, "densify_start": 40, "densify_every": 40, "densify_stop": 120,
             "densify_reset_every": 0, "densify_max_gaussians": 1500, "val_every": 50, "checkpoint_every": 50,
             "val_frames": 2},
    "fast": {},
    # paper: ~40 s of steps on an H100 (assumed 2.5 ms each; all stages' budget: train_deform PRESETS)
    "paper": {"resolution": 512, "head_gaussians": 10000, "head_iterations": 10000, "torso_gaussians": 5000,
              "torso_iterations": 5000, "sh_degree": 3, "lr_means": 1.6e-4, "lr_means_final": 1.6e-6,
              "densify_start": 500, "densify_stop": 7500, "densify_reset_every": 3000,
              "densify_max_gaussians": 200000, "val_every": 1000, "checkpoint_every": 2000, "batch": 1},
}
NON_SEMANTIC = set(TRAIN_NON_SEMANTIC) | {"val_frames"}



class StaticTrainer:
    """One Gaussian set seen through `cameras(idx)`, fitted to `targets(idx)`."""

    def __init__(self, scene: Scene, rasterize, model: GaussianModel, cfg: dict, iterations: int, extent: float,
                 cameras, targets, val_frames: int, intrinsics=None):
        self.scene, self.rasterize, self.cfg = scene, rasterize, cfg
        self.g = GaussianOptim(model, cfg, iterations, extent)
        self.cameras, self.targets, self.val_frames = cameras, targets, val_frames
        self.intrinsics = intrinsics or (lambda idx: scene.K)

    @property
    def optimizers(self):
        return {"gaussians": self.g.opt}

    def arrays(self):
        return self.g.arrays()

    def load_arrays(self, arrays):
        self.g.load_arrays(arrays)

    def forward(self, idx, degree=None):
        m = self.g.model
        w2c = self.cameras(idx)
        colors, deg = m.color_inputs(degree)
        return render(self.rasterize, m.means, m.quats, m.scales, m.opacities, colors, w2c, self.intrinsics(idx),
                      self.scene.res, deg)

    def step(self, step, rng):
        idx = batch_schedule(self.scene.train_idx, int(self.cfg["batch"]), rng)
        self.g.before_step(step)
        target, mask = self.targets(idx)
        out = self.forward(idx, self.g.active_degree(step))
        if self.g.strategy is not None:
            self.g.strategy.pre_backward(out)
        loss = l1(out.rgb, target) + self.cfg["mask_weight"] * l1(out.alpha, mask)
        if self.cfg["dssim_weight"] > 0:
            loss = loss + self.cfg["dssim_weight"] * dssim(out.rgb, target)
        loss.backward()
        self.g.after_backward(step, out, self.scene.res)
        return {"loss": loss.detach(), "gaussians": self.g.model.num}

    @torch.no_grad()
    def validate(self, frames=None) -> float:
        idx = self.scene.held_subset(self.val_frames) if frames is None else frames
        se, w = 0.0, 0.0
        for i in idx:
            target, mask = self.targets([i])
            out = self.forward([i])
            m = mask.expand_as(target)
            se += float((((out.rgb - target) ** 2) * m).sum())
            w += float(m.sum())
        return 10 * np.log10(1.0 / max(se / max(w, 1e-8), 1e-10))


    @torch.no_grad()
    def preview(self):
        """(real, rendered) of the first held-out frame, for the training curves."""
        i = int(self.scene.held_idx[0])
        return self.targets([i])[0][0], self.forward([i]).rgb[0]


def head_model(cfg: dict, n: int, generator) -> GaussianModel:
    return GaussianModel.random(n, *HEAD_BOX, sh_degree=int(cfg["sh_degree"]), generator=generator)


def torso_model(scene: Scene, cfg: dict, generator) -> GaussianModel:
    """Gaussians in a slab filling the fixed camera's view, from the head's depth to 1 unit behind it."""
    n, R = int(cfg["torso_gaussians"]), scene.res
    K = scene.K.cpu()
    margin = 0.08 * R if cfg.get("torso_tracking") else 0.0  # a shifted torso shows past the view's edges
    uv = torch.rand(n, 2, generator=generator) * (R + 2 * margin) - margin
    z = scene.head_depth + 0.2 + torch.rand(n, generator=generator) * 1.0
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
    means = torch.stack([x, y, z], -1)
    lo, hi = means.min(0).values, means.max(0).values
    m = GaussianModel.random(n, lo, hi, sh_degree=int(cfg["sh_degree"]), generator=generator)
    m.params["means"].data.copy_(means)
    return m


def torso_extent(model: GaussianModel) -> float:
    m = model.means.detach()
    return float((m.max(0).values - m.min(0).values).norm() / 2)


def run(ctx, cfg: dict) -> dict:
    torch.manual_seed(int(cfg["seed"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    rasterize = resolve_rasterizer(cfg["rasterizer"], ctx.device, ctx)
    with Scene(ctx, cfg) as scene:
        dev = ctx.device
        head = head_model(cfg, int(cfg["head_gaussians"]), gen).to(dev)
        torso = torso_model(scene, cfg, gen).to(dev)
        if cfg["torso_tracking"]:
            scene.track_torso()
        eye = torch.eye(4, device=dev)
        head_tr = StaticTrainer(scene, rasterize, head, cfg, int(cfg["head_iterations"]), 1.0,
                                lambda idx: scene.w2c[to_device(idx, dev, torch.long)],
                                scene.head_targets, int(cfg["val_frames"]))
        torso_tr = StaticTrainer(scene, rasterize, torso, cfg, int(cfg["torso_iterations"]), torso_extent(torso),
                                 lambda idx: eye.expand(len(idx), 4, 4), scene.torso_targets, int(cfg["val_frames"]),
                                 scene.torso_K)
        rh = train(ctx, "init-static-head", head_tr, int(cfg["head_iterations"]), cfg, description="static head")
        rt = train(ctx, "init-static-torso", torso_tr, int(cfg["torso_iterations"]), cfg, description="static torso")
        psnr_head = head_tr.validate(scene.held_idx)
        psnr_torso = torso_tr.validate(scene.held_idx)
        head, torso = head_tr.g.model, torso_tr.g.model
        seconds = rh["seconds"] + rt["seconds"]
        with ctx.write("static") as f:
            for name, model, res_ in (("head", head, rh), ("torso", torso, rt)):
                g = f.create_group(name)
                model.save_h5(g)
                write_curves(g, res_)
                g.attrs["train_seconds"] = res_["seconds"]
            f["torso"].create_dataset("world_to_cam", data=np.eye(4, dtype=np.float32))
            if scene.torso_shift is not None:
                f["torso"].create_dataset("torso_shift", data=scene.torso_shift)
            f.create_dataset("intrinsics", data=scene.K.cpu().numpy())
            f.attrs.update({"resolution": scene.res, "crop_size": scene.S, "psnr_head": psnr_head,
                            "psnr_torso": psnr_torso, "n_head": head.num, "n_torso": torso.num,
                            "train_seconds": seconds, "head_depth": scene.head_depth,
                            "held_out": [int(scene.held_idx[0]), int(scene.held_idx[-1]) + 1]})
        head.write_ply(ctx.run.file("static.ply"))
        clear_checkpoints(ctx, ["init-static-head", "init-static-torso"])
    ctx.log.info("static head PSNR %.2f dB (held-out, head region), torso %.2f dB", psnr_head, psnr_torso)
    return {"psnr_head": round(psnr_head, 3), "psnr_torso": round(psnr_torso, 3), "n_head": head.num,
            "n_torso": torso.num, "train_seconds": round(seconds, 1), "ply": str(ctx.run.file("static.ply"))}
