"""Benchmark: frames/s of the head renderer per output size and method, model only and model +
JPEG encoding, with every method's images checked against the torch reference rasteriser.

Renders the run's held-out frames (self-driven: their own audio, poses, blinks) with each
method, in batches of `--batch` frames (1 = one frame at a time, as a live stream renders):
  reference  Renderer with the torch rasteriser (the training-grade reference)
  numba      the same Renderer with the numba forward-only rasteriser (render's default on the CPU)
model fps = frames / time to make the uint8 RGB frames; +JPEG adds cv2.imencode (quality 85)
of every frame; CPU ms/frame = process CPU time (all threads) per frame, model + JPEG, which
shared cores disturb less than wall time. Medians over `--repeats` passes after a warm-up
pass (numba compiles then); the methods' passes interleave so that they see the same load.
Images: PSNR and max |difference| of each method's uint8 frames vs the reference's, and
the PSNR of each method vs the real held-out frames (must agree within 0.1 dB).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_render_speed.py --run RUN [--sizes 128,256]
        [--methods reference,numba] [--batch 1] [--frames 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from common import describe, load_avg, machine, print_table, write_json

JPEG_QUALITY = 85


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def make_method(name: str, run, size: int, drive):
    """name -> (render(idx) -> (C,S,S,3) uint8 frames, description)."""
    from talkctl.head.drive import feed
    from talkctl.head.renderer import Renderer

    rast = {"reference": "torch", "numba": "numba"}.get(name)
    if rast is None:
        raise SystemExit(f"unknown method {name!r}; choose from reference, numba")
    renderer = Renderer.load(run, "cpu", size, rast)
    src = drive.source_frames

    def render(idx):  # what render_batches does for one batch
        rel = feed(renderer.head, drive, idx)
        return renderer.render(rel, drive.world_to_cam[idx], drive.blink[idx],
                               source=None if src is None else src[idx])["full"]

    return render, f"Renderer, rasteriser {rast}"


def one_pass(render, n: int, batch: int) -> tuple[float, float, float, np.ndarray]:
    """(model s, JPEG s, process CPU s, frames) of one pass over frames 0..n-1."""
    import cv2

    t_model = t_jpeg = 0.0
    c0 = time.process_time()
    frames = []
    for b0 in range(0, n, batch):
        idx = np.arange(b0, min(n, b0 + batch))
        t0 = time.perf_counter()
        out = render(idx)
        t1 = time.perf_counter()
        for fr in out:
            ok, _ = cv2.imencode(".jpg", np.ascontiguousarray(fr[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        t_jpeg += time.perf_counter() - t1
        t_model += t1 - t0
        frames.append(out)
    return t_model, t_jpeg, time.process_time() - c0, np.concatenate(frames)


def real_frames(run, drive, n: int, size: int) -> np.ndarray:
    from talkctl import artifacts
    from talkctl.images import resize_square

    a = drive.held_out[0]
    with artifacts.open_for_read(run, "frames") as f:
        return np.stack([resize_square(f["frames"][a + i], size) for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run trained through train-torso")
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--methods", default="reference,numba")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", default="render_speed_cpu.json")
    args = ap.parse_args()

    import torch

    from talkctl.rundir import RunDir
    from talkctl.head.drive import self_drive

    if args.threads:
        torch.set_num_threads(args.threads)
    run = RunDir(args.run, create=False)
    info = machine()
    drive = self_drive(run)
    n = min(args.frames, drive.n_frames)
    rows = []
    names = args.methods.split(",")
    for size in [int(s) for s in args.sizes.split(",")]:
        real = real_frames(run, drive, n, size)
        methods = {name: make_method(name, run, size, drive) for name in names}
        times = {name: [] for name in names}
        frames = {}
        with torch.no_grad():
            for rep in range(args.repeats + 1):  # pass 0 warms up; methods interleave so they share the load
                for name in names:
                    t_model, t_jpeg, cpu, frames[name] = one_pass(methods[name][0], n, args.batch)
                    if rep:
                        times[name].append((t_model, t_model + t_jpeg, cpu))
        ref = frames[names[0]]
        for name in names:
            model, total, cpu = (statistics.median(t[k] for t in times[name]) for k in range(3))
            diff = np.abs(frames[name].astype(np.int16) - ref.astype(np.int16))
            rows.append({"size": size, "method": name, "batch": args.batch, "frames": n,
                         "model_fps": round(n / model, 1), "jpeg_fps": round(n / total, 1),
                         "cpu_ms_per_frame": round(cpu / n * 1e3, 1),
                         "psnr_vs_reference": round(_psnr(frames[name], ref), 2), "max_abs_diff": int(diff.max()),
                         "psnr_vs_real": round(_psnr(frames[name], real), 3), "description": methods[name][1]})
    print_table(rows, [("size", "size"), ("method", "method"), ("batch", "batch"), ("model_fps", "model fps"),
                       ("jpeg_fps", "+JPEG fps"), ("cpu_ms_per_frame", "CPU ms/frame"), ("psnr_vs_reference", "PSNR vs ref"),
                       ("max_abs_diff", "max |diff|"), ("psnr_vs_real", "PSNR vs real")])
    info["load_avg_after"] = load_avg()
    print(describe(info))
    write_json(args.out, {"machine": info, "run": str(run), "repeats": args.repeats, "batch": args.batch,
                          "jpeg_quality": JPEG_QUALITY, "rows": rows,
                          "note": "medians over repeats after a warm-up pass; held-out frames self-driven; "
                                  "PSNR vs ref/real over uint8 full frames (plate + torso + head)"})


if __name__ == "__main__":
    main()
