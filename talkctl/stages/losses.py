"""Training losses: L1, mask, D-SSIM, LPIPS (when its weights are here), lip-patch L1.

LPIPS needs the `lpips` package, torchvision and the AlexNet weights torchvision downloads
(`alexnet-owt-7be5be79.pth` in the torch hub checkpoints folder). None of that can be
fetched on an offline machine, so `perceptual="auto"` uses LPIPS when `lpips_unusable()`
says nothing, and D-SSIM otherwise (logged, and recorded in the artifact's
`perceptual_loss` attribute). An explicit `perceptual="lpips"` that cannot load is a
MissingToolError naming what is missing: never a silent switch.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import MissingToolError, UsageError

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
PERCEPTUAL_CHOICES = ("auto", "lpips", "dssim", "none")


def l1(a, b):
    return (a - b).abs().mean()


def _gauss_window(size: int = 11, sigma: float = 1.5, device="cpu"):
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of (B,H,W,3) images in [0,1] (11x11 Gaussian window, sigma 1.5, separable)."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    ch = x.shape[1]
    g = _gauss_window(device=a.device)
    wx = g.view(1, 1, 1, -1).repeat(ch, 1, 1, 1)
    wy = g.view(1, 1, -1, 1).repeat(ch, 1, 1, 1)

    def blur(t):
        t = F.conv2d(F.pad(t, (5, 5, 0, 0), mode="reflect"), wx, groups=ch)
        return F.conv2d(F.pad(t, (0, 0, 5, 5), mode="reflect"), wy, groups=ch)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def dssim(a, b):
    return (1.0 - ssim(a, b)) / 2.0


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def lpips_unusable() -> str | None:
    """Why LPIPS cannot be used here (None when it can)."""
    if importlib.util.find_spec("lpips") is None:
        return "the `lpips` package is not installed (pip install 'talkctl[lpips]')"
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed (LPIPS's AlexNet needs it; install the torchvision build matching torch)"
    weights = torch_hub_checkpoints() / ALEXNET_FILE
    if not weights.is_file():
        return f"AlexNet weights {ALEXNET_FILE} are missing: put them in {weights.parent} (torchvision downloads them from download.pytorch.org/models/{ALEXNET_FILE})"
    return None


def load_lpips(device: str = "cpu"):
    """An LPIPS(alex) loss function on (B,H,W,3) images in [0,1]; MissingToolError when unusable."""
    reason = lpips_unusable()
    if reason:
        raise MissingToolError(f"perceptual loss 'lpips' is unusable: {reason}; or use --set perceptual=dssim")
    import lpips  # noqa: deferred, optional dependency

    net = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
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
