"""Benchmark: init-static, train-deform, train-torso at the `fast` preset on a real clip (CPU).

Target: german_20s (500 frames) at 256x256, all three stages in <= 30 min on 2 CPU cores.
Runs extract-audio, track (--set size=256) and parse first when their outputs are missing
(not timed), then each training stage once (forced), and reads back the held-out numbers:
head-region PSNR (render over black vs frame x head mask, inside the mask) and the full
composite PSNR (plate <- torso <- head vs the real frame). One run per stage (training is
minutes long): the numbers are single measurements, not medians.
Prints a table and writes bench/results/train_cpu.json.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_train.py [--video V] [--run DIR] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import SHARED_HINT, load_avg, machine, shared_file, write_json


def heldout_metrics(run, size: int, device: str) -> dict:
    """Head-region and lip-box PSNR on the held-out frames: static Gaussians vs the deformed head."""
    import h5py
    import numpy as np
    import torch

    from talkctl.head.models import load_head, load_static
    from talkctl.gs.training import FrameStore, scale_intrinsics
    from talkctl.jpeg_frames import frame_images
    from talkctl.timebase import split_frames

    static, head = load_static(run, device)["head"], load_head(run, device)
    with h5py.File(run.file("audio.h5")) as a:
        head.set_audio(a["features"][()])
    out = {"static_head": 0.0, "deform_head": 0.0, "static_lips": 0.0, "deform_lips": 0.0}
    se = {k: [0.0, 0.0] for k in out}
    with h5py.File(run.file("frames.h5")) as fr, h5py.File(run.file("parse.h5")) as pa, h5py.File(run.file("track.h5")) as tr:
        images = frame_images(fr, "frames")
        S = images.shape[1]
        frames, labels = FrameStore(images, size), FrameStore(pa["labels"], size, "labels")
        K = scale_intrinsics(tr["intrinsics"][()], S, size)
        w2c, blink, lips = tr["world_to_cam"][()], tr["blink"][()], tr["lip_box"][()] * size / S
        _, held = split_frames(images.shape[0])
        with torch.no_grad():
            for i in held:
                m = labels.get([i])[..., 1:2]
                target = frames.get([i]) * m
                x0, y0, x1, y1 = (int(round(v)) for v in lips[i])
                for name, r in (("static", static.render(w2c[[i]], K, size)),
                                 ("deform", head.render([i], w2c[[i]], K, size, blink=blink[[i]]))):
                    err = (r.rgb - target) ** 2
                    se[f"{name}_head"][0] += float((err * m).sum()); se[f"{name}_head"][1] += float(m.sum()) * 3
                    box = err[:, y0:y1, x0:x1]
                    se[f"{name}_lips"][0] += float(box.sum()); se[f"{name}_lips"][1] += box.numel()
    for k, (a, b) in se.items():
        out[k] = round(10 * np.log10(1.0 / max(a / max(b, 1), 1e-10)), 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=shared_file("data", "video", "german_20s.mp4"),
                    help="default: german_20s.mp4 of the shared clips")
    ap.add_argument("--run", type=Path, default=Path("/tmp/talkctl-bench-train"))
    ap.add_argument("--size", type=int, default=256, help="track crop side and training resolution")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", dest="set_", action="append", default=[], help="key=value for all three stages")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", action="store_true",
                    help="keep outputs that are up to date (their time and numbers are read from the artifacts)")
    ap.add_argument("--out", type=Path, default=Path("train_cpu.json"),
                    help="results file (a bare name goes under bench/results/)")
    args = ap.parse_args(argv)
    if args.video is None or not args.video.exists():
        print(f"skipped: {args.video or 'german_20s.mp4'} is not here (shared data: {SHARED_HINT})")
        return 0
    from talkctl import artifacts
    from talkctl.config import parse_set
    from talkctl.pipeline import run_stage
    from talkctl.rundir import RunDir

    run = RunDir(args.run)
    run.set_video(args.video)
    up = {"extract-audio": {}, "track": {"size": args.size}, "parse": {}}
    for stage, over in up.items():
        run_stage(stage, run, preset=args.preset, overrides=over, device=args.device)
    over = {"resolution": args.size, **parse_set(args.set_)}
    rows, info = [], {"machine": machine(), "video": str(args.video), "preset": args.preset, "overrides": over}
    keys = ("psnr_head", "psnr_torso", "psnr_full", "n_head", "n_torso", "n_gaussians", "train_seconds", "perceptual_loss")
    outputs = {"init-static": "static", "train-deform": "deform", "train-torso": "torso"}
    for stage in ("init-static", "train-deform", "train-torso"):
        t = time.time()
        s = run_stage(stage, run, preset=args.preset, overrides=over, device=args.device, force=not args.reuse)
        seconds = time.time() - t
        if s["status"] == "up to date":  # --reuse: the numbers of the run that made the artifact
            s = artifacts.read_attrs(run, outputs[stage])
            seconds = float(s["seconds"])
        rows.append({"stage": stage, "seconds": round(seconds, 1),
                     **{k: (v.item() if hasattr(v, "item") else v) for k, v in s.items() if k in keys}})
        print(rows[-1], flush=True)
    info.update({ "stages": rows, "total_seconds": round(sum(r["seconds"] for r in rows), 1),
                 "load_avg_at_end": load_avg()})
    import h5py

    from talkctl.jpeg_frames import frame_images

    with h5py.File(run.file("frames.h5")) as f:
        info["frames"], info["crop_size"] = (int(v) for v in frame_images(f, "frames").shape[:2])
    info["held_out_static_vs_deform"] = heldout_metrics(run, args.size, args.device)
    print("held-out, static vs deform:", info["held_out_static_vs_deform"])
    print(f"\n{'stage':14s} {'seconds':>8s} {'gaussians':>10s} {'held-out PSNR':>28s}")
    for r in rows:
        n = r.get("n_gaussians") or f"{r.get('n_head')}+{r.get('n_torso')}"
        p = (f"head {r['psnr_head']:.2f}" if "psnr_head" in r else "") + (
            f" torso {r['psnr_torso']:.2f}" if "psnr_torso" in r else "") + (
            f" full {r['psnr_full']:.2f}" if "psnr_full" in r else "")
        print(f"{r['stage']:14s} {r['seconds']:8.1f} {str(n):>10s} {p:>28s}")
    print(f"total {info['total_seconds']:.1f} s for {info['frames']} frames at {args.size}^2")
    write_json(args.out, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
