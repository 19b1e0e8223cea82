"""Benchmark: audio-path variants on a trained audio head, without retraining the field.

In mouth-state mode the audio path (features -> mouth state) of train-deform is trained by the
landmark read-out alone (the field sees its output detached, or the tracked state), so a variant of
it can be refitted on its own in a minute and put in front of a field trained once. This script
does that for each variant on a light copy of a trained run (big artifacts linked), with train-deform's
own recipe (frames, optimiser, steps, augmentation, gain calibration), then drives the copy with
other videos (`talkctl eval --drive-video`). It approximates a full train-deform with the variant:
in that run the field's non-teacher steps would have seen the variant's states, here they saw the
original ones. Confirm a winner with a full run (bench/lipsync.py).

A variant is JSON: {"name": ..., "extractor": X (re-extract the copy's audio), "ensemble": E,
"amplitude": "utterance" | "calibrated", "seed": S, train-deform audio_* keys ...}.

    OMP_WAIT_POLICY=PASSIVE python bench/audio_path_refit.py --runs /w/main_german,/w/main_french \\
        --drives /w/drives --variants '[{"name": "main"}, {"name": "ens3", "ensemble": 3}]' --out refit.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from common import load_avg, machine, print_table, write_json
from compare_methods import talkctl

COPIED = ("audio.h5", "deform.h5", "torso.h5", "run.json", "history.jsonl")  # written here; the rest is linked
SKIPPED = (".lock", "eval.json", "report.html", "checkpoints", "logs", "tb")


def light_copy(run: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in run.iterdir():
        if p.name in SKIPPED or (dest / p.name).exists():
            continue
        if p.name in COPIED:
            shutil.copy2(p, dest / p.name)
        else:
            (dest / p.name).symlink_to(p.resolve())
    return dest


def refit(dest: Path, variant: dict) -> dict:
    """Train the variant's audio path on dest's features and tracked mouth; rewrite dest/deform.h5."""
    from talkctl import artifacts, h5files
    from talkctl.audio.recipe import speech_activity
    from talkctl.gs.training import validation_split
    from talkctl.head.conditions import FeatureAugment
    from talkctl.head.field import build_condition, save_state_dict
    from talkctl.head.mouth_state import spread_gain
    from talkctl.rundir import RunDir
    from talkctl.stages import train_deform as td
    from talkctl.timebase import split_frames

    cfg = {**td.DEFAULTS, **{k: v for k, v in variant.items() if k in td.DEFAULTS}}
    if "speed" in variant:
        cfg["audio_speed"] = list(variant["speed"])
    if "ensemble" in variant:
        cfg["audio_ensemble"] = int(variant["ensemble"])
    if "amplitude" in variant:
        cfg["audio_amplitude"] = variant["amplitude"]
    seed = int(variant.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    run = RunDir(dest, create=False)
    from talkctl.audio.av_offset import aligned_clip_audio

    mouth_track = artifacts.read_track(run, ("mouth_open", "valid"))
    with artifacts.open_for_read(run, "audio") as a:  # realigned to the picture as train-deform does
        audio = aligned_clip_audio(a, mouth_track.mouth_open, mouth_track.valid, cfg.get("av_offset"),
                                   logging.getLogger("refit"))
        audio_fp = a.attrs["fingerprint"]
    feats = audio.features
    speech = speech_activity(audio.wav, len(feats))
    T = min(len(feats), artifacts.read_track(run, fields=()).n_frames)
    train_idx = split_frames(T)[0]
    train_idx = train_idx[train_idx < len(feats)]
    scene = SimpleNamespace(T=T, train_idx=train_idx, speech=speech, features=feats, audio=audio)
    ctx = SimpleNamespace(run=run, log=logging.getLogger("refit"), device="cpu",
                          read=lambda name: artifacts.open_for_read(run, name))  # what train-deform's ctx gives
    readout, mouth = td.landmark_readout(ctx, cfg, scene, int(cfg["code_dim"]))
    mean, std = td.AudioCondition.stats(feats[train_idx])
    spec = {"name": "audio", "feature_dim": int(feats.shape[2]), "window": int(feats.shape[1]),
            "code_dim": int(cfg["code_dim"]), "attn_window": int(cfg["attn_window"]),
            "mouth_dim": mouth["mouth_dim"], "ensemble": int(cfg["audio_ensemble"])}
    cond = build_condition(spec)
    cond.mean.copy_(torch.as_tensor(mean))
    cond.std.copy_(torch.as_tensor(std))
    cond.closed.copy_(torch.as_tensor(mouth["closed"]))
    cond.set_source(features=feats, speech=speech)
    cond.augment = FeatureAugment(float(cfg["audio_noise"]), float(cfg["audio_dropout"]))
    copies, n_copy = td.speed_perturbed_source(ctx, cfg, cond, readout, scene)
    fit = validation_split(train_idx, float(cfg["val_fraction"]))[0]
    n = int(round(float(cfg["audio_val_fraction"]) * len(fit)))
    fit, calib = (fit[:-n], fit[-n:]) if n >= 25 and len(fit) - n >= 25 else (fit, fit[:0])
    opt = torch.optim.AdamW(cond.parameters(), lr=float(cfg["lr_mlp"]), weight_decay=float(cfg["audio_weight_decay"]))
    for _ in range(int(cfg["audio_steps"])):
        b = int(cfg["audio_landmark_batch"])
        frames = rng.choice(fit, b) + n_copy * rng.integers(copies, size=b)
        loss = float(cfg["audio_landmark_loss"]) * readout.loss(cond, frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cond.eval()
    cond.set_source(features=feats, speech=speech)
    gain = 1.0
    if len(calib):
        with torch.no_grad():
            t = torch.as_tensor(calib)
            gain = spread_gain(cond.encode(t).numpy(), readout.targets[t].numpy(), speech[calib], td.MAX_GAIN)
        cond.gain.fill_(gain)
    amp = td.mouth_amplitude(cfg, readout, scene, mouth["axis"])
    path = artifacts.ARTIFACTS["deform"].path(run)
    with h5py.File(path, "r+") as f:
        for k in ("condition", "audio_mean", "audio_std"):
            if k in f:
                del f[k]
        save_state_dict(f.create_group("condition"), cond)
        f.create_dataset("audio_mean", data=mean)
        f.create_dataset("audio_std", data=std)
        f.attrs["condition_spec"] = json.dumps(cond.spec())
        f.attrs["audio_gain"] = gain
        f.attrs["audio_extractor"] = str(variant.get("extractor", f.attrs.get("audio_extractor", "")))
        if "mouth_spread" in f.attrs:
            del f.attrs["mouth_spread"]
        f.attrs.update(amp)
        h5files.stamp(f, path)
    for name in ("deform", "torso"):  # both record the features they were made with: the copy's now
        path = artifacts.ARTIFACTS[name].path(run)
        with h5py.File(path, "r+") as f:
            inputs = json.loads(f.attrs["inputs"])
            if "audio" in inputs:
                inputs["audio"] = audio_fp
                f.attrs["inputs"] = json.dumps(inputs)
                h5files.stamp(f, path)
    return {"audio_gain": gain, **amp}


def evaluate(dest: Path, drives: list[Path]) -> dict:
    args = ["eval", str(dest), "--device", "cpu", "--json", "-q", "--set", "report_frames=1", "--set", "lpips=false"]
    for d in drives:
        args += ["--drive-video", str(d)]
    return json.loads(talkctl(*args, capture=True))


def rows_of(result: dict, subject: str, variant: str) -> list[dict]:
    fig = result["figures"]
    rows = [{"subject": subject, "variant": variant, "driver": "(held-out, self)", "corr": fig.get("mouth_corr"),
             "amp": fig.get("mouth_amp"), "head_psnr": fig.get("head_psnr")}]
    for d in result.get("drive_videos", []):
        rows.append({"subject": subject, "variant": variant, "driver": Path(d["video"]).stem, "corr": d.get("corr"),
                     "best_lag": d.get("best_lag"), "best_corr": d.get("best_corr"), "amp": d.get("amp")})
    return rows


def _median(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def medians(rows: list[dict]) -> list[dict]:
    out = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        cross = [r for r in rows if r["variant"] == v and not r["driver"].startswith("(")]
        held = [r for r in rows if r["variant"] == v and r["driver"].startswith("(")]
        out.append({"variant": v, "pairs": len(cross), "cross_corr": _median(cross, "corr"),
                    "cross_best_lag": _median(cross, "best_lag"), "cross_amp": _median(cross, "amp"),
                    "held_corr": _median(held, "corr"), "held_amp": _median(held, "amp"),
                    "held_head_psnr": _median(held, "head_psnr")})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", required=True, help="trained audio-head runs (mouth state), comma-separated")
    ap.add_argument("--drives", type=Path, required=True, help="folder of driving clips <clip>.mp4")
    ap.add_argument("--variants", required=True, help="JSON list of variants")
    ap.add_argument("--work", type=Path, default=Path("/tmp/talkctl_refit"))
    ap.add_argument("--out", default="audio_path_refit.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    load_before = load_avg()
    rows, info = [], []
    for run in (Path(r) for r in args.runs.split(",")):
        subject = Path(json.loads((run / "run.json").read_text())["video"]["path"]).stem
        drives = [p for p in sorted(args.drives.glob("*.mp4")) if p.stem != subject]  # every other clip
        for variant in json.loads(args.variants):
            dest = light_copy(run, args.work / f"{subject}__{variant['name']}")
            if variant.get("extractor"):
                talkctl("extract-audio", "--run", str(dest), "--preset", "fast", "--force", "-q", "--set",
                        f"extractor={variant['extractor']}")
            fitted = refit(dest, variant)
            info.append({"subject": subject, **variant, **fitted})
            rows += rows_of(evaluate(dest, drives), subject, variant["name"])
            print(json.dumps(rows[-len(drives) - 1:]), flush=True)
    summary = medians(rows)
    cols = [(k, k) for k in ("subject", "variant", "driver", "corr", "best_lag", "best_corr", "amp", "head_psnr")]
    print_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows], cols)
    print()
    print_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in summary],
                [(k, k) for k in summary[0]])
    write_json(args.out, {"benchmark": "audio-path variants refitted on trained fields (eval --drive-video)",
                          "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": load_avg()},
                          "variants": info, "rows": rows, "medians": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
