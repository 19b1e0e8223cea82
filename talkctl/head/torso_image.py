"""The image torso (train-torso mode=image): rendered head image + head pose -> torso and neck RGBA.

The decoupled two-stage method renders the torso with a StyleUNet-like image-to-image
network instead of pose-conditioned Gaussians: the neck and shoulders follow what the head
actually looks like in the frame (its silhouette, the chin) and its pose.

StyleUNet here: a U-Net over [head rgb (premultiplied), head alpha, x, y] at the training
resolution (the x, y coordinate channels let it place the shoulders where no head pixel
says anything); every conv block is FiLM-modulated (per-channel scale and shift) by a style
vector made by a small MLP from the head pose's positional encoding (PoseCondition: axis-angle
+ translation, normalised by the training poses). `depth` stride-2 down blocks, the same number
of up blocks with skip connections, a 1x1 head to 4 channels: sigmoid alpha, sigmoid colour;
the output colour is premultiplied by alpha (over black), like a RasterOutput.

    net = StyleUNet(pose_dim, channels=32, depth=3, style_dim=64)
    rgb, alpha = net(head_rgb (C,R,R,3), head_alpha (C,R,R,1), pose_code (C,pose_dim))
    torso = ImageTorsoModel(net, pose_condition, attrs)
    out = torso.render(world_to_cam, K, size, head_rgb=..., head_alpha=...)   # .rgb (C,S,S,3), .alpha (C,S,S,1)
(head_model.composite accepts `out` like a Gaussian torso render.)

With a base (train-torso image_base, the default): the network also sees the static torso of
init-static (its Gaussians rendered once in the stabilised camera, drawn at each frame's tracked
torso shift like the Gaussian torso) and outputs a correction to its colour and alpha, starting
at zero: at step 0 the torso is the static torso, and training only has to learn what the head
and pose change (collar, neck, shoulders). Without it the network paints the whole torso from
nothing, which the fast preset's few hundred steps leave a smeared wash (german_20s: the body
region at 17 dB in model mode).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from talkctl.errors import UsageError


BASE_EPS = 1e-3  # the base's colour and alpha are kept this far from 0 and 1 (finite logits)


class FiLMConv(nn.Module):
    """3x3 conv (stride 1 or 2) -> per-channel affine from the style -> LeakyReLU."""

    def __init__(self, cin: int, cout: int, style_dim: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.affine = nn.Linear(style_dim, 2 * cout)
        nn.init.zeros_(self.affine.weight)  # starts as a plain conv (scale 1, shift 0)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x, style):
        h = self.conv(x)
        scale, shift = self.affine(style)[:, :, None, None].chunk(2, dim=1)
        return F.leaky_relu(h * (1 + scale) + shift, 0.2)


class StyleUNet(nn.Module):
    IN_CH = 6  # head rgb (3) + head alpha (1) + x, y (+ the base's straight colour and alpha)

    def __init__(self, pose_dim: int, channels: int = 32, depth: int = 3, style_dim: int = 64, base: bool = False):
        super().__init__()
        self.pose_dim, self.channels, self.depth, self.style_dim = int(pose_dim), int(channels), int(depth), int(style_dim)
        self.base = bool(base)
        self.mapping = nn.Sequential(nn.Linear(pose_dim, style_dim), nn.LeakyReLU(0.2),
                                     nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2))
        widths = [min(channels * 2 ** i, 8 * channels) for i in range(depth + 1)]
        self.stem = FiLMConv(self.IN_CH + 4 * self.base, widths[0], style_dim)
        self.down = nn.ModuleList(FiLMConv(widths[i], widths[i + 1], style_dim, stride=2) for i in range(depth))
        self.up = nn.ModuleList(FiLMConv(widths[i + 1] + widths[i], widths[i], style_dim) for i in reversed(range(depth)))
        self.to_rgba = nn.Conv2d(widths[0], 4, 1)
        if self.base:  # a correction of the base, zero at the start
            nn.init.zeros_(self.to_rgba.weight)
            nn.init.zeros_(self.to_rgba.bias)

    def spec(self) -> dict:
        return {"pose_dim": self.pose_dim, "channels": self.channels, "depth": self.depth, "style_dim": self.style_dim,
                "base": self.base}

    def forward(self, head_rgb, head_alpha, pose_code, base=None):
        """(C,R,R,3), (C,R,R,1), (C,pose_dim)[, base (C,R,R,4): straight colour + alpha] -> torso rgb
        premultiplied (C,R,R,3), alpha (C,R,R,1)."""
        C, R = head_rgb.shape[0], head_rgb.shape[1]
        if R % (2 ** self.depth):
            raise UsageError(f"image torso: size {R} is not a multiple of 2^depth = {2 ** self.depth}")
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, R, device=head_rgb.device),
                                torch.linspace(-1, 1, R, device=head_rgb.device), indexing="ij")
        coords = torch.stack([xs, ys], -1).expand(C, R, R, 2)
        if self.base and base is None:
            raise UsageError("this image torso corrects a base torso image: pass base")
        x = torch.cat([head_rgb, head_alpha, coords] + ([base] if self.base else []), -1).permute(0, 3, 1, 2)
        style = self.mapping(pose_code)
        h = self.stem(x, style)
        skips = [h]
        for blk in self.down:
            h = blk(h, style)
            skips.append(h)
        skips.pop()
        for blk in self.up:
            s = skips.pop()
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = blk(torch.cat([h, s], 1), style)
        o = self.to_rgba(h).permute(0, 2, 3, 1)
        if self.base:  # the correction in logit space: never saturates into a dead clamp
            o = o + torch.logit(base.clamp(BASE_EPS, 1 - BASE_EPS))
        alpha = torch.sigmoid(o[..., 3:4])
        return torch.sigmoid(o[..., :3]) * alpha, alpha


@dataclass
class ImageOutput:
    rgb: torch.Tensor    # (C,S,S,3) premultiplied (over black)
    alpha: torch.Tensor  # (C,S,S,1)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[1] == size:
        return x
    return F.interpolate(x.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", antialias=x.shape[1] > size,
                         align_corners=False).permute(0, 2, 3, 1)


def shifted(base: torch.Tensor, shift_px) -> torch.Tensor:
    """base (R,R,4) -> (C,R,R,4) moved by shift_px (C,2) pixels (x right, y down), edges repeated:
    the image counterpart of the Gaussian torso's moved principal point."""
    R = base.shape[0]
    shift = torch.as_tensor(np.asarray(shift_px, np.float32), device=base.device).reshape(-1, 2)
    theta = torch.zeros(len(shift), 2, 3, device=base.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = -2.0 * shift / R  # normalised coordinates span 2 over R pixels
    grid = F.affine_grid(theta, [len(shift), 4, R, R], align_corners=False)
    img = base.permute(2, 0, 1)[None].expand(len(shift), 4, R, R)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False).permute(0, 2, 3, 1)


