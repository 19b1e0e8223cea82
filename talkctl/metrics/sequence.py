"""Image figures over a frame sequence, streamed: per-frame PSNR / masked PSNR / SSIM / LPIPS and their means."""
from __future__ import annotations

import numpy as np

from talkctl.metrics.image import psnr, ssim
from talkctl.metrics.lpips import load_lpips, lpips_distance


class ImageFigures:
    """Per-frame PSNR / masked PSNR / SSIM / LPIPS over a sequence, streamed (one frame pair
    at a time); summary() gives the means. LPIPS is loaded once; when its weights are
    missing the summary holds lpips=None and lpips_reason."""

    def __init__(self, lpips: bool = True, device: str = "cpu"):
        self.lpips_model, self.lpips_reason = load_lpips(device) if lpips else (None, "not requested")
        self.per_frame: dict[str, list[float]] = {"psnr": [], "psnr_face": [], "ssim": [], "lpips": []}

    def add(self, real, rendered, mask=None) -> dict:
        row = {"psnr": psnr(real, rendered), "ssim": ssim(real, rendered)}
        if mask is not None:
            row["psnr_face"] = psnr(real, rendered, mask=mask)
        if self.lpips_model is not None:
            row["lpips"] = lpips_distance(real, rendered, model=self.lpips_model)[0]
        for k, v in row.items():
            self.per_frame[k].append(v)
        return row

    def summary(self) -> dict:
        out: dict = {"frames": len(self.per_frame["psnr"])}
        for k, v in self.per_frame.items():
            out[k] = float(np.mean(v)) if v else None
        if out["lpips"] is None:
            out["lpips_reason"] = self.lpips_reason
        return out


# ---------------------------------------------------------------------------- landmarks
