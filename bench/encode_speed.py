"""Encode speed of talkctl.media.video_out.VideoWriter: frames/s for 512x512 H.264 (+AAC) output.

Frames are a real face photo (scikit-image astronaut) moved and rescaled a little every
frame, so the encoder sees camera-like content rather than a static picture.
Usage: python bench/encode_speed.py [--frames 250] [--presets medium,fast,veryfast]
Prints a table and writes bench/results/encode_speed.json (medians over --repeats).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import describe, load_avg, machine, write_json

from talkctl.media.video_out import VideoWriter


def frames(n: int, size: int):
    import cv2
    from skimage import data

    base = cv2.resize(data.astronaut(), (size + 32, size + 32), interpolation=cv2.INTER_AREA)
    for i in range(n):
        dx, dy = int(8 + 7 * np.sin(i / 9)), int(8 + 5 * np.cos(i / 13))
        yield base[dy:dy + size, dx:dx + size]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--presets", default="medium,fast,veryfast")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    info = machine()
    pre = list(frames(a.frames, a.size))  # generated up front: time the encoder, not the generator
    wav = (0.2 * np.sin(2 * np.pi * 220 * np.arange(a.frames * 640) / 16000)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for preset in a.presets.split(","):
            fps, sizes = [], []
            for r in range(a.repeats):
                out = Path(d) / f"{preset}{r}.mp4"
                t0 = time.perf_counter()
                with VideoWriter(out, size=(a.size, a.size), audio=wav, preset=preset) as vw:
                    for f in pre:
                        vw.write(f)
                fps.append(a.frames / (time.perf_counter() - t0))
                sizes.append(out.stat().st_size)
            rows.append({"preset": preset, "crf": 18, "fps_median": round(statistics.median(fps), 1),
                         "fps_all": [round(x, 1) for x in fps], "kbit_s": round(statistics.median(sizes) * 8 / 1000 / (a.frames / 25))})
    info["load_avg_after"] = load_avg()
    print(f"{'preset':<10}{'fps (median)':>14}{'kbit/s':>9}   runs   ({a.size}x{a.size}, {a.frames} frames, with AAC audio)")
    for r in rows:
        print(f"{r['preset']:<10}{r['fps_median']:>14}{r['kbit_s']:>9}   {r['fps_all']}")
    print(describe(info))
    write_json("encode_speed.json", {"size": a.size, "frames": a.frames, "results": rows, "machine": info})


if __name__ == "__main__":
    main()
