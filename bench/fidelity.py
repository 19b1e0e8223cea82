"""Full-frame fidelity of what `talkctl render` writes, measured outside talkctl's own eval.

For each run (a shared clip trained through train-torso at the `fast` preset) and each composite
mode, this script has `talkctl render` make the self-driven held-out mp4 (the last 1/11 of the
clip, never trained on), then decodes that mp4 and the source video itself with ffmpeg (25 fps,
the run's crop, area-resized to the render size) and scores the full frames: PSNR and SSIM (its
own Gaussian-window SSIM, Wang et al. 2004, averaged over RGB), median and mean over the frames,
plus PSNR inside the parse regions (head, neck+torso, background) to say where the error sits.
It saves one still per clip: real | portrait | model of the middle held-out frame.

    python bench/fidelity.py --run german_20s=/path/run --run french_50s=/path/run --label after
    python bench/fidelity.py --build german_20s --root /tmp/fid   # trains the run first (slow)

Results: bench/results/fidelity_<label>.json and bench/results/fidelity_<clip>_<label>.png.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, SHARED_HINT, describe, machine, print_table, shared_file, write_json

MODES = ("portrait", "model")


def talkctl(*args: str) -> str:
    """Run one talkctl verb with this checkout's code; its stdout."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m", "talkctl", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"talkctl {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def decode(path: Path, size: int, vf: str = "") -> np.ndarray:
    """All frames of a video as (N,size,size,3) uint8 RGB, through ffmpeg's filter `vf`."""
    chain = (vf + "," if vf else "") + "format=rgb24"
    from talkctl.media.ffmpeg import ffmpeg_exe  # only where the binary is

    raw = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf", chain, "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)


def run_facts(run: Path) -> dict:
    """Held-out range, crop and the source video of a run, read from its files (h5py only)."""
    import h5py

    with h5py.File(run / "deform.h5", "r") as f:
        a, b = (int(v) for v in f.attrs["held_out"])
    with h5py.File(run / "frames.h5", "r") as f:
        x0, y0, side = (int(v) for v in f.attrs["crop"])
    with h5py.File(run / "parse.h5", "r") as f:
        labels = f["labels"][a:b]
    video = json.loads((run / "run.json").read_text())["video"]["path"]
    return {"held_out": (a, b), "crop": (x0, y0, side), "video": Path(video), "labels": labels}


def real_frames(facts: dict, size: int) -> np.ndarray:
    """The real held-out frames, decoded from the source video independently of talkctl: the whole
    stream resampled to 25 fps (a trim filter counts frames from the stream's first timestamp,
    which can differ by a frame or two), frames [a, b) kept as they pass."""
    from talkctl.media.ffmpeg import ffmpeg_exe  # only where the binary is

    x0, y0, side = facts["crop"]
    a, b = facts["held_out"]
    vf = f"fps=25,crop={side}:{side}:{x0}:{y0},scale={size}:{size}:flags=area,format=rgb24"
    proc = subprocess.Popen([ffmpeg_exe(), "-v", "error", "-i", str(facts["video"]), "-an", "-vf", vf,
                             "-f", "rawvideo", "-"], stdout=subprocess.PIPE)
    n, frames, i = size * size * 3, [], 0
    while i < b:
        buf = proc.stdout.read(n)
        if len(buf) < n:
            break
        if i >= a:
            frames.append(np.frombuffer(buf, np.uint8).reshape(size, size, 3))
        i += 1
    proc.kill()
    proc.wait()
    return np.stack(frames)


