"""Benchmark: how far a trained run's deformation field opens the tracked mouth states it renders
(head.mouth_render, what train-deform now records as deform.h5 mouth_render_gain), measured on a
trained run with the loaded head, and optionally written into a COPY's deform.h5 so runs trained
before the measurement existed can be driven with it (bench/audio_path_refit.py copies).

    OMP_WAIT_POLICY=PASSIVE python bench/render_gain.py RUN [RUN ...] [--write] --out render_gain.json
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from common import load_avg, machine, print_table, write_json


def measure(run_path: Path) -> dict:
    from talkctl import artifacts
    from talkctl.face.reader import LandmarkReader
    from talkctl.gs.splat import over
    from talkctl.head.mouth_readout import landmark_readout
    from talkctl.head.mouth_render import measure_render_gain, speaking_frames
    from talkctl.head.renderer import Renderer, to_uint8
    from talkctl.audio.recipe import speech_activity
    from talkctl.images import resize_square
    from talkctl.jpeg_frames import frame_images
    from talkctl.rundir import RunDir
    from talkctl.stages import train_deform as td
    from talkctl.timebase import split_frames

    run = RunDir(run_path, create=False)
    track = artifacts.read_track(run, ("world_to_cam", "blink"))
    T = track.n_frames
    train_idx = split_frames(T)[0]
    with artifacts.open_for_read(run, "audio") as a:
        speech = speech_activity(a["waveform"][()], T)
    ctx = SimpleNamespace(run=run, log=logging.getLogger("render_gain"), device="cpu")
    readout, _ = landmark_readout(ctx, dict(td.DEFAULTS), SimpleNamespace(T=T, train_idx=train_idx), 32)
    states = readout.targets
    r = Renderer.load(run, "cpu", 0)
    frames = speaking_frames(train_idx, speech)
    with artifacts.open_for_read(run, "frames") as ff:
        images = frame_images(ff, "frames")
        real = np.stack([resize_square(images[i], r.size) for i in frames])
    pos = {int(f): j for j, f in enumerate(frames)}

    def over_real(idx, gain):
        with torch.inference_mode():
            h = r.head.render(None, track.world_to_cam[idx], r.K_head, r.size, blink=track.blink[idx],
                              code=gain * states[torch.as_tensor(idx)])
            under = torch.as_tensor(real[[pos[int(i)] for i in idx]]).float() / 255.0
            return to_uint8(over(h.rgb, h.alpha, under))

    backend = str((artifacts.read_attrs(run, "track") or {}).get("landmark_backend") or "auto")
    reader = LandmarkReader(backend)
    try:
        return measure_render_gain(over_real, frames, real, reader)
    finally:
        reader.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--write", action="store_true", help="write the attrs into the run's deform.h5 (use on copies)")
    ap.add_argument("--out", default="render_gain.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = load_avg()
    rows = []
    for run in args.runs:
        rec = measure(run)
        rows.append({"run": str(run), **rec})
        if args.write and "mouth_render_reason" not in rec:
            from talkctl import h5files

            path = run / "deform.h5"
            with h5py.File(path, "r+") as f:
                f.attrs.update(rec)
                h5files.stamp(f, path)
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows, [(k, k) for k in ("run", "mouth_render_gain", "mouth_render_corr", "mouth_render_response")])
    write_json(args.out, {"benchmark": "mouth render gain of trained fields (head.mouth_render)",
                          "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": load_avg()},
                          "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
