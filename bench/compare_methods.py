"""Benchmark: the two methods on the synthetic subject, side by side.

  gstalker  train-deform --condition audio  + train-torso --mode gaussian   (audio-driven GSTalker)
  two-stage train-a2l + train-deform --condition landmarks + train-torso --mode image
            (decoupled two-stage method: audio -> landmarks -> Gaussians; StyleUNet torso)

Both start from the same extract-audio / track / parse / init-static outputs (one base run,
copied). Quality comes from `talkctl eval` (stages/eval.py: held-out PSNR, SSIM, mouth LMD,
mouth-opening correlation, audio/mouth sync) when it is installed; training seconds per
stage and model sizes (artifact bytes, parameter counts) come from the artifacts.
One training run per stage: single measurements, not medians.

    OMP_WAIT_POLICY=PASSIVE python bench/compare_methods.py [--seconds 8] [--resolution 64] [--preset tiny]
        [--work DIR] [--eval-only]
Prints a table and writes bench/results/compare_methods.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import machine, write_json

METHODS = {
    "gstalker": [("train-deform", {"condition": "audio"}), ("train-torso", {"mode": "gaussian"})],
    "two-stage": [("train-a2l", {}), ("train-deform", {"condition": "landmarks"}), ("train-torso", {"mode": "image"})],
}
ARTIFACT_OF = {"train-deform": "deform.h5", "train-torso": "torso.h5", "train-a2l": "a2l.h5"}


SUMMARY_KEYS = ("psnr_head", "psnr_full", "n_gaussians", "n_parameters", "mouth_lmd", "mouth_lmd_baseline",
                "mouth_open_corr")


def stage(name, run, preset, overrides, times, figures=None):
    from talkctl.pipeline import run_stage

    t = time.perf_counter()
    s = run_stage(name, run, preset=preset, device="cpu", overrides=overrides)
    times[name] = round(time.perf_counter() - t, 1)
    if figures is not None:
        figures[name] = {k: s[k] for k in SUMMARY_KEYS if k in s}
    return s


def model_size(run) -> dict:
    import h5py

    out = {"bytes": 0, "parameters": 0}
    for name in ("deform.h5", "torso.h5", "a2l.h5"):
        p = run.path / name
        if not p.exists():
            continue
        out["bytes"] += p.stat().st_size
        with h5py.File(p) as f:
            for grp in ("field", "condition", "net", "pose", "weights"):
                if grp in f:
                    f[grp].visititems(lambda n, o: out.__setitem__("parameters", out["parameters"] + (o.size if hasattr(o, "size") else 0)))
            for grp in ("head", "torso"):
                if grp in f and "means" in f[grp]:
                    out["parameters"] += sum(f[grp][k].size for k in f[grp].keys())
    out["mib"] = round(out["bytes"] / 2 ** 20, 2)
    return out


def heldout(run, drive: str) -> dict:
    """Self-driven held-out figures without the render stage: full composite (plate <- torso <-
    head) and head-region PSNR / SSIM against the real frames at the training resolution.
    drive: "audio" (the run's audio features), "a2l" (landmarks predicted from the held-out
    audio by a2l.h5: the fair two-stage setting) or "track" (the tracked landmarks of the held-out
    frames: the landmark field's upper bound, no audio model)."""
    import h5py
    import numpy as np
    import torch

    from talkctl import metrics
    from talkctl.stages.head_model import composite, load_head, load_torso
    from talkctl.stages.landmark_source import resolve_landmarks
    from talkctl.stages.training import FrameStore, split_frames

    head, torso = load_head(run.path), load_torso(run.path)
    res = int(head.attrs["resolution"])
    K = head.attrs["K"]
    with h5py.File(run.path / "audio.h5") as a:
        feats = a["features"][()]
    with h5py.File(run.path / "track.h5") as tr:
        w2c, blink = tr["world_to_cam"][()], tr["blink"][()]
    T = len(w2c)
    _, held = split_frames(T)
    if drive == "audio":
        head.set_audio(feats)
    else:
        head.set_landmarks(resolve_landmarks(run, drive, audio_features=feats[:T]).landmarks)
    out = {"psnr": [], "ssim": [], "psnr_head": []}
    with h5py.File(run.path / "frames.h5") as fr, h5py.File(run.path / "parse.h5") as pa, torch.no_grad():
        frames, labels = FrameStore(fr["frames"], res), FrameStore(pa["labels"], res, "labels")
        for i in held:
            h = head.render([i], w2c[[i]], K, res, blink=blink[[i]])
            t = torso.render(w2c[[i]], K, res, head_rgb=h.rgb, head_alpha=h.alpha)
            img = composite(torso.attrs["background"], t, h)[0].numpy()
            real = frames.get([i])[0].numpy()
            m = labels.get([i])[0, ..., 1].numpy()
            out["psnr"].append(metrics.psnr(img, real))
            out["ssim"].append(metrics.ssim(img, real))
            out["psnr_head"].append(metrics.psnr(img, real, m))
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}