class ImageTorsoModel:
    """Torso rendered by the StyleUNet from the head render (render's head comes first).
    attrs "base" (R,R,4) straight colour + alpha, float: the static torso the network corrects."""

    mode = "image"

    def __init__(self, net: StyleUNet, pose_condition, attrs: dict):
        self.net, self.pose, self.attrs = net, pose_condition, attrs
        self.resolution = int(attrs["resolution"])
        self.device = next(net.parameters()).device
        base = attrs.get("base")
        self.base = None if base is None else torch.as_tensor(np.asarray(base, np.float32), device=self.device)

    def forward(self, world_to_cam, head_rgb, head_alpha, size: int | None = None, shift_px=None) -> ImageOutput:
        """Differentiable: head images at any size -> outputs at `size` (default: the input size).
        shift_px: (C,2) the torso's shift in pixels at the training resolution (None: 0)."""
        size = int(size or head_rgb.shape[1])
        w2c = torch.as_tensor(np.asarray(world_to_cam) if not torch.is_tensor(world_to_cam) else world_to_cam,
                              dtype=torch.float32, device=self.device)
        hr = _resize(head_rgb.to(self.device).float(), self.resolution)
        ha = _resize(head_alpha.to(self.device).float(), self.resolution)
        base = None
        if self.base is not None:
            base = shifted(self.base, np.zeros((len(hr), 2)) if shift_px is None else shift_px)
        rgb, alpha = self.net(hr, ha, self.pose.encode_pose(w2c), base)
        return ImageOutput(_resize(rgb, size), _resize(alpha, size))

    def shift_of(self, K, size: int):
        """The torso shift (C,2) at the training resolution that cameras K (C,3,3) at `size` px
        encode (their principal point moved from the torso's own, head.renderer.torso_K); None for one K."""
        K = np.asarray(K.cpu() if torch.is_tensor(K) else K, np.float32)
        if self.base is None or K.ndim != 3:
            return None
        own = np.asarray(self.attrs["K"], np.float32)[:2, 2]
        return K[:, :2, 2] * (self.resolution / float(size)) - own

    @torch.no_grad()
    def render(self, world_to_cam, K=None, size: int | None = None, head_rgb=None, head_alpha=None) -> ImageOutput:
        """Same call as TorsoModel.render plus the head render (required: the torso is made from it).
        K: only its principal point is read (the base torso's shift); the network works in the fixed
        training camera's image."""
        if head_rgb is None or head_alpha is None:
            raise UsageError("this run's torso is an image torso (train-torso mode=image): render the head first and "
                             "pass head_rgb / head_alpha to torso.render")
        size = int(size or head_rgb.shape[1])
        shift = None if K is None else self.shift_of(K, size)
        return self.forward(world_to_cam, head_rgb, head_alpha, size, shift)
