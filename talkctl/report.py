"""report.html: one self-contained file (images as base64 PNG, plots as hand-written SVG,
no scripts, no network) showing how good a trained talking head is -- and the comparison
table of `talkctl eval RUN1 RUN2 ...`.

`write_report(path, data)` takes a plain dict; every section is optional:
  title: str, subtitle: str
  meta: {label: value}                        run, video, device, talkctl version, date ...
  figures: {key: value}                       keys of FIGURES below (None = not measured);
                                              lpips_reason / syncnet_reason explain a None
  stages: {stage: seconds} or [{"stage", "seconds", "steps"?}]   training time per stage
  gaussians: {"head": n, "torso": n}
  frames: [{"index": int, "real": (H,W,3) uint8 | None, "rendered": (H,W,3) uint8, "label"?}]
  error_scale: float                          |real-rendered| (0..1) mapped to the top colour (0.25)
  curves: {"fps": 25, "mouth_real": [...], "mouth_rendered": [...], "audio_energy_db": [...],
           "title"?: str}
  training: {stage: {"step": [...], "loss": [...], "psnr": [...]}}
  notes: [str]
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

# key, label, format, better ("high" / "low" / None), help
FIGURES: list[tuple[str, str, str, str | None, str]] = [
    ("psnr", "PSNR", "{:.2f} dB", "high", "held-out frames, whole image"),
    ("psnr_face", "PSNR (face)", "{:.2f} dB", "high", "inside the head mask"),
    ("ssim", "SSIM", "{:.4f}", "high", "Gaussian window 11, sigma 1.5, RGB"),
    ("lpips", "LPIPS", "{:.4f}", "low", "AlexNet v0.1"),
    ("full_psnr", "PSNR (full)", "{:.2f} dB", "high", "torso + head over the background plate"),
    ("full_ssim", "SSIM (full)", "{:.4f}", "high", "torso + head over the background plate"),
    ("lmd", "LMD", "{:.4f}", "low", "mouth landmark distance / inter-ocular distance"),
    ("mouth_corr", "Mouth corr.", "{:.3f}", "high", "Pearson, real vs rendered mouth opening"),
    ("sync_corr", "Sync corr.", "{:.3f}", "high", "mouth opening vs speech energy, best lag"),
    ("sync_lag", "Sync lag", "{:+d} fr", None, "frames the mouth trails the sound"),
    ("sync_corr_real", "Sync corr. (real)", "{:.3f}", None, "the same figure on the real video: the target"),
    ("syncnet_confidence", "SyncNet conf.", "{:.2f}", "high", "joonson/syncnet_python"),
    ("syncnet_offset", "SyncNet offset", "{:+d} fr", None, "video behind audio, frames"),
    ("render_fps", "Render speed", "{:.1f} fps", "high", "frames per second, rendering only"),
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
UNAVAILABLE_REASON = {"lpips": "lpips_reason", "syncnet_confidence": "syncnet_reason", "syncnet_offset": "syncnet_reason"}

_INK, _MUTED, _GRID, _FRAME = "#374151", "#6b7280", "#eef0f3", "#d1d5db"
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]

# inferno, sampled at 9 points (matplotlib's perceptually uniform map); interpolated to 256
_INFERNO = np.array([(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
                     (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)], np.float64)
INFERNO_LUT = np.stack([np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, 9), _INFERNO[:, c]) for c in range(3)],
                       -1).round().astype(np.uint8)


# ---------------------------------------------------------------------------- images


def png_bytes(img: np.ndarray) -> bytes:
    """Encode (H,W) / (H,W,3) / (H,W,4) uint8 as PNG (zlib only, no imaging library)."""
    a = np.ascontiguousarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    h, w, c = a.shape
    color = {1: 0, 3: 2, 4: 6}[c]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, w * c)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _fit(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def img_tag(img: np.ndarray, alt: str = "", max_side: int = 512, cls: str = "") -> str:
    data = base64.b64encode(png_bytes(_fit(np.asarray(img), max_side))).decode()
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def error_heatmap(real: np.ndarray, rendered: np.ndarray, scale: float = 0.25) -> np.ndarray:
    """|real - rendered| averaged over RGB, 0..scale mapped through inferno -> (H,W,3) uint8."""
    err = np.abs(real.astype(np.float32) - rendered.astype(np.float32)).mean(-1) / 255.0
    idx = np.clip(err / scale * 255.0, 0, 255).astype(np.uint8)
    return INFERNO_LUT[idx]


def _colorbar_svg(scale: float, width: int = 280) -> str:
    """The heat map's colour scale, labelled in 0-255 pixel-value units."""
    top, pad = scale * 255.0, 14
    stops = "".join(f'<stop offset="{i / 8:.3f}" stop-color="rgb({r},{g},{b})"/>'
                    for i, (r, g, b) in enumerate(_INFERNO.astype(int)))
    ticks = "".join(
        f'<text x="{pad + v / top * (width - 2 * pad):.1f}" y="30" text-anchor="middle">{_fmt_num(v)}</text>'
        for v in nice_ticks(0, top, 4) if v <= top + 1e-9)
    return (f'<svg class="cbar" width="{width}" height="36" viewBox="0 0 {width} 36" font-size="10" '
            f'font-family="system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif" fill="{_INK}">'
            f'<defs><linearGradient id="inferno">{stops}</linearGradient></defs>'
            f'<rect x="{pad}" y="4" width="{width - 2 * pad}" height="12" fill="url(#inferno)" rx="2"/>{ticks}</svg>'
            f'<span class="muted">mean |real − rendered| over RGB, in 0–255 pixel values '
            f'(≥ {_fmt_num(top)} shows as the brightest colour)</span>')


