"""The figures eval reports: labels, formats, which way is better, and how each is printed."""
from __future__ import annotations

import math

FIGURES: list[tuple[str, str, str, str | None, str]] = [
    ("composite", "Composite", "{}", None, "what the mp4 shows, scored below: portrait (the real frames, the rendered "
                                          "face blended in) | model (rendered head + torso over the plate)"),
    ("psnr", "PSNR", "{:.2f} dB", "high", "held-out frames, whole frame of the composite the mp4 shows"),
    ("psnr_face", "PSNR (face)", "{:.2f} dB", "high", "the same composite, inside the real frame's head mask"),
    ("ssim", "SSIM", "{:.4f}", "high", "the same composite; Gaussian window 11, sigma 1.5, RGB"),
    ("lpips", "LPIPS", "{:.4f}", "low", "the same composite; AlexNet v0.1"),
    ("portrait_psnr", "PSNR portrait", "{:.2f} dB", "high", "real frames with the rendered lower face blended in"),
    ("portrait_ssim", "SSIM portrait", "{:.4f}", "high", "real frames with the rendered lower face blended in"),
    ("portrait_lpips", "LPIPS portrait", "{:.4f}", "low", "real frames with the rendered lower face blended in"),
    ("portrait_lmd", "LMD portrait", "{:.4f}", "low", "mouth landmark distance / inter-ocular distance"),
    ("model_psnr", "PSNR model", "{:.2f} dB", "high", "rendered head + torso over the background plate"),
    ("model_ssim", "SSIM model", "{:.4f}", "high", "rendered head + torso over the background plate"),
    ("model_lpips", "LPIPS model", "{:.4f}", "low", "rendered head + torso over the background plate"),
    ("model_see_through", "See-through model", "{:.2%}", "low", "share of the person where the plate shows "
                                                              "through the rendered head and torso"),
    ("model_lmd", "LMD model", "{:.4f}", "low", "mouth landmark distance / inter-ocular distance"),
    ("head_psnr", "PSNR head only", "{:.2f} dB", "high", "diagnostic of the head alone: the rendered head over the "
                                                       "real frame (no render writes this frame)"),
    ("head_psnr_face", "PSNR head only (face)", "{:.2f} dB", "high", "diagnostic: the same, inside the head mask"),
    ("head_ssim", "SSIM head only", "{:.4f}", "high", "diagnostic: the rendered head over the real frame"),
    ("head_lpips", "LPIPS head only", "{:.4f}", "low", "diagnostic: the rendered head over the real frame"),
    ("lmd", "LMD", "{:.4f}", "low", "mouth landmark distance / inter-ocular distance"),
    ("mouth_corr", "Mouth corr.", "{:.3f}", "high", "Pearson, real vs rendered mouth opening"),
    ("mouth_amp", "Mouth amp.", "x{:.2f}", None, "std rendered / std real mouth opening, held-out (1 = right)"),
    ("sync_corr", "Sync corr.", "{:.3f}", "high", "mouth opening vs speech energy, best lag"),
    ("sync_lag", "Sync lag", "{:+d} fr", None, "frames the mouth trails the sound"),
    ("sync_corr_real", "Sync corr. (real)", "{:.3f}", None, "the same figure on the real video: the target"),
    ("xsync_corr", "X-sync corr.", "{:.3f}", "high", "driven by other videos: rendered vs their real mouth, lag 0"),
    ("xsync_lag", "X-sync lag", "{:+.0f} fr", None, "best lag within +-3 frames (render behind the real mouth)"),
    ("xsync_best", "X-sync best corr.", "{:.3f}", "high", "correlation at that best lag"),
    ("xsync_offset_corr", "X-sync corr. at offset", "{:.3f}", "high",
     "as X-sync corr., at the lag each video's own picture-to-sound offset implies"),
    ("clip_av_offset_ms", "Clip A/V offset", "{:+d} ms", None,
     "the training video's picture ahead of its sound (estimated): the head learns it"),
    ("xsync_amp", "X-sync amp.", "x{:.2f}", None, "std rendered / std real mouth opening, other videos (1 = right)"),
    ("xsync_drives", "X-sync videos", "{}", None, "videos driving the head (figures are medians over them)"),
    ("syncnet_confidence", "SyncNet conf.", "{:.2f}", "high", "joonson/syncnet_python"),
    ("syncnet_offset", "SyncNet offset", "{:+d} fr", None, "video behind audio, frames"),
    ("render_fps", "Render speed", "{:.1f} fps", "high", "frames per second of the composite, as render measures "
                                                         "it (rendering + compositing, no decoding or encoding)"),
    ("peak_memory_mb", "Peak memory", "{:.0f} MiB", "low", "host memory of the evaluating process"),
    ("train_peak_memory_mb", "Training peak mem.", "{:.0f} MiB", "low", "largest stage's peak host RSS"),
    ("train_seconds", "Training time", "{}", "low", "all stages"),
    ("model_mb", "Model size", "{:.2f} MiB", "low", "deform.h5 + torso.h5 (+ a2l.h5)"),
    ("gaussians", "Gaussians", "{}", None, "head + torso"),
    ("method", "Method", "{}", None, "deformation condition and torso mode"),
]
STAGE_NAMES = ("extract-audio", "track", "parse", "init-static", "train-a2l", "train-deform", "train-torso")
FIGURES += [(f"seconds:{st}", st, "{}", "low", f"{st} wall time") for st in STAGE_NAMES]
FIGURES += [(f"peak_rss_mb:{st}", st, "{:.0f} MiB", "low", f"{st} peak host memory") for st in STAGE_NAMES]
_FIG = {k: (label, fmt, better, helptext) for k, label, fmt, better, helptext in FIGURES}
UNAVAILABLE_REASON = {"lpips": "lpips_reason", "portrait_lpips": "lpips_reason", "model_lpips": "lpips_reason",
                      "head_lpips": "lpips_reason", "syncnet_confidence": "syncnet_reason",
                      "syncnet_offset": "syncnet_reason"}


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def interval_text(fig: dict, key: str, card: bool = False) -> str:
    """' [low, high]' after a figure measured with its 95 % interval (fig[key + "_ci95"], e.g.
    mouth_corr on a few seconds of held-out frames); card: "95 % CI low–high", the line
    under a report card's figure; '' without one."""
    ci = fig.get(f"{key}_ci95")
    if not ci:
        return ""
    return f"95 % CI {ci[0]:.2f}–{ci[1]:.2f}" if card else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def format_figure(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if key == "train_seconds" or key.startswith("seconds:"):
        return format_seconds(float(value))
    if key == "gaussians":
        if isinstance(value, dict):
            return " + ".join(f"{int(v):,} {k}" for k, v in value.items())
        return f"{int(value):,}"
    fmt = _FIG.get(key, (None, "{}", None, None))[1]
    try:
        return fmt.format(int(value) if "d}" in fmt else value)
    except (ValueError, TypeError):
        return str(value)


def format_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
