"""report.html: one self-contained file (images as base64 PNG, plots as hand-written SVG,
no scripts, no network) showing how good a trained talking head is.

`write_report(path, data)` takes a plain dict; every section is optional:
  title: str, subtitle: str
  meta: {label: value}                        run, video, device, talkctl version, date ...
  figures: {key: value}                       keys of report.figures.FIGURES (None = not measured);
                                              lpips_reason / syncnet_reason explain a None
  stages: {stage: seconds} or [{"stage", "seconds", "steps"?}]   training time per stage
  gaussians: {"head": n, "torso": n}
  frames: [{"index": int, "real": (H,W,3) uint8 | None, "rendered": (H,W,3) uint8, "label"?}]
  error_scale: float                          |real-rendered| (0..1) mapped to the top colour (0.25)
  curves: {"fps": 25, "mouth_real": [...], "mouth_rendered": [...], "audio_energy_db": [...],
           "title"?: str, "real_label"?: str}
  drive_curves: [curves, ...]                 the head driven by other videos' audio vs their real speakers
  training: {stage: {"step": [...], "loss": [...], "psnr": [...], "measure"?: str (what the PSNR is of),
             "reference"?: {"value", "label"} (eval's figure of the same kind: a dashed line)}}
  notes: [str]
"""
from __future__ import annotations

import datetime as _dt
import html
import os
from pathlib import Path

import numpy as np

from talkctl.report.charts import PALETTE, _colorbar_svg, svg_line_chart
from talkctl.report.figures import _FIG, FIGURES, UNAVAILABLE_REASON, format_figure, format_seconds, interval_text
from talkctl.report.images import error_heatmap, img_tag


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
            if key.endswith("_lpips") and key != "lpips" and fig.get("lpips") is None:
                continue  # the LPIPS row already says why LPIPS is unavailable
            cell = f'<span class="na">unavailable: {html.escape(str(reason or "not measured"))}</span>'
        else:
            cell = html.escape(format_figure(key, value) + interval_text(fig, key))
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
        series.append({"label": c.get("real_label", "real mouth"), "x": np.arange(len(m)) / fps, "y": m, "color": PALETTE[0]})
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
        parts = []
        if t.get("loss") is not None:
            s = step if step is not None else np.arange(len(t["loss"]))
            y = np.asarray(t["loss"], np.float64)
            parts.append(([{"label": "loss", "x": s, "y": y, "color": PALETTE[3]}], f"{stage}: training loss",
                          bool(np.nanmin(y) > 0)))
        if t.get("psnr") is not None:
            s = t.get("psnr_step", step) if t.get("psnr_step", step) is not None else np.arange(len(t["psnr"]))
            series = [{"label": "PSNR (dB)", "x": s, "y": t["psnr"], "color": PALETTE[2]}]
            ref = t.get("reference")
            if ref and ref.get("value") is not None and len(s):  # eval's figure of the same kind
                series.append({"label": f"{ref['label']}: {ref['value']:.2f} dB", "x": [s[0], s[-1]],
                               "y": [ref["value"]] * 2, "color": PALETTE[6], "dash": True})
            title = f"{stage}: PSNR, {t['measure']}" if t.get("measure") else f"{stage}: held-out PSNR"
            parts.append((series, title, False))
        # drawn at the width they are shown (one chart: the whole row), so the text keeps the page's size
        width = 480 if len(parts) > 1 else 980
        charts = [svg_line_chart(series, width=width, height=220, title=title, xlabel="step", log_y=log_y)
                  for series, title, log_y in parts]
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
.muted{color:var(--muted)}.na{color:#b45309;white-space:normal;overflow-wrap:anywhere}
.meta{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px}.meta b{font-weight:600;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:14px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.card .v{font-size:21px;font-weight:650}.card .l,.card .ci{color:var(--muted);font-size:12px}.card .ci{white-space:nowrap}
table{border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;max-width:100%}
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
.charts svg{flex:0 1 auto;min-width:0}
.cbarwrap{display:flex;align-items:center;gap:8px;font-size:12px}
ul.notes{color:var(--muted)}
@media print{body{background:#fff}.triple,table,svg.chart{break-inside:avoid}}
"""
# lip sync: the figure with a real ground truth when there is one (other videos' real speakers, then the
# held-out frames' real mouth); the speech-energy proxy only without either
_HEADLINE = ("psnr", "ssim", "lpips", "lmd", ("xsync_corr", "mouth_corr", "sync_corr"), "render_fps")
_PER_COMPOSITE = ("psnr", "ssim", "lpips", "lmd", "render_fps")


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
    shown_as = f" ({fig['composite']})" if fig.get("composite") else ""  # what the headline figures score
    for choice in _HEADLINE:
        key = next((k for k in (choice if isinstance(choice, tuple) else (choice,)) if fig.get(k) is not None), None)
        if key is not None:
            label, _, better, _ = _FIG[key]
            label += shown_as if key in _PER_COMPOSITE else ""
            ci = interval_text(fig, key, card=True)  # under the figure, small: the big digits stay one line
            cards.append(f'<div class="card"><div class="l">{html.escape(label)} {"↑" if better == "high" else "↓"}</div>'
                         f'<div class="v">{html.escape(format_figure(key, fig[key]))}</div>'
                         + (f'<div class="ci">{html.escape(ci)}</div>' if ci else "") + "</div>")
    if cards:
        parts.append('<div class="cards">' + "".join(cards) + "</div>")
    if data.get("frames"):
        parts.append("<h2>Real vs rendered</h2>" + _frames_section(data["frames"], float(data.get("error_scale", 0.25))))
    if data.get("curves"):
        sec = _curves_section(data["curves"])
        if sec:
            parts.append("<h2>Lip motion</h2>" + sec)
    drives = [_curves_section(c) for c in data.get("drive_curves") or []]
    if any(drives):
        parts.append("<h2>Driven by other videos: rendered vs real speaker</h2>" + "".join(drives))
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
