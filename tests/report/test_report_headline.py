"""report.html's headline says which composite its figures score; a training curve says what its
PSNR is of and carries eval's figure of the same kind as a dashed line; per-composite LPIPS rows
do not repeat why LPIPS is unavailable."""
import re

from talkctl.report import html as report


def test_headline_names_the_composite_and_curves_say_what_they_measure(tmp_path):
    data = {
        "figures": {"composite": "portrait", "psnr": 38.5, "ssim": 0.97, "render_fps": 9.5, "lpips": None,
                    "lpips_reason": "missing alex.pth", "model_lpips": None, "portrait_lpips": None,
                    "model_psnr": 27.1, "head_psnr": 33.3},
        "training": {"train-torso": {"step": [0, 250, 500], "psnr": [25.0, 26.5, 27.0],
                                     "measure": "model composite, whole frame, held-out frames",
                                     "reference": {"value": 27.1, "label": "eval: model composite, whole frame"}}},
    }
    s = report.write_report(tmp_path / "report.html", data).read_text()
    cards = re.findall(r'<div class="card"><div class="l">([^<]*)</div>', s)
    assert "PSNR (portrait) ↑" in cards and "Render speed (portrait) ↑" in cards
    assert "train-torso: PSNR, model composite, whole frame, held-out frames" in s
    assert "eval: model composite, whole frame: 27.10 dB" in s and 'stroke-dasharray="5 3"' in s
    assert s.count("missing alex.pth") == 1  # said once, on the LPIPS row
    assert "PSNR head only" in s and "diagnostic" in s


def test_the_lip_sync_card_is_the_figure_with_a_ground_truth(tmp_path):
    base = {"composite": "portrait", "psnr": 38.5, "sync_corr": 0.6, "mouth_corr": 0.55}

    def cards(fig):
        s = report.write_report(tmp_path / "report.html", {"figures": fig}).read_text()
        return re.findall(r'<div class="card"><div class="l">([^<]*)</div><div class="v">([^<]*)</div>', s)

    assert ("X-sync corr. ↑", "0.420") in cards({**base, "xsync_corr": 0.42})  # other videos' real speakers
    assert ("Mouth corr. ↑", "0.550") in cards(base)  # the held-out frames' real mouth
    # with its 95 % interval when eval measured one, on the card and in the figures table
    with_ci = {**base, "mouth_corr_ci95": [0.31, 0.7]}
    assert ("Mouth corr. ↑", "0.550") in cards(with_ci)
    s = report.write_report(tmp_path / "r2.html", {"figures": with_ci}).read_text()
    assert '<div class="v">0.550</div><div class="ci">95 % CI 0.31–0.70</div>' in s
    assert "0.550 [0.31, 0.70]" in s  # the figures table
    only_proxy = cards({"composite": "portrait", "psnr": 38.5, "sync_corr": 0.6})
    assert ("Sync corr. ↑", "0.600") in only_proxy and len(only_proxy) == 2