# ---------------------------------------------------------------------------- SVG charts


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


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) * 0.1 or 0.5), hi + (abs(hi) * 0.1 or 0.5)
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= step * m:
            step *= m
            break
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    k = int(round((last - first) / step))
    return [round(first + i * step, 12) for i in range(k + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [10.0 ** e for e in range(a, b + 1)]
    if b - a <= 2:
        ticks = sorted(t * m for t in ticks for m in (1, 2, 5) if 10.0 ** a <= t * m <= 10.0 ** b)
    return ticks


def _decimate(x: np.ndarray, y: np.ndarray, max_points: int = 1600) -> tuple[np.ndarray, np.ndarray]:
    """Keep min and max of each bucket so spikes survive on long series."""
    if len(x) <= max_points:
        return x, y
    b = max_points // 2
    edges = np.linspace(0, len(x), b + 1).astype(int)
    xs, ys = [], []
    for i0, i1 in zip(edges[:-1], edges[1:]):
        seg = y[i0:i1]
        if len(seg) == 0:
            continue
        bad = ~np.isfinite(seg)
        keep = {i0 + int(np.argmax(bad))} if bad.any() else set()  # a gap stays a gap
        if not bad.all():
            keep |= {i0 + int(np.nanargmin(seg)), i0 + int(np.nanargmax(seg))}
        for j in sorted(keep):
            xs.append(x[j])
            ys.append(y[j])
    return np.asarray(xs), np.asarray(ys)


def svg_line_chart(series: list[dict], *, width: int = 760, height: int = 240, title: str = "",
                   xlabel: str = "", ylabel: str = "", y2label: str = "", log_y: bool = False) -> str:
    """A line chart as an inline <svg>.

    series: [{"label", "x", "y", "color"?, "axis": "left"|"right", "fill": bool, "dash": bool}]
    Right-axis series get their own scale (y2label). Non-finite points break the line.
    """
    ml, mr, mt, mb = 58, (58 if any(s.get("axis") == "right" for s in series) else 18), 34, 40
    pw, ph = width - ml - mr, height - mt - mb
    clean = []
    for i, s in enumerate(series):
        x = np.asarray(s["x"], np.float64)
        y = np.asarray(s["y"], np.float64)
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        if log_y and s.get("axis", "left") == "left":
            y = np.where(y > 0, y, np.nan)
        clean.append({**s, "x": x, "y": y, "color": s.get("color", PALETTE[i % len(PALETTE)])})
    allx = np.concatenate([s["x"] for s in clean if len(s["x"])] or [np.zeros(1)])
    x_lo, x_hi = float(np.nanmin(allx)), float(np.nanmax(allx))
    if x_hi <= x_lo:
        x_hi = x_lo + 1

    def yrange(axis):
        ys = [s["y"][np.isfinite(s["y"])] for s in clean if s.get("axis", "left") == axis]
        ys = np.concatenate(ys) if ys else np.zeros(0)
        if ys.size == 0:
            return None
        lo, hi = float(ys.min()), float(ys.max())
        if log_y and axis == "left":
            t = _log_ticks(lo, hi)
            return t, math.log10(t[0]), math.log10(t[-1])
        t = nice_ticks(lo, hi)
        return t, t[0], t[-1]

    ranges = {a: yrange(a) for a in ("left", "right")}

    def px(x):
        return ml + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y, axis):
        _, lo, hi = ranges[axis]
        if log_y and axis == "left":
            y = math.log10(y)
        return mt + ph - (y - lo) / ((hi - lo) or 1) * ph

    out = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-size="11" font-family="system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif" '
           f'fill="{_INK}" role="img" aria-label="{html.escape(title)}">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff" rx="8"/>',
           f'<text x="{ml}" y="18" font-weight="600" font-size="13">{html.escape(title)}</text>',
           f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="{_FRAME}"/>']
    if ranges["left"]:
        for t in ranges["left"][0]:
            y = py(t, "left")
            out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>'
                       f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_num(t)}</text>')
    if ranges["right"]:
        for t in ranges["right"][0]:
            out.append(f'<text x="{ml + pw + 6}" y="{py(t, "right") + 4:.1f}" fill="{_MUTED}">{_fmt_num(t)}</text>')
    for t in nice_ticks(x_lo, x_hi, 8):
        if x_lo - 1e-9 <= t <= x_hi + 1e-9:
            x = px(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="{_MUTED}"/>'
                       f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{_fmt_num(t)}</text>')
    if xlabel:
        out.append(f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle" fill="{_MUTED}">{html.escape(xlabel)}</text>')
    if ylabel:
        out.append(f'<text transform="translate(14,{mt + ph / 2}) rotate(-90)" text-anchor="middle" fill="{_MUTED}">'
                   f'{html.escape(ylabel)}</text>')
    if y2label:
        out.append(f'<text transform="translate({width - 10},{mt + ph / 2}) rotate(90)" text-anchor="middle" '
                   f'fill="{_MUTED}">{html.escape(y2label)}</text>')
    # right-axis (context) series first so the main lines stay on top
    for s in sorted(clean, key=lambda s: s.get("axis", "left") != "right"):
        axis = s.get("axis", "left")
        if ranges[axis] is None:
            continue
        x, y = _decimate(s["x"], s["y"])
        runs, cur = [], []
        for xi, yi in zip(x, y):
            if np.isfinite(yi):
                cur.append(f"{px(xi):.1f},{py(yi, axis):.1f}")
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        for pts in runs:
            if s.get("fill"):
                base = mt + ph
                out.append(f'<polygon points="{pts[0].split(",")[0]},{base} {" ".join(pts)} '
                           f'{pts[-1].split(",")[0]},{base}" fill="{s["color"]}" fill-opacity="0.16" stroke="none"/>')
            dash = ' stroke-dasharray="5 3"' if s.get("dash") else ""
            out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{s["color"]}" '
                       f'stroke-width="{1.2 if s.get("fill") else 1.8}" stroke-linejoin="round"{dash}/>')
    # legend, right-aligned in the title row
    lx = width - mr
    for s in reversed(clean):
        label = html.escape(str(s.get("label", "")))
        w = 26 + 6.2 * len(label)
        lx -= w
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 16:.1f}" y1="14" y2="14" stroke="{s["color"]}" stroke-width="3"/>'
                   f'<text x="{lx + 20:.1f}" y="18">{label}</text>')
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------- figures


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


