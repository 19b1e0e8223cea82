"""train-torso: pose-conditioned deformation of the torso Gaussians (torso.h5).

The torso Gaussians (static.h5, in the fixed camera's space; drawn at each frame's tracked torso
shift when init-static tracked it, gs.torso_track, kept in torso.h5 as torso_shift) are moved per frame by a
DeformField(hash-grid features of their positions ⊕ positional encoding (n_freqs
frequencies) of the head pose: axis-angle rotation + translation of track.h5's
world_to_cam) -> Δposition, Δrotation, Δscale, rendered from the fixed camera.
The head (deform.h5) is frozen: each training frame is the composite
background plate <- torso render <- head render, compared with the real frame (L1, plus
gaussian_dssim · D-SSIM, plus mask_weight · L1(torso alpha, neck|torso mask)).

mode=image (the decoupled two-stage method's torso, torso_image.py): instead of Gaussians a
StyleUNet makes the torso and neck RGBA from the frozen head's render (rgb + alpha) and the
head pose. Loss = L1(composite, frame) + L1(torso rgb, parse.h5's torso target inside the
neck|torso mask) + mask_weight · L1(torso alpha, mask) + dssim_weight · D-SSIM(composite, frame).
The head renders of the training frames are made once and cached (the head is frozen).
torso.h5 records attrs mode (gaussian | image); image mode keeps net/<param> + net_spec.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from talkctl.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, Range
from talkctl.devices import to_device
from talkctl.errors import UsageError
from talkctl.head.conditions import PoseCondition
from talkctl.head.field import (ENCODING_DEFAULTS, ENCODING_RANGES, apply_deform, field_param_groups, grid_kwargs, hashgrid_backend,
                                save_state_dict)
from talkctl.gs.gaussians import GaussianModel
from talkctl.gs.optim import GAUSSIAN_DEFAULTS, GAUSSIAN_RANGES, GaussianOptim
from talkctl.head.models import build_field, composite, load_head
from talkctl.gs.losses import l1
from talkctl.gs.scene import Scene
from talkctl.gs.splat import over, render, resolve_rasterizer
from talkctl.gs.training import (TRAIN_DEFAULTS, TRAIN_NON_SEMANTIC, TRAIN_RANGES, adam, batch_schedule, clear_checkpoints,
                                 compiled, train, write_curves)

VERSION = 2  # 2: the torso fitted stabilised (gs.torso_track)
DEFAULTS = {
    "rasterizer": "auto",
    "mode": "gaussian",           # gaussian (pose-conditioned Gaussians) | image (StyleUNet from the head render)
    "resolution": 256,
    "iterations": 500,
    "batch": 2,
    "pose_freqs": 6,
    **ENCODING_DEFAULTS,
    "hidden": 64,
    "layers": 3,
    "lr_grid": 5e-3,
    "lr_mlp": 1e-3,
    "mask_weight": 0.1,
    "gaussian_dssim": 0.2,        # mode=gaussian: D-SSIM weight of the composite (0: L1 only)
    "val_frames": 8,
    # mode=image: U-Net width / number of down blocks, style vector size, learning rate, D-SSIM weight
    "unet_channels": 32,
    "unet_depth": 3,
    "style_dim": 64,
    "lr_image": 2e-3,
    "dssim_weight": 0.2,
    "image_base": True,           # mode=image corrects init-static's torso (drawn at the tracked shift), not paints from nothing
    **GAUSSIAN_DEFAULTS,
    "lr_means": 1.6e-4,
    "densify": False,
    **TRAIN_DEFAULTS,
}
PRESETS = {
    # tiny trains at 128 px: a real face at 64 px renders as a smudge where the mouth is
    "tiny": {"resolution": 128, "iterations": 60, "unet_channels": 12, "unet_depth": 2, "style_dim": 16, "grid_levels": 4, "grid_base": 8, "grid_max": 32,
             "grid_log2_size": 10, "hidden": 32, "layers": 2, "val_every": 30, "checkpoint_every": 30,
             "val_frames": 2},
    "fast": {},
    # paper: 10k steps of 4 frames, ~80 s on an H100 (assumed 8 ms a step; the budget of all
    # stages is next to train_deform's PRESETS)
    "paper": {"resolution": 512, "iterations": 10000, "lr_mlp": 1.6e-5, "sh_degree": 3, "val_every": 2000,
              "checkpoint_every": 5000, "batch": 4},
}
NON_SEMANTIC = set(TRAIN_NON_SEMANTIC) | {"val_frames"}
RANGES = {"resolution": Range(16, 4096), "iterations": AT_LEAST_1, "batch": Range(1, 64), "pose_freqs": Range(0, 16),
          **ENCODING_RANGES, "hidden": AT_LEAST_1, "layers": AT_LEAST_1, "lr_grid": POSITIVE, "lr_mlp": POSITIVE,
          "mask_weight": NON_NEGATIVE, "val_frames": AT_LEAST_1, "unet_channels": AT_LEAST_1, "unet_depth": Range(1, 8),
          "style_dim": AT_LEAST_1, "lr_image": POSITIVE, "dssim_weight": FRACTION, "gaussian_dssim": FRACTION,
          **GAUSSIAN_RANGES, **TRAIN_RANGES}


def heldout_psnr(scene: Scene, cfg: dict, frames, full_frame) -> float:
    """PSNR of full_frame(i) (the composite of frame i) against the real frames: `frames`, or
    `val_frames` of the held-out ones. Both torso modes validate with it."""
    idx = scene.held_subset(int(cfg["val_frames"])) if frames is None else frames
    se = sum(float(((full_frame(i) - scene.full_frames([i])) ** 2).mean()) for i in idx)
    return 10 * np.log10(1.0 / max(se / max(len(idx), 1), 1e-10))


class TorsoTrainer:
    def __init__(self, scene: Scene, rasterize, gaussians: GaussianModel, field, pose: PoseCondition, head, cfg, extent):
        self.scene, self.rasterize, self.cfg, self.head = scene, rasterize, cfg, head
        self.g = GaussianOptim(gaussians, cfg, int(cfg["iterations"]), extent)
        self.field, self.pose = field, pose
        self.net_opt = adam(field_param_groups(field, pose, cfg["lr_grid"], cfg["lr_mlp"]), cfg)
        self.field_fn = compiled(field, cfg)
        self.eye = torch.eye(4, device=scene.w2c.device)
        self._head_cache: dict[int, tuple] = {}

    @property
    def optimizers(self):
        return {"gaussians": self.g.opt, "field": self.net_opt}

    def arrays(self):
        out = self.g.arrays()
        out.update({f"field.{k}": v.detach().cpu().numpy() for k, v in self.field.state_dict().items()})
        return out

    def load_arrays(self, arrays):
        self.g.load_arrays(arrays)
        self.field.load_state_dict({k[6:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("field.")})
        self.net_opt = adam(field_param_groups(self.field, self.pose, self.cfg["lr_grid"], self.cfg["lr_mlp"]), self.cfg)

    def head_render(self, idx):
        sc = self.scene
        t = to_device(idx, sc.w2c.device, torch.long)
        return self.head.render(idx, sc.w2c[t], sc.K, sc.res, blink=sc.blink[t])

    def forward(self, idx):
        sc, m = self.scene, self.g.model
        t = to_device(idx, m.means.device, torch.long)
        code = self.pose.encode_pose(sc.w2c[t])
        dxyz, dq, ds = self.field_fn(m.means, code)
        means, quats, scales = apply_deform(m.means, m.params["quats"], m.params["log_scales"], dxyz, dq, ds)
        colors, deg = m.color_inputs()
        return render(self.rasterize, means, quats, scales, m.opacities, colors, self.eye.expand(len(t), 4, 4),
                      sc.torso_K(idx), sc.res, deg)

    def step(self, step, rng):
        c, sc = self.cfg, self.scene
        idx = batch_schedule(sc.train_idx, int(c["batch"]), rng)
        self.g.before_step(step)
        out = self.forward(idx)
        if self.g.strategy is not None:
            self.g.strategy.pre_backward(out)
        head = self.head_render(idx)
        full = over(head.rgb, head.alpha, over(out.rgb, out.alpha, sc.background.expand_as(out.rgb)))
        mask = sc.torso_mask(idx)
        real = sc.full_frames(idx)
        loss = l1(full, real) + c["mask_weight"] * l1(out.alpha * (1 - head.alpha), mask)
        if c["gaussian_dssim"] > 0:  # the collar's and shoulders' edges: L1 alone settles for a blur
            from talkctl.gs.losses import dssim

            loss = loss + c["gaussian_dssim"] * dssim(full, real)
        loss.backward()
        self.net_opt.step()
        self.net_opt.zero_grad(set_to_none=True)
        self.g.after_backward(step, out, sc.res)
        return {"loss": loss.detach(), "gaussians": self.g.model.num}

    @torch.no_grad()
    def validate(self, frames=None) -> float:
        """Held-out PSNR of the full composite (plate <- torso <- head) against the real frames."""
        sc = self.scene
        return heldout_psnr(sc, self.cfg, frames, lambda i: composite(sc.background, self.forward([i]),
                                                                     self.head_render([i])))

    @torch.no_grad()
    def preview(self):
        """(real, rendered) of the first held-out frame, for the training curves."""
        sc, i = self.scene, int(self.scene.held_idx[0])
        return sc.full_frames([i])[0], composite(sc.background, self.forward([i]), self.head_render([i]))[0]


class ImageTorsoTrainer:
    """mode=image: trains the StyleUNet on (frozen head render, pose) -> torso RGBA."""

    def __init__(self, scene: Scene, torso, head, cfg):
        self.scene, self.torso, self.head, self.cfg = scene, torso, head, cfg
        self.net = torso.net
        self.opt = adam(self.net.parameters(), cfg, lr=float(cfg["lr_image"]))
        self._head_cache: dict[int, tuple] = {}

    @property
    def optimizers(self):
        return {"net": self.opt}

    def arrays(self):
        return {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}

    def load_arrays(self, arrays):
        self.net.load_state_dict({k[4:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("net.")})
        self.opt = adam(self.net.parameters(), self.cfg, lr=float(self.cfg["lr_image"]))

    def head_render(self, idx):
        """Head rgb, alpha (B,R,R,·) of frames idx; rendered once per frame (the head is frozen)."""
        sc = self.scene
        missing = [int(i) for i in idx if int(i) not in self._head_cache]
        if missing:
            t = to_device(missing, sc.w2c.device, torch.long)
            out = self.head.render(missing, sc.w2c[t], sc.K, sc.res, blink=sc.blink[t])
            for j, i in enumerate(missing):
                self._head_cache[i] = (out.rgb[j].half(), out.alpha[j].half())
        rgb = torch.stack([self._head_cache[int(i)][0] for i in idx]).float()
        alpha = torch.stack([self._head_cache[int(i)][1] for i in idx]).float()
        return rgb, alpha

    def forward(self, idx):
        sc = self.scene
        t = to_device(idx, sc.w2c.device, torch.long)
        h_rgb, h_alpha = self.head_render(idx)
        shift = None if sc.torso_shift is None else sc.torso_shift[np.asarray(idx).reshape(-1)] * sc.res
        out = self.torso.forward(sc.w2c[t], h_rgb, h_alpha, sc.res, shift)
        return out, h_rgb, h_alpha

    def step(self, step, rng):
        from talkctl.gs.losses import dssim

        c, sc = self.cfg, self.scene
        idx = batch_schedule(sc.train_idx, int(c["batch"]), rng)
        out, h_rgb, h_alpha = self.forward(idx)
        full = over(h_rgb, h_alpha, over(out.rgb, out.alpha, sc.background.expand_as(out.rgb)))
        real = sc.full_frames(idx)
        target, mask = sc.torso_targets(idx)
        loss = (l1(full, real) + l1(out.rgb * mask, target) + c["mask_weight"] * l1(out.alpha * (1 - h_alpha), mask))
        if c["dssim_weight"] > 0:
            loss = loss + c["dssim_weight"] * dssim(full, real)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def validate(self, frames=None) -> float:
        """Held-out PSNR of the full composite, as the Gaussian torso's."""
        sc = self.scene

        return heldout_psnr(sc, self.cfg, frames, self._full)

    def _full(self, i):
        out, h_rgb, h_alpha = self.forward([i])
        return over(h_rgb, h_alpha, over(out.rgb, out.alpha, self.scene.background.expand_as(out.rgb))).clamp(0, 1)

    @torch.no_grad()
    def preview(self):
        """(real, rendered) of the first held-out frame, for the training curves."""
        i = int(self.scene.held_idx[0])
        return self.scene.full_frames([i])[0], self._full(i)[0]


