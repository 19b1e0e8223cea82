"""Where a render's time goes, piece by piece, on a trained run (median ms per frame).

Times the steps of one render batch separately: audio condition, hash-grid encoding of the
canonical Gaussians, deformation MLP, applying the deltas, the head rasterisation, the torso
(pose field + rasterisation, or the image torso), layer compositing, the uint8 conversion
and JPEG encoding, for each rasteriser given.

    OMP_WAIT_POLICY=PASSIVE python bench/profile_render.py --run RUN [--sizes 128,256]
        [--batch 1] [--rasterizers torch,numba]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from common import describe, load_avg, machine, print_table, write_json

PIECES = ("condition", "hashgrid", "mlp", "apply", "raster_head", "torso_field", "raster_torso",
          "layers", "uint8", "jpeg")


class Clock:
    """Laps of wall time, or of process CPU time (steadier on shared cores; with --threads 1
    it is exactly the work of each piece)."""

    def __init__(self, cpu: bool = False):
        self.now = time.process_time if cpu else time.perf_counter
        self.ms: dict[str, list[float]] = {}
        self.t = self.now()

    def lap(self, name: str) -> None:
        now = self.now()
        self.ms.setdefault(name, []).append((now - self.t) * 1e3)
        self.t = now


def _inputs(model, cached: bool):
    """(opacities, colours, sh degree): made once (cached) or from the parameters every frame."""
    if cached:
        c = model.constants
        return c.opacities, c.colors, c.sh_degree
    return (model.gaussians.opacities, *model.gaussians.color_inputs())


def profile_batch(renderer, drive, idx, clock: Clock, cached: bool):
    """One batch of Renderer.render, step by step (the same calls, timed between). cached: the
    per-Gaussian constants made once (head.models.FrameConstants) as render does now; else
    recomputed every frame (hash grid, opacities, colours), as render did before."""
    import cv2
    import torch

    from talkctl.gs.splat import render
    from talkctl.head.drive import feed
    from talkctl.head.field import apply_deform
    from talkctl.head.models import _tensor, composite

    head, torso, size = renderer.head, renderer.torso, renderer.size
    g, f = head.gaussians, head.field
    clock.t = clock.now()
    code = head.codes(feed(head, drive, idx))
    K_torso = renderer.torso_K(None if drive.source_frames is None else drive.source_frames[idx])
    eye = _tensor(drive.blink[idx], head.device).reshape(-1, 1) if f.eye_dim else None
    pg = head.condition.per_gaussian(code, g.means)
    clock.lap("condition")
    pos = head.constants.pos if cached else f.position_features(g.means)
    clock.lap("hashgrid")
    parts = [code] + ([eye] if f.eye_dim else [])
    h = pos[None] + f.in_cond(torch.cat(parts, -1))[:, None]
    if f.in_pg is not None and pg is not None:
        h = h + f.in_pg(pg)
    o = f.out(f.trunk(h))
    clock.lap("mlp")
    dq = o[..., 3:7] + torch.tensor([1.0, 0, 0, 0])
    means, quats, scales = apply_deform(g.means, g.params["quats"], g.params["log_scales"], o[..., :3], dq, o[..., 7:])
    opac, colors, deg = _inputs(head, cached)
    clock.lap("apply")
    w2c = _tensor(drive.world_to_cam[idx], head.device)
    hout = render(head.rasterize, means, quats, scales, opac, colors, w2c,
                  _tensor(renderer.K_head, head.device), size, deg)
    clock.lap("raster_head")
    if torso.mode == "image":
        clock.lap("torso_field")
        tout = torso.render(drive.world_to_cam[idx], K_torso, size, head_rgb=hout.rgb, head_alpha=hout.alpha)
        clock.lap("raster_torso")
    else:
        tg = torso.gaussians
        d = torso.field(tg.means, torso.pose.encode_pose(w2c), pos=torso.constants.pos if cached else None)
        tm, tq, ts = apply_deform(tg.means, tg.params["quats"], tg.params["log_scales"], *d)
        topac, tcol, tdeg = _inputs(torso, cached)
        clock.lap("torso_field")
        tout = render(torso.rasterize, tm, tq, ts, topac, tcol, torch.eye(4).expand(len(idx), 4, 4),
                      _tensor(K_torso, head.device), size, tdeg)
        clock.lap("raster_torso")
    img = composite(renderer._plate if cached else renderer.background, tout, hout)
    clock.lap("layers")
    u8 = (img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    clock.lap("uint8")
    for fr in u8:
        cv2.imencode(".jpg", fr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    clock.lap("jpeg")
    return u8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--sizes", default="128,256")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rasterizers", default="torch,numba")
    ap.add_argument("--modes", default="per-frame,cached", help="per-frame (render before) and/or cached (now)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--threads", type=int, default=0, help="torch (and rasteriser) threads; 0 = torch's default")
    ap.add_argument("--out", default="render_profile_cpu.json")
    args = ap.parse_args()

    import torch

    from talkctl.rundir import RunDir
    from talkctl.head.drive import self_drive
    from talkctl.head.renderer import Renderer

    if args.threads:
        torch.set_num_threads(args.threads)
    run = RunDir(args.run, create=False)
    info = machine(clock=args.clock)
    drive = self_drive(run)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for rast, mode in [(r, m) for m in args.modes.split(",") for r in args.rasterizers.split(",")]:
            renderer = Renderer.load(run, "cpu", size, rast)
            clock = Clock(args.clock == "cpu")
            n = min(args.frames, drive.n_frames)
            with torch.inference_mode() if mode == "cached" else torch.no_grad():
                for rep in range(2):  # the first pass warms up (numba compiles, caches fill)
                    if rep:
                        clock.ms.clear()
                    for b0 in range(0, n - args.batch + 1, args.batch):
                        profile_batch(renderer, drive, np.arange(b0, b0 + args.batch), clock, mode == "cached")
            row = {"size": size, "mode": mode, "rasterizer": rast, "batch": args.batch,
                   **{k: round(statistics.median(clock.ms[k]) / args.batch, 2) for k in PIECES}}
            row["total"] = round(sum(row[k] for k in PIECES), 2)
            row["fps"] = round(1000.0 / row["total"], 1)
            rows.append(row)
    print_table(rows, [("size", "size"), ("mode", "mode"), ("rasterizer", "raster")] + [(k, k) for k in PIECES]
                + [("total", "total ms"), ("fps", "fps")])
    info["load_avg_after"] = load_avg()
    print(describe(info))
    head = Renderer.load(run, "cpu", 0, "torch")
    write_json(args.out, {"machine": info, "run": str(run), "rows": rows,
                          "gaussians": {"head": len(head.head.gaussians.means),
                                        "torso": len(head.torso.gaussians.means) if head.torso.mode != "image" else 0},
                          "note": "median ms per frame of each piece (per call / batch); clock wall or process "
                                  "CPU; per-frame = every input recomputed each frame (render before), cached = "
                                  "per-Gaussian constants made once + inference_mode (render now)"})


if __name__ == "__main__":
    main()