def _figures_table(fig: dict) -> str:
    rows = []
    for key, label, _, better, helptext in FIGURES:
        if (key not in fig and key not in UNAVAILABLE_REASON) or key.startswith(("seconds:", "peak_rss_mb:")):
            continue
        value = fig.get(key)
        if value is None:
            reason = fig.get(UNAVAILABLE_REASON.get(key, ""), None)
            if key not in fig and reason is None:
                continue
            if key == "syncnet_offset" and fig.get("syncnet_confidence") is None:
                continue  # the confidence row already says why SyncNet did not run
            cell = f'<span class="na">unavailable: {html.escape(str(reason or "not measured"))}</span>'
        else:
            cell = html.escape(format_figure(key, value))
        arrow = {"high": "↑", "low": "↓"}.get(better, "")
        rows.append(f'<tr><th>{html.escape(label)} <span class="arrow">{arrow}</span></th><td class="num">{cell}</td>'
                    f'<td class="muted">{html.escape(helptext)}</td></tr>')
    return '<table class="figs">' + "".join(rows) + "</table>" if rows else ""


def _stages_table(stages) -> str:
    if isinstance(stages, dict):
        stages = [{"stage": k, "seconds": v} for k, v in stages.items()]
    stages = [s for s in stages if s.get("seconds") is not None]
    if not stages:
        return ""
    total = sum(float(s["seconds"]) for s in stages) or 1.0
    rows = []
    for s in stages:
        sec = float(s["seconds"])
        bar = f'<div class="bar"><span style="width:{100 * sec / total:.1f}%"></span></div>'
        extra = f'{int(s["steps"]):,} steps' if s.get("steps") else ""
        rows.append(f'<tr><th>{html.escape(str(s["stage"]))}</th><td class="num">{format_seconds(sec)}</td>'
                    f'<td>{bar}</td><td class="muted">{extra}</td></tr>')
    rows.append(f'<tr class="total"><th>total</th><td class="num">{format_seconds(total)}</td><td></td><td></td></tr>')
    return '<table class="stages">' + "".join(rows) + "</table>"