def gaussian_blur(x: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(sigma, sigma, 0), truncate=3.5)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Gaussian window sigma 1.5, K1 0.01, K2 0.03) over pixels and RGB channels."""
    x, y = a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = gaussian_blur(x), gaussian_blur(y)
    vx = gaussian_blur(x * x) - mx * mx
    vy = gaussian_blur(y * y) - my * my
    cxy = gaussian_blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d.mean() if where is None else (d[where].mean() if where.any() else float("nan"))
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


REGIONS = {"head": (1,), "body": (2, 3), "background": (0,)}  # parse labels: 0 bg, 1 head, 2 neck, 3 torso


def score(rendered: np.ndarray, real: np.ndarray, labels: np.ndarray) -> dict:
    """Per-frame full PSNR/SSIM (median, mean) and region PSNRs (over all frames' pixels)."""
    import cv2

    n = min(len(rendered), len(real))
    size = real.shape[1]
    lab = np.stack([cv2.resize(l, (size, size), interpolation=cv2.INTER_NEAREST) for l in labels[:n]])
    p = [psnr(rendered[i], real[i]) for i in range(n)]
    s = [ssim(rendered[i], real[i]) for i in range(n)]
    out = {"frames": n, "psnr": round(statistics.median(p), 2), "psnr_mean": round(statistics.mean(p), 2),
           "ssim": round(statistics.median(s), 4), "ssim_mean": round(statistics.mean(s), 4)}
    for name, ids in REGIONS.items():
        out[f"psnr_{name}"] = round(psnr(rendered[:n], real[:n], np.isin(lab, ids)), 2)
    return out


def measure_run(clip: str, run: Path, modes: list[str], label: str, size: int) -> dict:
    facts = run_facts(run)
    rendered, row = {}, {"clip": clip, "run": str(run), "held_out": list(facts["held_out"])}
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as tmp:
        for mode in modes:
            mp4 = Path(tmp) / f"{mode}.mp4"
            t0 = time.perf_counter()
            out = talkctl("render", "--run", str(run), "--composite", mode, "--size", str(size), "-o", str(mp4),
                          "--json", "-q")
            summary = json.loads(out[out.index("{"):])
            side = int(summary["render_size"])
            rendered[mode] = decode(mp4, side)
            row[f"{mode}_render_s"] = round(time.perf_counter() - t0, 1)
    real = real_frames(facts, side)
    row["size"] = side
    for mode, frames in rendered.items():
        row[mode] = score(frames, real, facts["labels"])
    save_still(clip, label, real, rendered)
    return row


def save_still(clip: str, label: str, real: np.ndarray, rendered: dict) -> Path:
    """real | each mode, the middle held-out frame, side by side, as a PNG."""
    from PIL import Image

    mid = len(real) // 2
    tiles = [real[mid]] + [frames[min(mid, len(frames) - 1)] for frames in rendered.values()]
    path = RESULTS / f"fidelity_{clip}_{label}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)
    print(f"wrote {path} (real | {' | '.join(rendered)})")
    return path


def build(clip: str, root: Path) -> Path:
    """Train a run of a shared clip at the fast preset through train-torso (tens of minutes on a CPU)."""
    video = shared_file("data", "video", f"{clip}.mp4")
    if video is None:
        raise SystemExit(f"{clip}.mp4 not found: needs the shared data ({SHARED_HINT})")
    run = root / clip
    talkctl("run", str(run), "--video", str(video), "--to", "train-torso", "--preset", "fast", "-q")
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", default=[], help="CLIP=RUN_DIR of a trained run (repeatable)")
    ap.add_argument("--build", action="append", default=[], help="CLIP: train its run under --root first")
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "talkctl-fidelity")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--size", type=int, default=0, help="render side (0: the training resolution)")
    ap.add_argument("--label", default="now", help="names the results (before, after, ...)")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    runs = [tuple(r.split("=", 1)) for r in args.run] + [(c, build(c, args.root)) for c in args.build]
    if not runs:
        raise SystemExit("give --run CLIP=RUN_DIR or --build CLIP")
    info = machine()
    rows = [measure_run(clip, Path(run), args.modes.split(","), args.label, args.size) for clip, run in runs]
    info["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    table = [{"clip": r["clip"], "mode": m, **r[m]} for r in rows for m in args.modes.split(",")]
    print_table(table, [("clip", "clip"), ("mode", "mode"), ("frames", "frames"), ("psnr", "PSNR dB (median)"),
                        ("psnr_mean", "mean"), ("ssim", "SSIM (median)"), ("psnr_head", "head"),
                        ("psnr_body", "neck+torso"), ("psnr_background", "background")])
    print(describe(info))
    write_json(f"fidelity_{args.label}.json", {"machine": info, "label": args.label, "note": args.note,
                                                "protocol": __doc__.split("\n\n")[1], "runs": rows})


if __name__ == "__main__":
    main()