def run_image(ctx, cfg: dict, head, rasterize) -> dict:
    from talkctl.head.torso_image import ImageTorsoModel, StyleUNet

    with Scene(ctx, cfg) as scene:
        drive_head(ctx, scene, head)
        w2c_train = scene.w2c[torch.as_tensor(scene.train_idx)].cpu().numpy()
        mean, std = PoseCondition.stats(w2c_train)
        pose = PoseCondition(int(cfg["pose_freqs"]), mean, std).to(ctx.device)
        base = static_torso_image(ctx, scene, rasterize) if cfg["image_base"] else None
        net = StyleUNet(pose.out_dim, int(cfg["unet_channels"]), int(cfg["unet_depth"]), int(cfg["style_dim"]),
                        base=base is not None)
        net = net.to(ctx.device)
        torso = ImageTorsoModel(net, pose, {"resolution": scene.res, "base": base})
        trainer = ImageTorsoTrainer(scene, torso, head, cfg)
        res = train(ctx, "train-torso", trainer, int(cfg["iterations"]), cfg, description="torso (image)")
        val = trainer.validate(scene.held_idx)
        with ctx.write("torso") as f:
            save_state_dict(f.create_group("net"), net)
            save_state_dict(f.create_group("pose"), pose)
            f.create_dataset("world_to_cam", data=np.eye(4, dtype=np.float32))
            f.create_dataset("intrinsics", data=scene.K.cpu().numpy())
            f.create_dataset("background", data=(scene.background.cpu().numpy() * 255).round().astype(np.uint8))
            if base is not None:
                f.create_dataset("base", data=base)
                if scene.torso_shift is not None:
                    f.create_dataset("torso_shift", data=scene.torso_shift)
            write_curves(f, res)
            n_params = sum(p.numel() for p in net.parameters())
            f.attrs.update({"mode": "image", "net_spec": json.dumps(net.spec()), "condition_spec": json.dumps(pose.spec()),
                            "resolution": scene.res, "crop_size": scene.S, "psnr_full": val, "n_parameters": n_params,
                            "train_seconds": res["seconds"],
                            "held_out": [int(scene.held_idx[0]), int(scene.held_idx[-1]) + 1]})
    clear_checkpoints(ctx, ["train-torso"])
    ctx.log.info("torso (image): held-out full-composite PSNR %.2f dB, %d parameters", val, n_params)
    return {"psnr_full": round(val, 3), "mode": "image", "n_parameters": n_params, "train_seconds": round(res["seconds"], 1)}


