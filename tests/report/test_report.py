import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import base64
import re
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from talkctl import report
from talkctl.errors import InputError


def _face(h=96, w=96, shift=0):
    from skimage import data

    img = cv2.resize(data.astronaut()[20:276, 120:376], (w, h), interpolation=cv2.INTER_AREA)
    return np.roll(img, shift, axis=1)


def _data():
    t = np.arange(200)
    real = _face()
    return {
        "title": "eval <demo>",
        "meta": {"run": "runs/a", "device": "cpu"},
        "figures": {"psnr": 31.234, "ssim": 0.95, "lpips": None, "lpips_reason": "missing alex.pth",
                    "lmd": 0.031, "mouth_corr": 0.8, "sync_corr": 0.6, "sync_lag": 1, "render_fps": 120.0},
        "stages": {"init-static": 300.0, "train-deform": 2400.0},
        "gaussians": {"head": 40000, "torso": 10000},
        "frames": [{"index": 7, "real": real, "rendered": _face(shift=2)}, {"index": 9, "real": None, "rendered": real}],
        "curves": {"fps": 25, "mouth_real": np.sin(t / 5), "mouth_rendered": np.sin(t / 5 - 0.2),
                   "audio_energy_db": -40 + 10 * np.sin(t / 5)},
        "training": {"train-deform": {"step": t * 10, "loss": np.exp(-t / 50) + 0.01, "psnr": 20 + t / 20}},
        "notes": ["a note"],
    }


def test_png_roundtrip():
    rng = np.random.default_rng(0)
    for shape in [(5, 7), (5, 7, 3), (5, 7, 4)]:
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        back = cv2.imdecode(np.frombuffer(report.png_bytes(img), np.uint8), cv2.IMREAD_UNCHANGED)
        if len(shape) == 3:
            back = cv2.cvtColor(back, cv2.COLOR_BGR2RGB if shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
        assert np.array_equal(back, img)


def test_heatmap_scale():
    a = np.zeros((4, 4, 3), np.uint8)
    assert (report.error_heatmap(a, a) == report.INFERNO_LUT[0]).all()
    b = np.full((4, 4, 3), 255, np.uint8)
    assert (report.error_heatmap(a, b) == report.INFERNO_LUT[255]).all()
    half = np.full((4, 4, 3), 32, np.uint8)  # 32/255 with scale 0.25 -> about half way
    assert (report.error_heatmap(a, half, scale=0.25) == report.INFERNO_LUT[128]).all()
    # the colour map gets brighter monotonically
    assert (np.diff(report.INFERNO_LUT.astype(int).sum(1)) >= 0).all()


def test_nice_ticks():
    assert report.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    t = report.nice_ticks(-63.2, -21.7)
    assert t[0] <= -63.2 and t[-1] >= -21.7 and len(t) <= 7
    assert len(report.nice_ticks(5, 5)) >= 2  # constant series still get an axis


def test_chart_is_valid_svg_with_gaps_and_log_axis():
    x = np.arange(5000)
    y = np.exp(-x / 1000.0)
    y[100:110] = np.nan
    svg = report.svg_line_chart([{"label": "loss", "x": x, "y": y}, {"label": "e", "x": x, "y": -np.exp(-x / 1000.0), "axis": "right"}],
                                title="a & b", log_y=True)
    root = ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))
    lines = root.findall(".//{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3  # the NaN gap splits the left series; the right one is whole
    assert all(len(p.get("points").split()) <= 1700 for p in lines)  # long series are decimated


def test_write_report_self_contained(tmp_path):
    out = report.write_report(tmp_path / "r" / "report.html", _data())
    s = out.read_text()
    assert "<script" not in s and not re.search(r'(src|href)="https?:', s)
    assert "eval &lt;demo&gt;" in s
    assert "31.23 dB" in s and "unavailable: missing alex.pth" in s and "+1 fr" in s
    assert "40,000 head + 10,000 torso" in s and "45 min 00 s" in s  # 300 + 2400 s total
    assert s.count('<svg class="chart"') == 3  # mouth curves + loss + PSNR
    assert "train-deform" in s and "a note" in s
    imgs = re.findall(r"base64,([A-Za-z0-9+/=]+)", s)
    assert len(imgs) == 3 + 1  # real, rendered, error; then a render without a real frame
    first = cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(imgs[0]), np.uint8), 1), cv2.COLOR_BGR2RGB)
    assert np.array_equal(first, _face())  # lossless
    for svg in re.findall(r"<svg .*?</svg>", s, re.S):
        ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))
    assert not list((tmp_path / "r").glob("*.partial"))


