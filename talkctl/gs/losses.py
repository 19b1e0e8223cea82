"""Training losses: L1, mask, D-SSIM, LPIPS (when its weights are here), lip-patch L1.

SSIM and LPIPS are the ones eval reports (talkctl.metrics), so training and evaluation
measure the same thing. LPIPS needs two weight files that cannot be fetched offline
(metrics.lpips.lpips_files names them); `perceptual="auto"` uses LPIPS when they are present
and D-SSIM otherwise (logged, and recorded in the artifact's `perceptual_loss`
attribute). An explicit `perceptual="lpips"` that cannot load is a MissingToolError
naming what is missing: never a silent switch.
"""
from __future__ import annotations

import torch

from talkctl.metrics.image import ssim_torch
from talkctl.metrics import lpips
from talkctl.errors import MissingToolError, UsageError

PERCEPTUAL_CHOICES = ("auto", "lpips", "dssim", "none")


def l1(a, b):
    return (a - b).abs().mean()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of (B,H,W,3) images in [0,1] (11x11 Gaussian window, sigma 1.5)."""
    return ssim_torch(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)).mean()


def dssim(a, b):
    return (1.0 - ssim(a, b)) / 2.0


def lpips_unusable() -> str | None:
    """Why LPIPS cannot be used here (None when it can)."""
    return lpips.lpips_files()[1]


def load_lpips(device: str = "cpu"):
    """An LPIPS(alex) loss function on (B,H,W,3) images in [0,1]; MissingToolError when unusable."""
    net, reason = lpips.load_lpips(device)
    if net is None:
        raise MissingToolError(f"perceptual loss 'lpips' is unusable: {reason}; or use --set perceptual=dssim")
    for p in net.parameters():
        p.requires_grad_(False)

    def fn(a, b):
        return net(a.permute(0, 3, 1, 2) * 2 - 1, b.permute(0, 3, 1, 2) * 2 - 1).mean()

    return fn


def perceptual_loss(choice: str, device: str = "cpu", log=None):
    """(name actually used, fn or None) for perceptual = auto | lpips | dssim | none."""
    if choice not in PERCEPTUAL_CHOICES:
        raise UsageError(f"perceptual must be one of {', '.join(PERCEPTUAL_CHOICES)}, got {choice!r}")
    if choice == "none":
        return "none", None
    if choice == "dssim":
        return "dssim", dssim
    if choice == "lpips":
        return "lpips", load_lpips(device)
    reason = lpips_unusable()
    if reason is None:
        return "lpips", load_lpips(device)
    if log is not None:
        log.warning("perceptual=auto: LPIPS unusable (%s); using D-SSIM instead", reason)
    return "dssim", dssim


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, min_side: int = 4) -> list[torch.Tensor]:
    """Crops (h,w,3) of (B,H,W,3) images by boxes (B,4) x0,y0,x1,y1 (clamped, at least min_side)."""
    B, H, W, _ = images.shape
    out = []
    for b in range(B):
        x0, y0, x1, y1 = (int(v) for v in boxes[b])
        x0, y0 = max(0, min(x0, W - min_side)), max(0, min(y0, H - min_side))
        x1, y1 = min(W, max(x1, x0 + min_side)), min(H, max(y1, y0 + min_side))
        out.append(images[b, y0:y1, x0:x1])
    return out


def lip_l1(render: torch.Tensor, target: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """L1 on the lip patch of each image (boxes in the images' pixels)."""
    parts = [l1(r, t) for r, t in zip(crop_boxes(render, boxes), crop_boxes(target, boxes))]
    return torch.stack(parts).mean()