def _frames_section(frames: list[dict], scale: float) -> str:
    from talkctl.metrics import psnr

    cards = []
    for f in frames:
        real, rend = f.get("real"), f["rendered"]
        label = html.escape(str(f.get("label") or f"frame {f.get('index', '')}"))
        cols = []
        if real is not None:
            cols.append(f'<figure>{img_tag(real, "real " + label)}<figcaption>real</figcaption></figure>')
        cols.append(f'<figure>{img_tag(rend, "rendered " + label)}<figcaption>rendered</figcaption></figure>')
        stat = ""
        if real is not None:
            cols.append(f'<figure>{img_tag(error_heatmap(real, rend, scale), "error " + label)}'
                        f'<figcaption>error</figcaption></figure>')
            stat = f' · PSNR {psnr(real, rend):.2f} dB'
        cards.append(f'<div class="triple"><div class="flabel">{label}{stat}</div><div class="row">{"".join(cols)}</div></div>')
    has_real = any(f.get("real") is not None for f in frames)
    legend = f'<div class="cbarwrap">{_colorbar_svg(scale)}</div>' if has_real else ""
    return legend + "".join(cards)


def _curves_section(c: dict) -> str:
    fps = float(c.get("fps", 25))
    series = []
    if c.get("audio_energy_db") is not None:
        e = np.asarray(c["audio_energy_db"], np.float64)
        series.append({"label": "speech energy (dB)", "x": np.arange(len(e)) / fps, "y": e, "axis": "right",
                       "color": "#9ca3af", "fill": True})
    if c.get("mouth_real") is not None:
        m = np.asarray(c["mouth_real"], np.float64)
        series.append({"label": "real mouth", "x": np.arange(len(m)) / fps, "y": m, "color": PALETTE[0]})
    if c.get("mouth_rendered") is not None:
        m = np.asarray(c["mouth_rendered"], np.float64)
        series.append({"label": "rendered mouth", "x": np.arange(len(m)) / fps, "y": m, "color": PALETTE[1]})
    if not series:
        return ""
    has_right = any(s.get("axis") == "right" for s in series)
    return svg_line_chart(series, width=980, height=260, title=c.get("title", "Mouth opening over time"),
                          xlabel="time (s)", ylabel="mouth opening", y2label="dB" if has_right else "")


