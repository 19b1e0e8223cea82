"""Hand-written SVG line charts and colour bars for report.html (no scripts, no plotting library)."""
from __future__ import annotations

import html
import math

import numpy as np

from talkctl.report.figures import _fmt_num
from talkctl.report.images import _INFERNO

_INK, _MUTED, _GRID, _FRAME = "#374151", "#6b7280", "#eef0f3", "#d1d5db"
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]


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


def _clean_series(series: list[dict], log_y: bool) -> list[dict]:
    """Float arrays of equal length, a colour each; log-scale left series lose their values <= 0."""
    clean = []
    for i, s in enumerate(series):
        x = np.asarray(s["x"], np.float64)
        y = np.asarray(s["y"], np.float64)
        n = min(len(x), len(y))
        x, y = x[:n], y[:n]
        if log_y and s.get("axis", "left") == "left":
            y = np.where(y > 0, y, np.nan)
        clean.append({**s, "x": x, "y": y, "color": s.get("color", PALETTE[i % len(PALETTE)])})
    return clean


class _Plot:
    """The plot area of a chart: margins, data ranges and the data -> pixel mapping."""

    def __init__(self, clean: list[dict], width: int, height: int, log_y: bool):
        self.width, self.height, self.log_y = width, height, log_y
        self.ml, self.mr = 58, (58 if any(s.get("axis") == "right" for s in clean) else 18)
        self.mt, mb = 34, 40
        self.pw, self.ph = width - self.ml - self.mr, height - self.mt - mb
        allx = np.concatenate([s["x"] for s in clean if len(s["x"])] or [np.zeros(1)])
        self.x_lo, self.x_hi = float(np.nanmin(allx)), float(np.nanmax(allx))
        if self.x_hi <= self.x_lo:
            self.x_hi = self.x_lo + 1
        self.ranges = {a: self._yrange(clean, a) for a in ("left", "right")}

    def _yrange(self, clean: list[dict], axis: str):
        """(ticks, lo, hi) of an axis (lo, hi in log10 on a log axis), None without series."""
        ys = [s["y"][np.isfinite(s["y"])] for s in clean if s.get("axis", "left") == axis]
        ys = np.concatenate(ys) if ys else np.zeros(0)
        if ys.size == 0:
            return None
        lo, hi = float(ys.min()), float(ys.max())
        if self.log_y and axis == "left":
            t = _log_ticks(lo, hi)
            return t, math.log10(t[0]), math.log10(t[-1])
        t = nice_ticks(lo, hi)
        return t, t[0], t[-1]

    def px(self, x):
        return self.ml + (x - self.x_lo) / (self.x_hi - self.x_lo) * self.pw

    def py(self, y, axis):
        _, lo, hi = self.ranges[axis]
        if self.log_y and axis == "left":
            y = math.log10(y)
        return self.mt + self.ph - (y - lo) / ((hi - lo) or 1) * self.ph


def _axes_svg(p: _Plot, xlabel: str, ylabel: str, y2label: str) -> list[str]:
    ml, mt, pw, ph = p.ml, p.mt, p.pw, p.ph
    out = []
    if p.ranges["left"]:
        for t in p.ranges["left"][0]:
            y = p.py(t, "left")
            out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>'
                       f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_num(t)}</text>')
    if p.ranges["right"]:
        for t in p.ranges["right"][0]:
            out.append(f'<text x="{ml + pw + 6}" y="{p.py(t, "right") + 4:.1f}" fill="{_MUTED}">{_fmt_num(t)}</text>')
    for t in nice_ticks(p.x_lo, p.x_hi, 8):
        if p.x_lo - 1e-9 <= t <= p.x_hi + 1e-9:
            x = p.px(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="{_MUTED}"/>'
                       f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{_fmt_num(t)}</text>')
    if xlabel:
        out.append(f'<text x="{ml + pw / 2}" y="{p.height - 6}" text-anchor="middle" fill="{_MUTED}">'
                   f'{html.escape(xlabel)}</text>')
    if ylabel:
        out.append(f'<text transform="translate(14,{mt + ph / 2}) rotate(-90)" text-anchor="middle" fill="{_MUTED}">'
                   f'{html.escape(ylabel)}</text>')
    if y2label:
        out.append(f'<text transform="translate({p.width - 10},{mt + ph / 2}) rotate(90)" text-anchor="middle" '
                   f'fill="{_MUTED}">{html.escape(y2label)}</text>')
    return out


def _series_svg(p: _Plot, s: dict) -> list[str]:
    """One series as polylines (broken at non-finite points), with its fill when asked."""
    axis = s.get("axis", "left")
    if p.ranges[axis] is None:
        return []
    x, y = _decimate(s["x"], s["y"])
    runs, cur = [], []
    for xi, yi in zip(x, y):
        if np.isfinite(yi):
            cur.append(f"{p.px(xi):.1f},{p.py(yi, axis):.1f}")
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    out = []
    for pts in runs:
        if s.get("fill"):
            base = p.mt + p.ph
            out.append(f'<polygon points="{pts[0].split(",")[0]},{base} {" ".join(pts)} '
                       f'{pts[-1].split(",")[0]},{base}" fill="{s["color"]}" fill-opacity="0.16" stroke="none"/>')
        dash = ' stroke-dasharray="5 3"' if s.get("dash") else ""
        out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{s["color"]}" '
                   f'stroke-width="{1.2 if s.get("fill") else 1.8}" stroke-linejoin="round"{dash}/>')
    return out


def svg_line_chart(series: list[dict], *, width: int = 760, height: int = 240, title: str = "",
                   xlabel: str = "", ylabel: str = "", y2label: str = "", log_y: bool = False) -> str:
    """A line chart as an inline <svg>.

    series: [{"label", "x", "y", "color"?, "axis": "left"|"right", "fill": bool, "dash": bool}]
    Right-axis series get their own scale (y2label). Non-finite points break the line.
    """
    clean = _clean_series(series, log_y)
    p = _Plot(clean, width, height, log_y)
    out = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-size="12" font-family="system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif" '
           f'fill="{_INK}" role="img" aria-label="{html.escape(title)}">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff" rx="8"/>',
           f'<text x="{p.ml}" y="18" font-weight="600" font-size="13">{html.escape(title)}</text>',
           f'<rect x="{p.ml}" y="{p.mt}" width="{p.pw}" height="{p.ph}" fill="none" stroke="{_FRAME}"/>']
    out += _axes_svg(p, xlabel, ylabel, y2label)
    # right-axis (context) series first so the main lines stay on top
    for s in sorted(clean, key=lambda s: s.get("axis", "left") != "right"):
        out += _series_svg(p, s)
    # legend, right-aligned in the title row
    lx = width - p.mr
    for s in reversed(clean):
        label = html.escape(str(s.get("label", "")))
        w = 26 + 6.8 * len(label)
        lx -= w
        out.append(f'<line x1="{lx:.1f}" x2="{lx + 16:.1f}" y1="14" y2="14" stroke="{s["color"]}" stroke-width="3"/>'
                   f'<text x="{lx + 20:.1f}" y="18">{label}</text>')
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------------- figures