def static_torso_image(ctx, scene, rasterize) -> np.ndarray:
    """init-static's torso rendered in its own (stabilised) camera at the training resolution:
    (R,R,4) float32 straight colour + alpha, the base the image torso corrects. Sets
    scene.torso_shift when the torso was fitted stabilised (each frame draws the base there)."""
    with ctx.read("static") as f:
        gaussians = GaussianModel.load_h5(f["torso"], ctx.device)
        if "torso_shift" in f["torso"]:
            scene.torso_shift = np.asarray(f["torso"]["torso_shift"][()], np.float32)
    with torch.no_grad():
        colors, deg = gaussians.color_inputs()
        out = render(rasterize, gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, colors,
                     torch.eye(4, device=scene.K.device)[None], scene.K, scene.res, deg)
    alpha = out.alpha[0].clamp(0, 1)
    colour = (out.rgb[0] / alpha.clamp(min=1e-3)).clamp(0, 1)
    return torch.cat([colour, alpha], -1).cpu().numpy().astype(np.float32)


def drive_head(ctx, scene, head) -> None:
    """Give the frozen head its training-time driver: the run's audio features, or its tracked
    canonical landmarks for a landmark-conditioned head."""
    if getattr(head, "condition_name", "audio") == "landmarks":
        from talkctl.head.landmark_source import resolve_landmarks

        head.set_landmarks(resolve_landmarks(ctx.run, "track").landmarks[: scene.T])
    else:
        feats, speech = _audio_features(ctx, scene)
        scene.limit_to_audio(len(feats), ctx.log, ctx.run)  # frames past the audio's end have no head to draw
        head.set_audio(feats, speech)


