"""LPIPS (AlexNet v0.1) without torchvision: the network built here, the weights read from
the documented files (torchvision's ImageNet AlexNet and lpips' linear layers).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from talkctl.metrics.image import _to_float
from talkctl.metrics.weights import _first_existing, weights_dir

LPIPS_LIN_FILE = "alex.pth"  # lpips package: lpips/weights/v0.1/alex.pth
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet (torch hub checkpoints)


def _lpips_lin_candidates() -> list[Path]:
    c = [weights_dir() / "lpips" / "v0.1" / LPIPS_LIN_FILE, weights_dir() / "lpips_alex_v0.1.pth"]
    spec = importlib.util.find_spec("lpips")
    if spec is not None and spec.origin:
        c.append(Path(spec.origin).parent / "weights" / "v0.1" / LPIPS_LIN_FILE)
    return c


def _alexnet_candidates() -> list[Path]:
    c = [weights_dir() / ALEXNET_FILE]
    try:
        import torch

        c.append(Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE)
    except Exception:
        pass
    return c


def lpips_files() -> tuple[dict[str, Path], str | None]:
    """The two weight files LPIPS-alex needs, and a reason naming those that are missing."""
    found, missing = {}, []
    for key, cands in (("lin", _lpips_lin_candidates()), ("alexnet", _alexnet_candidates())):
        p = _first_existing(cands)
        if p is None:
            missing.append(" or ".join(str(x) for x in cands[:2] if x is not None))
        else:
            found[key] = p
    if missing:
        return found, ("LPIPS weights missing: " + "; ".join(missing)
                       + " (pip install lpips provides weights/v0.1/alex.pth; torchvision downloads "
                       + ALEXNET_FILE + " into the torch hub checkpoints folder)")
    return found, None


def _build_lpips_alex():
    """The LPIPS v0.1 'alex' network: torchvision AlexNet features at relu1..relu5,
    unit-normalised per channel, squared differences weighted by 1x1 linear layers,
    spatially averaged and summed (Zhang et al. 2018; same module names as lpips so its
    state dict loads)."""
    import torch
    from torch import nn

    class _NetLin(nn.Module):
        def __init__(self, chn):
            super().__init__()
            self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn, 1, 1, bias=False))

    class LpipsAlex(nn.Module):
        chns = (64, 192, 384, 256, 256)
        taps = (1, 4, 7, 9, 11)  # ReLU outputs in torchvision's alexnet.features

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
            )
            for i, c in enumerate(self.chns):
                setattr(self, f"lin{i}", _NetLin(c))
            self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

        def _feats(self, x):
            out, h = [], (x - self.shift) / self.scale
            for i, layer in enumerate(self.features):
                h = layer(h)
                if i in self.taps:
                    out.append(h / (torch.sqrt((h * h).sum(1, keepdim=True)) + 1e-10))
            return out

        def forward(self, x, y):
            """x, y (B,3,H,W) in [-1,1] -> (B,) distances."""
            total = 0
            for i, (fx, fy) in enumerate(zip(self._feats(x), self._feats(y))):
                total = total + getattr(self, f"lin{i}").model((fx - fy) ** 2).mean(dim=(2, 3))
            return total.view(-1)

    return LpipsAlex()


def load_lpips(device: str = "cpu"):
    """(model, None) when both weight files are present, else (None, reason)."""
    import torch

    files, reason = lpips_files()
    if reason:
        return None, reason
    net = _build_lpips_alex()
    try:
        alex = torch.load(files["alexnet"], map_location="cpu", weights_only=True)
        lin = torch.load(files["lin"], map_location="cpu", weights_only=True)
        feats = {k[len("features."):]: v for k, v in alex.items() if k.startswith("features.")}
        net.features.load_state_dict(feats, strict=True)
        lin = {k: v for k, v in lin.items() if k.startswith("lin")}
        missing = [k for k in net.state_dict() if k.startswith("lin") and k not in lin]
        if missing:
            raise KeyError(f"no {missing[0]}")
        net.load_state_dict(lin, strict=False)
    except Exception as exc:
        return None, f"LPIPS weights unreadable ({files['alexnet']}, {files['lin']}): {exc}"
    return net.eval().to(device), None


def lpips_distance(a, b, model=None, device: str = "cpu") -> tuple[float | None, str | None]:
    """LPIPS between two images (H,W,3) uint8 / float [0,1]: (value, None) or (None, reason)."""
    import torch

    if model is None:
        model, reason = load_lpips(device)
        if model is None:
            return None, reason
    dev = next(model.parameters()).device

    def prep(img):
        t = torch.from_numpy(_to_float(img).astype(np.float32).transpose(2, 0, 1))[None]
        return (t * 2 - 1).to(dev)

    with torch.no_grad():
        return float(model(prep(a), prep(b))[0]), None
