"""`talkctl view` as a person sees it, and how fast it animates.

    python bench/bench_view.py --run RUN [--port 8130] [--screenshot bench/results/view.png]

1. Frames per second of the viewer's animation: per frame the server deforms the head (and
   torso) and sends the splats (viser); the browser draws them (client-side splatting). Median
   over the held-out clip's frames, measured in-process without a browser attached.
2. A screenshot of the page in headless Chromium (Debian package `chromium`), skipped with a
   note when Chromium is absent. Look at the PNG: it should show the head and torso as splats,
   the camera frustum and its path, and the controls.
Prints a table and writes bench/results/view.json.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, write_json  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def animation_fps(run: Path, frames: int) -> dict:
    from talkctl.rundir import RunDir
    from talkctl.viewer import Viewer

    v = Viewer(RunDir(run, create=False), "cpu")
    v.listen("127.0.0.1", _free_port())
    v.build()
    try:
        times = [v.show(i % v.drive.n_frames) for i in range(frames)]
    finally:
        v.stop()
    med = statistics.median(times[1:] or times)
    return {"frames": frames, "gaussians_head": v.head.gaussians.num,
            "gaussians_torso": v.torso.gaussians.num if v.torso is not None else 0,
            "median_ms": round(med * 1000, 1), "fps": round(1.0 / med, 1)}


def screenshot(run: Path, out: Path, port: int) -> str:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    if chrome is None:
        return "skipped: no chromium here (apt-get install chromium)"
    view = subprocess.Popen([sys.executable, "-m", "talkctl", "view", "--run", str(run), "--port", str(port),
                             "--device", "cpu", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(12)  # model load + scene
        subprocess.run([chrome, "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                        "--window-size=1280,800", "--virtual-time-budget=40000", f"--screenshot={out}",
                        f"http://127.0.0.1:{port}"], capture_output=True, timeout=120)
    finally:
        view.terminate()
        view.wait(timeout=60)
    return str(out) if out.exists() else "failed: chromium wrote no screenshot"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run trained through train-torso")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--screenshot", type=Path, default=Path(__file__).parent / "results" / "view.png")
    args = ap.parse_args()
    info = machine()
    row = animation_fps(args.run, args.frames)
    row["screenshot"] = screenshot(args.run, args.screenshot, args.port or _free_port())
    print_table([row], [("gaussians_head", "head Gaussians"), ("gaussians_torso", "torso Gaussians"),
                        ("median_ms", "ms / frame"), ("fps", "frames/s"), ("screenshot", "screenshot")])
    write_json("view.json", {"machine": info, "run": str(args.run), **row,
                             "note": "median over frames of deform (head + torso) + send; the browser draws"})


if __name__ == "__main__":
    main()