def run(ctx, cfg: dict) -> dict:
    torch.manual_seed(int(cfg["seed"]))
    if cfg["mode"] not in ("gaussian", "image"):
        raise UsageError(f"train-torso mode={cfg['mode']!r}: use gaussian or image")
    rasterize = resolve_rasterizer(cfg["rasterizer"], ctx.device, ctx)
    head = load_head(ctx.run, ctx.device, ctx.backends.get("raster", "auto"))
    if cfg["mode"] == "image":
        return run_image(ctx, cfg, head, rasterize)
    with Scene(ctx, cfg) as scene:
        drive_head(ctx, scene, head)
        with ctx.read("static") as f:
            gaussians = GaussianModel.load_h5(f["torso"], ctx.device)
            if "torso_shift" in f["torso"]:  # fitted in a stabilised frame: keep drawing it there
                scene.torso_shift = np.asarray(f["torso"]["torso_shift"][()], np.float32)
        mn, mx = gaussians.means.detach().min(0).values, gaussians.means.detach().max(0).values
        pad = 0.1 * (mx - mn)
        bounds = [(mn - pad).tolist(), (mx + pad).tolist()]
        extent = float((mx - mn).norm() / 2)
        w2c_train = scene.w2c[torch.as_tensor(scene.train_idx)].cpu().numpy()
        mean, std = PoseCondition.stats(w2c_train)
        pose = PoseCondition(int(cfg["pose_freqs"]), mean, std).to(ctx.device)
        field_spec = {"encoding": cfg["encoding"], "bounds": bounds, "grid": grid_kwargs(cfg),
                      "cond_dim": pose.out_dim, "hidden": int(cfg["hidden"]), "layers": int(cfg["layers"])}
        field = build_field(field_spec, eye_dim=0, hashgrid=hashgrid_backend(cfg, ctx.device, ctx)).to(ctx.device)
        trainer = TorsoTrainer(scene, rasterize, gaussians, field, pose, head, cfg, extent)
        res = train(ctx, "train-torso", trainer, int(cfg["iterations"]), cfg, description="torso")
        val = trainer.validate(scene.held_idx)
        g = trainer.g.model
        with ctx.write("torso") as f:
            g.save_h5(f.create_group("torso"))
            save_state_dict(f.create_group("field"), field)
            save_state_dict(f.create_group("pose"), pose)
            f.create_dataset("world_to_cam", data=np.eye(4, dtype=np.float32))
            f.create_dataset("intrinsics", data=scene.K.cpu().numpy())
            f.create_dataset("background", data=(scene.background.cpu().numpy() * 255).round().astype(np.uint8))
            write_curves(f, res)
            if scene.torso_shift is not None:
                f.create_dataset("torso_shift", data=scene.torso_shift)
            f.attrs.update({"mode": "gaussian", "field_spec": json.dumps(field_spec), "condition_spec": json.dumps(pose.spec()),
                            "resolution": scene.res, "crop_size": scene.S, "psnr_full": val, "n_gaussians": g.num,
                            "train_seconds": res["seconds"],
                            "held_out": [int(scene.held_idx[0]), int(scene.held_idx[-1]) + 1]})
    clear_checkpoints(ctx, ["train-torso"])
    ctx.log.info("torso: held-out full-composite PSNR %.2f dB", val)
    return {"psnr_full": round(val, 3), "n_gaussians": g.num, "train_seconds": round(res["seconds"], 1)}


def _audio_features(ctx, scene) -> tuple[np.ndarray, np.ndarray]:
    """The run's audio features and their speech activity, as train-deform gave them to the head."""
    from talkctl.audio.recipe import speech_activity

    with ctx.read("audio") as a:
        feats = np.asarray(a["features"][()], dtype=np.float32)
        return feats, speech_activity(a["waveform"][()], len(feats))