def evaluate(run) -> dict | None:
    try:
        from talkctl.stages import eval as emod
    except ImportError:
        return None
    cfg = {**emod.DEFAULTS, "lpips": False}
    return emod.evaluate(run, cfg=cfg, device="cpu")


def main(argv=None) -> int:
    import torch

    from talkctl.rundir import RunDir

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--work", type=Path, default=Path("/tmp/talkctl_compare"))
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override for one stage, e.g. train-deform.iterations=1500")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    info = machine()
    work = args.work
    base = RunDir(work / "base")
    res = {"resolution": args.resolution}
    per_stage: dict[str, dict] = {}
    for item in args.set:
        key, value = item.split("=", 1)
        st, k = key.split(".", 1)
        per_stage.setdefault(st, {})[k] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    times = {}
    if not args.eval_only:
        from talkctl.synthetic import make_subject

        if not (base.path / "static.h5").exists():
            shutil.rmtree(work, ignore_errors=True)
            subj = make_subject(work / "subject", seconds=args.seconds, size=256, seed=0)
            base = RunDir(work / "base")
            from talkctl.cli import main as cli

            assert cli(["extract-audio", str(subj.video_path), "--run", str(base.path), "--preset", args.preset,
                        "--device", "cpu", "-q"]) == 0
            for name in ("track", "parse"):
                stage(name, base, args.preset, {}, times)
            stage("init-static", base, args.preset, {**res, **per_stage.get("init-static", {})}, times)
            (base.path / "stage_times.json").write_text(json.dumps(times))
        for method, steps in METHODS.items():
            dest = work / method
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(base.path, dest)
            rd = RunDir(dest)
            mt, figs = {}, {}
            for name, over in steps:
                extra = {} if name == "train-a2l" else res
                stage(name, rd, args.preset, {**over, **extra, **per_stage.get(name, {})}, mt, figs)
            (dest / "stage_times.json").write_text(json.dumps({"seconds": {**times, **mt}, "figures": figs, "sets": args.set}))
    rows = []
    for method in METHODS:
        rd = RunDir(work / method, create=False)
        st = json.loads((rd.path / "stage_times.json").read_text())
        shared = json.loads((work / "base" / "stage_times.json").read_text()) if (work / "base" / "stage_times.json").exists() else {}
        row = {"method": method, "stage_seconds": {**shared, **st["seconds"]}, "training_figures": st["figures"],
               "model": model_size(rd)}
        drives = ("audio",) if method == "gstalker" else ("a2l", "track")
        row["heldout"] = {d: heldout(rd, d) for d in drives}
        ev = evaluate(rd)
        if ev is not None:
            row["eval"] = ev
        rows.append(row)
    sets = json.loads((work / "gstalker" / "stage_times.json").read_text()).get("sets", args.set)
    out = {"benchmark": "gstalker vs two-stage on the synthetic subject", "preset": args.preset, "sets": sets,
           "resolution": args.resolution, "seconds": args.seconds, "machine": info, "rows": rows}
    write_json("compare_methods.json", out)
    for r in rows:
        print(r["method"], json.dumps({k: v for k, v in r.items() if k != "eval"}))
        if "eval" in r:
            print("  eval:", json.dumps(r["eval"], default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
