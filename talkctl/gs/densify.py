"""Adaptive density control (3D Gaussian Splatting), kept out of the training loop.

`DensifyStrategy` is a strategy object with two hooks:
  pre_backward(out)                      keep the gradient of the 2D means
  post_backward(step, model, optimizer, out, width, height) -> dict of what changed
(call post_backward after optimizer.step(), so the step uses this iteration's gradients
for every Gaussian before the set changes). It accumulates the screen-space gradient norm per Gaussian, and every `every` steps
clones small Gaussians / splits large ones whose mean gradient exceeds the threshold,
prunes transparent and oversized ones, and periodically resets opacities.

Whenever Gaussians are added or removed the Adam state (exp_avg, exp_avg_sq) of each
parameter is edited row-for-row (`keep_rows`, `append_rows`) so the optimizer state of a
kept Gaussian stays with it, a new Gaussian starts with zero moments, and a pruned
Gaussian's state is gone. The optimizer must have one param group per parameter, named
after it (group["name"]), as made by `gaussian_param_groups`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from talkctl.gs.gaussians import GaussianModel, quat_to_rotmat


def gaussian_param_groups(model: GaussianModel, lrs: dict[str, float]) -> list[dict]:
    return [{"params": [model.params[name]], "lr": lrs[name], "name": name} for name in model.params]


def _replace_param(model: GaussianModel, optimizer: torch.optim.Optimizer, name: str, new: torch.Tensor, edit_state):
    """Swap model.params[name] for `new`, carrying the optimizer state through `edit_state`."""
    old = model.params[name]
    param = nn.Parameter(new.detach().clone())
    for group in optimizer.param_groups:
        if group.get("name") == name:
            state = optimizer.state.pop(old, None)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key] = edit_state(state[key])
                optimizer.state[param] = state
            group["params"] = [param]
    model.params[name] = param


def keep_rows(model: GaussianModel, optimizer: torch.optim.Optimizer, keep: torch.Tensor) -> None:
    """Keep the Gaussians where `keep` (N,) bool is True, in parameters and optimizer state."""
    for name in list(model.params.keys()):
        _replace_param(model, optimizer, name, model.params[name][keep], lambda s: s[keep].clone())


def append_rows(model: GaussianModel, optimizer: torch.optim.Optimizer, new: dict[str, torch.Tensor]) -> None:
    """Append Gaussians (a value per parameter); their Adam moments start at zero."""
    for name in list(model.params.keys()):
        extra = new[name].to(model.params[name])
        _replace_param(model, optimizer, name, torch.cat([model.params[name].detach(), extra]),
                       lambda s, e=extra: torch.cat([s, torch.zeros_like(e)]))


def reset_state_values(optimizer: torch.optim.Optimizer, name: str) -> None:
    for group in optimizer.param_groups:
        if group.get("name") == name:
            for p in group["params"]:
                st = optimizer.state.get(p)
                if st:
                    for key in ("exp_avg", "exp_avg_sq"):
                        if key in st:
                            st[key].zero_()


@dataclass
class DensifyConfig:
    start: int = 500          # first step that may densify
    stop: int = 15000         # no densification from this step on
    every: int = 100          # densify / prune period
    reset_every: int = 3000   # opacity reset period (0 = never)
    grad_threshold: float = 0.0002  # mean NDC gradient norm (per view, batch-independent) that triggers clone/split
    percent_dense: float = 0.01     # clone if max scale <= this * extent, else split
    extent: float = 1.0             # scene radius (canonical units)
    min_opacity: float = 0.005      # prune below
    max_screen_fraction: float = 0.5  # prune 2D radius above this fraction of the image side (after a reset)
    max_world_fraction: float = 0.5   # prune world scale above this * extent (after a reset)
    max_gaussians: int = 1_000_000    # no growth beyond (pruning still runs)

    @classmethod
    def from_config(cls, cfg: dict, prefix: str = "densify_") -> "DensifyConfig":
        kw = {f.name: cfg[prefix + f.name] for f in fields(cls) if prefix + f.name in cfg}
        return cls(**kw)


class DensifyStrategy:
    def __init__(self, config: DensifyConfig):
        self.cfg = config
        self.grad_accum: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.max_radii: torch.Tensor | None = None
        self.last_reset = -1

    # ---- checkpoint -------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        if self.grad_accum is None:
            return {"last_reset": np.array(self.last_reset)}
        return {"grad_accum": self.grad_accum.cpu().numpy(), "count": self.count.cpu().numpy(),
                "max_radii": self.max_radii.cpu().numpy(), "last_reset": np.array(self.last_reset)}

    def load_state_arrays(self, arrays: dict, device="cpu") -> None:
        self.last_reset = int(arrays.get("last_reset", -1))
        if "grad_accum" in arrays:
            self.grad_accum = torch.as_tensor(arrays["grad_accum"], device=device)
            self.count = torch.as_tensor(arrays["count"], device=device)
            self.max_radii = torch.as_tensor(arrays["max_radii"], device=device)
        else:
            self.grad_accum = self.count = self.max_radii = None

    # ---- hooks ----------------------------------------------------------
    def active(self, step: int) -> bool:
        return step < self.cfg.stop

    def pre_backward(self, out) -> None:
        if out.means2d.requires_grad:
            out.means2d.retain_grad()

    def post_backward(self, step: int, model: GaussianModel, optimizer: torch.optim.Optimizer, out,
                      width: int, height: int) -> dict:
        """Call after backward() and optimizer.step(). Returns counts of what changed."""
        if not self.active(step):
            return {}
        self._accumulate(model, out, width, height)
        info = {}
        if step >= self.cfg.start and step % self.cfg.every == 0 and step > 0:
            info = self.densify_and_prune(step, model, optimizer, max(width, height))
        if self.cfg.reset_every and step > 0 and step % self.cfg.reset_every == 0:
            self.reset_opacity(model, optimizer)
            self.last_reset = step
            info["reset"] = True
        return info

    def _ensure(self, n: int, device) -> None:
        if self.grad_accum is None or self.grad_accum.shape[0] != n:
            self.grad_accum = torch.zeros(n, device=device)
            self.count = torch.zeros(n, device=device)
            self.max_radii = torch.zeros(n, device=device)

    def _accumulate(self, model, out, width: int, height: int) -> None:
        grad = out.means2d.grad
        if grad is None:
            return
        n = model.num
        self._ensure(n, grad.device)
        grad = grad.reshape(-1, n, 2)
        C = grad.shape[0]
        # pixels -> NDC (x W/2, H/2), and x C: the loss averages the C images of a step, so each
        # view's gradient is 1/C of what the same view alone would give (gsplat's DefaultStrategy
        # scales the same way); the threshold then means the same at any batch size.
        # (Python scalars: a constant tensor here would be a host-to-device copy every step.)
        gx, gy = grad[..., 0] * (width / 2.0 * C), grad[..., 1] * (height / 2.0 * C)
        radii = out.radii.reshape(-1, n)
        visible = radii > 0
        norms = torch.sqrt(gx * gx + gy * gy) * visible
        self.grad_accum += norms.sum(0)
        self.count += visible.sum(0)
        self.max_radii = torch.maximum(self.max_radii, (radii.float().max(0).values / max(width, height)))

    @torch.no_grad()
    def densify_and_prune(self, step: int, model: GaussianModel, optimizer, image_side: int) -> dict:
        cfg = self.cfg
        n0 = model.num
        if self.grad_accum is None:
            self._ensure(n0, model.means.device)
        mean_grad = self.grad_accum / self.count.clamp(min=1)
        big_grad = mean_grad >= cfg.grad_threshold
        max_scale = model.scales.max(dim=1).values
        small = max_scale <= cfg.percent_dense * cfg.extent
        room = cfg.max_gaussians - n0
        clone = big_grad & small
        split = big_grad & ~small
        if room <= 0:
            clone[:] = False
            split[:] = False
        elif int(clone.sum() + split.sum()) > room:  # keep the largest gradients within the budget
            cand = torch.nonzero(clone | split)[:, 0]
            top = cand[torch.argsort(mean_grad[cand], descending=True)[:room]]
            chosen = torch.zeros_like(clone)
            chosen[top] = True
            clone &= chosen
            split &= chosen
        n_clone, n_split = int(clone.sum()), int(split.sum())
        p = model.params
        if n_clone:
            append_rows(model, optimizer, {k: p[k].detach()[clone] for k in p})
        if n_split:
            idx = torch.nonzero(split)[:, 0]
            scales = model.scales.detach()[idx].repeat(2, 1)
            rot = quat_to_rotmat(p["quats"].detach()[idx]).repeat(2, 1, 1)
            offset = (rot @ (torch.randn_like(scales) * scales)[..., None])[..., 0]
            new = {k: p[k].detach()[idx].repeat(2, *([1] * (p[k].dim() - 1))) for k in p}
            new["means"] = new["means"] + offset
            new["log_scales"] = torch.log(scales / (0.8 * 2))
            append_rows(model, optimizer, new)
        # the originals of split Gaussians go, with the transparent and oversized ones
        n = model.num
        remove = torch.zeros(n, dtype=torch.bool, device=model.means.device)
        remove[:n0] = split
        remove |= model.opacities.detach() < cfg.min_opacity
        if self.last_reset >= 0 and step > self.last_reset:
            max_radii = torch.cat([self.max_radii, torch.zeros(n - n0, device=remove.device)])
            remove |= max_radii > cfg.max_screen_fraction
            remove |= model.scales.detach().max(dim=1).values > cfg.max_world_fraction * cfg.extent
        if bool(remove.all()):  # never prune everything: keep the most opaque
            remove[torch.argmax(model.opacities.detach())] = False
        n_pruned = int(remove.sum())
        if n_pruned:
            keep_rows(model, optimizer, ~remove)
        self._ensure(model.num, model.means.device)
        self.grad_accum.zero_()
        self.count.zero_()
        self.max_radii.zero_()
        return {"cloned": n_clone, "split": n_split, "pruned": n_pruned, "n": model.num}

    @torch.no_grad()
    def reset_opacity(self, model: GaussianModel, optimizer) -> None:
        cap = math.log(0.01 / 0.99)
        model.params["opacity_logits"].data.clamp_(max=cap)
        reset_state_values(optimizer, "opacity_logits")