def _training_section(training: dict) -> str:
    out = []
    for stage, t in training.items():
        step = t.get("step")
        charts = []
        if t.get("loss") is not None:
            s = step if step is not None else np.arange(len(t["loss"]))
            y = np.asarray(t["loss"], np.float64)
            charts.append(svg_line_chart([{"label": "loss", "x": s, "y": y, "color": PALETTE[3]}], width=480, height=220,
                                         title=f"{stage}: loss", xlabel="step", log_y=bool(np.nanmin(y) > 0)))
        if t.get("psnr") is not None:
            s = t.get("psnr_step", step) if t.get("psnr_step", step) is not None else np.arange(len(t["psnr"]))
            charts.append(svg_line_chart([{"label": "PSNR (dB)", "x": s, "y": t["psnr"], "color": PALETTE[2]}],
                                         width=480, height=220, title=f"{stage}: PSNR", xlabel="step"))
        if charts:
            out.append(f'<div class="row charts">{"".join(charts)}</div>')
    return "".join(out)


_CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f9fafb;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1040px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:24px;margin:0 0 2px}h2{font-size:17px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin-bottom:14px}
.muted{color:var(--muted)}.na{color:#b45309}
.meta{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px}.meta b{font-weight:600;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:14px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:21px;font-weight:650}.card .l{color:var(--muted);font-size:12px}
table{border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px}
th,td{padding:6px 12px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle}
th{font-weight:600;white-space:nowrap}td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
tr.total th,tr.total td{border-top:2px solid var(--line)}
.arrow{color:var(--muted);font-weight:400}
.bar{width:220px;height:9px;background:#eef2ff;border-radius:5px;overflow:hidden}
.bar span{display:block;height:100%;background:var(--accent)}
.triple{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px;margin:12px 0}
.flabel{font-weight:600;margin-bottom:6px}
.row{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;flex:1 1 0;min-width:200px}figure img{width:100%;height:auto;display:block;border-radius:4px;
image-rendering:auto}figcaption{text-align:center;color:var(--muted);font-size:12px;margin-top:3px}
svg.chart{border:1px solid var(--line);border-radius:8px;max-width:100%;height:auto}
.charts svg{flex:1 1 460px}
.cbarwrap{display:flex;align-items:center;gap:8px;font-size:12px}
ul.notes{color:var(--muted)}
@media print{body{background:#fff}.triple,table,svg.chart{break-inside:avoid}}
"""

_HEADLINE = ("psnr", "ssim", "lpips", "lmd", "sync_corr", "render_fps")


def render_html(data: dict) -> str:
    title = str(data.get("title") or "talkctl evaluation")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' "
             f"content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title><style>{_CSS}</style>"
             f"</head><body><main><h1>{html.escape(title)}</h1>"]
    created = data.get("created") or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f'<div class="sub">{html.escape(str(data.get("subtitle") or ""))} '
                 f'<span class="muted">{html.escape(str(created))}</span></div>')
    if data.get("meta"):
        parts.append('<div class="meta">' + "".join(f"<span><b>{html.escape(str(k))}</b> {html.escape(str(v))}</span>"
                                                  for k, v in data["meta"].items()) + "</div>")
    fig = dict(data.get("figures") or {})
    if data.get("gaussians") is not None and "gaussians" not in fig:
        fig["gaussians"] = data["gaussians"]
    stages = data.get("stages")
    if stages and "train_seconds" not in fig:
        items = stages.values() if isinstance(stages, dict) else [s.get("seconds") for s in stages]
        fig["train_seconds"] = sum(float(v) for v in items if v is not None)
    cards = []
    for key in _HEADLINE:
        if fig.get(key) is not None:
            label, _, better, _ = _FIG[key]
            cards.append(f'<div class="card"><div class="l">{html.escape(label)} {"↑" if better == "high" else "↓"}</div>'
                         f'<div class="v">{html.escape(format_figure(key, fig[key]))}</div></div>')
    if cards:
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
    if data.get("frames"):
        parts.append("<h2>Real vs rendered</h2>" + _frames_section(data["frames"], float(data.get("error_scale", 0.25))))
    if data.get("curves"):
        sec = _curves_section(data["curves"])
        if sec:
            parts.append("<h2>Lip motion</h2>" + sec)
    if fig:
        parts.append("<h2>Figures</h2>" + _figures_table(fig))
    if stages:
        parts.append("<h2>Training time per stage</h2>" + _stages_table(stages))
    if data.get("training"):
        parts.append("<h2>Training curves</h2>" + _training_section(data["training"]))
    if data.get("notes"):
        parts.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{html.escape(str(n))}</li>" for n in data["notes"])
                     + "</ul>")
    parts.append("</main></body></html>")
    return "".join(parts)


def write_report(path_html: str | os.PathLike, data: dict) -> Path:
    """Write the self-contained report atomically (temp file, then rename). Returns the path."""
    from talkctl.errors import InputError

    path = Path(path_html)
    text = render_html(data)
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}; choose a writable report path") from None
    return path


# ---------------------------------------------------------------------------- comparison (eval RUN1 RUN2 ...)

COMPARE_KEYS = ("method", "psnr", "ssim", "lpips", "lmd", "mouth_corr", "sync_corr", "syncnet_confidence",
                "render_fps", "train_seconds", "train_peak_memory_mb", "model_mb", "gaussians")
STAGE_KEYS = tuple(f"seconds:{st}" for st in STAGE_NAMES)  # the second table: training time per stage
STAGE_MEMORY_KEYS = tuple(f"peak_rss_mb:{st}" for st in STAGE_NAMES)  # the third: peak memory per stage


def _best(rows: list[dict], key: str) -> float | None:
    better = _FIG[key][2]
    vals = [r.get(key) for r in rows if isinstance(r.get(key), (int, float)) and not (isinstance(r.get(key), float) and math.isnan(r[key]))]
    if not better or len(vals) < 2:
        return None
    return max(vals) if better == "high" else min(vals)


def _columns(rows: list[dict], keys=COMPARE_KEYS) -> list[str]:
    return [k for k in keys if any(r.get(k) is not None for r in rows)]


def _cell(r: dict, k: str) -> str:
    if r.get(k) is None:
        return "n/a"
    s = format_figure(k, r[k])
    if k == "sync_corr" and r.get("sync_lag") is not None:
        s += f" ({int(r['sync_lag']):+d})"
    return s


def comparison_table(rows: list[dict], keys=COMPARE_KEYS, title: str = "talkctl eval"):
    """A rich Table: one row per run ({"run": name, <figure keys>...}); best value in bold green."""
    from rich.table import Table

    cols = _columns(rows, keys)
    t = Table(title=title, header_style="bold")
    t.add_column("run", style="cyan", no_wrap=True)
    for k in cols:
        arrow = {"high": " ↑", "low": " ↓"}.get(_FIG[k][2], "")
        t.add_column(_FIG[k][0] + arrow, justify="right")
    best = {k: _best(rows, k) for k in cols}
    for r in rows:
        cells = []
        for k in cols:
            s = _cell(r, k)
            if best[k] is not None and r.get(k) == best[k]:
                s = f"[bold green]{s}[/]"
            cells.append(s)
        t.add_row(str(r.get("run", "?")), *cells)
    return t


def comparison_markdown(rows: list[dict], keys=COMPARE_KEYS) -> str:
    """The same table as GitHub markdown (plain text: readable in a terminal or a CI log);
    the best value of each column is in **bold**."""
    cols = _columns(rows, keys)
    head = ["run"] + [_FIG[k][0] + {"high": " ↑", "low": " ↓"}.get(_FIG[k][2], "") for k in cols]
    best = {k: _best(rows, k) for k in cols}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
    for r in rows:
        cells = [str(r.get("run", "?")).replace("|", "\\|")]
        for k in cols:
            s = _cell(r, k)
            cells.append(f"**{s}**" if best[k] is not None and r.get(k) == best[k] else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