def test_unavailable_texts_wrap_and_charts_keep_the_page_font():
    """Long "unavailable: ..." reasons wrap instead of pushing the table off screen; training charts
    are drawn at the width they are shown (no scaling up of their 12 px text)."""
    data = _data()
    data["figures"]["lpips_reason"] = "no alexnet-owt-7be5be79.pth in /a/very/long/weights/folder/path " * 3
    data["training"]["init-static"] = {"psnr_step": [0, 50, 100], "psnr": [11.0, 14.0, 16.0]}  # no loss curve
    s = report.render_html(data)
    css = re.search(r"<style>(.*?)</style>", s, re.S).group(1)
    na = re.search(r"\.na\{([^}]*)\}", css).group(1)
    assert "white-space:normal" in na and "overflow-wrap:anywhere" in na
    assert re.search(r"\.charts svg\{[^}]*flex:0 1 auto", css)  # never grown past its drawn width
    charts = re.findall(r'<svg class="chart" width="(\d+)"[^>]*font-size="(\d+)"', s)
    widths = [int(w) for w, _ in charts]
    assert widths == [980, 480, 480, 980] and {f for _, f in charts} == {"12"}  # mouth; deform loss+PSNR; static PSNR


def test_minimal_report_and_unwritable(tmp_path):
    s = report.write_report(tmp_path / "m.html", {"figures": {"psnr": 30.0}}).read_text()
    assert "30.00 dB" in s and "<svg" not in s
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(InputError):
        report.write_report(blocker / "r.html", {})


ROWS = [
    {"run": "a", "psnr": 30.0, "ssim": 0.9, "lpips": 0.08, "sync_corr": 0.5, "sync_lag": 0, "render_fps": 100.0},
    {"run": "b", "psnr": 32.5, "ssim": 0.93, "lpips": 0.11, "sync_corr": 0.6, "sync_lag": -1, "render_fps": None},
]


def test_comparison_markdown():
    md = report.comparison_markdown(ROWS)
    lines = md.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| run | PSNR")
    assert "**32.50 dB**" in lines[3] and "30.00 dB" in lines[2] and "**30.00 dB**" not in lines[2]
    assert "**0.0800**" in lines[2]  # lower LPIPS is better
    assert "0.600 (-1)" in lines[3] and "n/a" in lines[3]
    assert "LMD" not in lines[0]  # columns nobody measured are left out


def test_comparison_rich_table():
    from rich.console import Console

    t = report.comparison_table(ROWS)
    assert t.row_count == 2
    con = Console(record=True, width=160)
    con.print(t)
    text = con.export_text()
    assert "32.50 dB" in text and "0.1100" in text and "SSIM" in text


def test_comparison_method_memory_size_and_stage_seconds():
    rows = [{"run": "g", "method": "gstalker", "train_peak_memory_mb": 900.0, "model_mb": 0.61,
             "seconds:train-deform": 1500.0, "seconds:train-torso": 300.0},
            {"run": "t", "method": "two-stage", "train_peak_memory_mb": 700.0, "model_mb": 1.27,
             "seconds:train-a2l": 120.0, "seconds:train-deform": 1400.0, "seconds:train-torso": 250.0}]
    md = report.comparison_markdown(rows).splitlines()
    assert "Method" in md[0] and "Training peak mem." in md[0] and "Model size" in md[0]
    assert "two-stage" in md[3] and "**700 MiB**" in md[3] and "**0.61 MiB**" in md[2]
    stages = report.comparison_markdown(rows, report.STAGE_KEYS).splitlines()
    assert stages[0].split("|")[2:5] == [" train-a2l ↓ ", " train-deform ↓ ", " train-torso ↓ "]
    assert "n/a" in stages[2] and "**23 min 20 s**" in stages[3]
