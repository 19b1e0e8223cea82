"""Benchmark: train-deform's audio path (features -> mouth state) on its own, no field, no render.

In mouth-state mode the audio path is trained by the landmark read-out alone, so it can be trained
in a minute from a run's audio.h5 and track.h5 with train-deform's own pieces (landmark_readout,
AudioCondition, FeatureAugment, speed copies, opening axis, per-utterance gain, speech gate). Its
predicted states are turned into the lip gap they imply (canonical landmarks) and compared, frame
by frame, with the real mouth opening (track.h5 mouth_open): on the subject's held-out frames, and
driven by the first 20 s of every other clip's audio against that clip's real speaker. The variant
key "pool" (clip names) adds other speakers' audio and tracked mouths to the subject's training
(leave-one-speaker-out: a pooled clip is not a driver), to measure what more voices would give. Correlation
only (the render changes the amplitude: bench/render_gain.py, eval --drive-video). A fast screen for
audio-path settings; confirm a winner with a full run (bench/lipsync.py).

    OMP_WAIT_POLICY=PASSIVE python bench/audio_path_offline.py --clips german_20s=/w/base_german,\\
        french_50s=/w/base_french,grid_s1_180s=/w/base_grid --subjects german_20s,french_50s \\
        --variants '[{"name": "main"}, {"name": "x", "audio_noise": 0.4},
                     {"name": "t10", "features": {"phone_temperature": 10}}]' --seeds 2 --out offline.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from common import load_avg, machine, print_table, write_json

DRIVE_SECONDS = 20.0


def _clip_data(run: Path) -> dict:
    from talkctl.media.audio import load_waveform

    video = Path(json.loads((run / "run.json").read_text())["video"]["path"])
    with h5py.File(run / "track.h5") as f:
        mouth = np.asarray(f["mouth_open"][()], np.float64)
    return {"run": run, "wav": load_waveform(video), "mouth": mouth}


def _lags(x, y, max_lag: int = 2) -> list[float]:
    from talkctl.metrics.lipsync import pearson

    out = []
    for lag in range(-max_lag, max_lag + 1):  # x[t + lag] against y[t]
        a, b = (x[lag:], y[:len(y) - lag]) if lag >= 0 else (x[:lag], y[-lag:])
        out.append(round(pearson(a, b), 4))
    return out


def cached(cache: dict, key, make):
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _remade(recipe, overrides: dict, wav: np.ndarray):
    """(recipe, windows) of the training audio with extract-audio settings `overrides`."""
    from talkctl.audio.recipe import FeatureRecipe
    from talkctl.timebase import n_video_frames

    r = FeatureRecipe.from_config({**recipe.config, **overrides})
    raw = r.raw(wav)
    r.fit(raw, wav)
    return r, r.windows(raw, n_video_frames(len(wav)), wav)[1]


def _pool_source(clip: dict, features, basis, idx: np.ndarray, cfg: dict):
    """(windows, speech, states, usable frames) of another clip (_clip_data) for the "pool"
    variant key: `features`, its audio made with the subject's recipe; its tracked mouth/jaw
    offsets from its own neutral face (canonical landmarks share one scale: eye corners 0.65
    apart) in the subject's mouth basis."""
    from talkctl.audio.recipe import speech_activity
    from talkctl.face.canonical import neutral_shape, read_canonical_landmarks
    from talkctl.rundir import RunDir

    lm = read_canonical_landmarks(RunDir(clip["run"], create=False), method=cfg["landmark_alignment"], use="pool")
    wav, feats = clip["wav"], features
    T = min(len(feats), len(lm.points))
    offsets = (lm.points[:T, idx] - neutral_shape(lm.points[:T], lm.valid[:T])[idx]).reshape(T, -1)
    return np.asarray(feats[:T]), speech_activity(wav, T), basis.project(offsets), np.flatnonzero(lm.valid[:T])


def fit_audio_path(run: Path, variant: dict, seed: int, cache: dict, pool: tuple[dict, ...] = ()):
    """Train the audio path as train-deform does; returns predict(features, speech) -> implied lip gap (T,).
    pool: other clips (_clip_data) whose audio and tracked mouths join the training (variant key
    "pool": half the steps' batches come from them, and the steps are doubled)."""
    from talkctl import artifacts
    from talkctl.audio.perturb import speed_perturbed_windows
    from talkctl.audio.recipe import FeatureRecipe, speech_activity
    from talkctl.face.canonical import mouth_opening, moving_indices, neutral_shape, read_canonical_landmarks
    from talkctl.gs.training import validation_split
    from talkctl.head.conditions import AudioCondition, FeatureAugment
    from talkctl.head.mouth_readout import landmark_readout
    from talkctl.head.mouth_state import fit_mouth_basis, speech_spread, utterance_gain
    from talkctl.rundir import RunDir
    from talkctl.stages import train_deform as td
    from talkctl.timebase import split_frames

    cfg = {**td.DEFAULTS, **{k: v for k, v in variant.items() if k in td.DEFAULTS}}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rd = RunDir(run, create=False)
    from talkctl.audio.av_offset import aligned_clip_audio

    mouth_track = artifacts.read_track(rd, ("mouth_open", "valid"))
    with h5py.File(run / "audio.h5") as a:  # realigned to the picture as train-deform does
        audio = aligned_clip_audio(a, mouth_track.mouth_open, mouth_track.valid, cfg.get("av_offset"),
                                   logging.getLogger("offline"))
    feats, wav = audio.features, audio.wav
    recipe = FeatureRecipe.from_artifact(rd)
    feat_key = json.dumps(variant.get("features") or {}, sort_keys=True)
    if variant.get("features"):  # extract-audio settings of this variant: the subject's features remade
        recipe, feats = cached(cache, (str(run), feat_key), lambda: _remade(recipe, variant["features"], wav))
    lm = read_canonical_landmarks(rd, method=cfg["landmark_alignment"], use="offline audio path")
    T = min(len(feats), len(lm.points))
    feats, train_idx = feats[:T], split_frames(T)[0]
    speech = speech_activity(wav, T)
    scene = SimpleNamespace(T=T, train_idx=train_idx, speech=speech, features=feats)
    ctx = SimpleNamespace(run=rd, log=logging.getLogger("offline"), device="cpu",
                          read=lambda name: artifacts.open_for_read(rd, name))
    readout, mouth = landmark_readout(ctx, cfg, scene, int(cfg["code_dim"]))
    cond = AudioCondition(feats.shape[2], feats.shape[1], int(cfg["code_dim"]), int(cfg["attn_window"]),
                          mouth_dim=mouth["mouth_dim"], ensemble=int(cfg["audio_ensemble"]))
    mean, std = AudioCondition.stats(feats[train_idx])
    cond.mean.copy_(torch.as_tensor(mean))
    cond.std.copy_(torch.as_tensor(std))
    cond.closed.copy_(torch.as_tensor(mouth["closed"]))
    factors = [float(x) for x in cfg["audio_speed"] or []]
    copies = [feats] + [cached(cache, (str(run), f, feat_key, audio.shift), lambda f=f: speed_perturbed_windows(recipe, wav, T, f))
                        for f in factors]
    # the implied lip gap of a state: back to landmark offsets, onto the neutral face
    idx = moving_indices(lm.n, ("mouth", "jaw"), rigid=lm.rigid)
    neutral = neutral_shape(lm.points[:T], lm.valid[:T], train_idx)
    offsets = (lm.points[:T, idx] - neutral[idx]).reshape(T, -1)
    basis = fit_mouth_basis(offsets[train_idx], int(cfg["audio_mouth_dim"]))
    pooled = [_pool_source(p, cached(cache, (str(run), str(p["run"]), "pool", feat_key), lambda p=p: recipe(p["wav"])),
                           basis, idx, cfg) for p in pool]
    cond.set_source(features=np.concatenate(copies + [p[0] for p in pooled]),
                    speech=np.concatenate([np.tile(speech, len(copies))] + [p[1] for p in pooled]))
    cond.augment = FeatureAugment(float(cfg["audio_noise"]), float(cfg["audio_dropout"]))
    readout.targets = torch.cat([readout.targets[:T].repeat(len(copies), 1)]
                                + [torch.as_tensor(p[2], dtype=torch.float32) for p in pooled])
    starts = np.cumsum([T * len(copies)] + [len(p[0]) for p in pooled])[:-1]
    pool_frames = np.concatenate([s + p[3] for s, p in zip(starts, pooled)]) if pooled else None
    fit = validation_split(train_idx, float(cfg["val_fraction"]))[0]
    n = int(round(float(cfg["audio_val_fraction"]) * len(fit)))
    fit = fit[:-n] if n >= 25 and len(fit) - n >= 25 else fit
    opt = torch.optim.AdamW(cond.parameters(), lr=float(cfg["lr_mlp"]), weight_decay=float(cfg["audio_weight_decay"]))
    for _ in range(int(cfg["audio_steps"]) * (2 if pooled else 1)):
        b = int(cfg["audio_landmark_batch"])
        if pooled and rng.random() < 0.5:
            frames = rng.choice(pool_frames, b)
        else:
            frames = rng.choice(fit, b) + T * rng.integers(len(copies), size=b)
        loss = readout.loss(cond, frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cond.eval()
    states = readout.targets[:T].numpy()
    axis = mouth["axis"]
    target = speech_spread((states[train_idx] @ axis)[:, None], speech[train_idx])

    def implied(st):
        pts = np.repeat(neutral[None], len(st), 0)
        pts[:, idx] += ((st * basis.scale) @ basis.basis + basis.mean).reshape(len(st), -1, 3)
        return mouth_opening(pts, lm.n)

    def predict(features, sp):
        cond.set_source(features=features, speech=None)
        cond.gain.fill_(1.0)
        with torch.no_grad():
            raw = torch.cat([cond.encode(torch.arange(i, min(i + 512, len(features))))
                             for i in range(0, len(features), 512)]).numpy()
        g = utterance_gain((raw @ axis)[:, None], sp, target) or 1.0
        closed = cond.closed.numpy()
        return implied(closed + sp[:, None] * (g * raw - closed))  # as AudioCondition gates it

    return predict, recipe, feats, speech


def run_variant(name: str, variant: dict, seeds: int, clips: dict, subjects: list[str], cache: dict) -> list[dict]:
    from talkctl.audio.recipe import speech_activity
    from talkctl.metrics.lipsync import pearson
    from talkctl.timebase import SAMPLE_RATE, split_frames

    rows = []
    for subject in subjects:
        sub = clips[subject]
        per = {}
        pool = [c for c in variant.get("pool", []) if c != subject]
        for seed in range(seeds):
            predict, recipe, feats, speech = fit_audio_path(sub["run"], variant, seed, cache,
                                                            tuple(clips[c] for c in pool))
            held = split_frames(len(feats))[1]
            pred = predict(feats, speech)
            per.setdefault("(held-out, self)", []).append((pred[held], sub["mouth"][held]))
            for other, od in clips.items():
                if other == subject or other in pool:  # a pooled clip's speaker is no longer unseen
                    continue
                w = od["wav"][: int(DRIVE_SECONDS * SAMPLE_RATE)]
                fe = cached(cache, (str(sub["run"]), other, json.dumps(variant.get("features") or {}, sort_keys=True)),
                            lambda: recipe(w))
                p = predict(fe, speech_activity(w, len(fe)))
                n = min(len(p), len(od["mouth"]))
                per.setdefault(other, []).append((p[:n], od["mouth"][:n]))
        for driver, pairs in per.items():
            ok = [(p[np.isfinite(t)], t[np.isfinite(t)]) for p, t in pairs]
            rows.append({"variant": name, "subject": subject, "driver": driver,
                         "corr": round(float(np.mean([pearson(p, t) for p, t in ok])), 4),
                         "corr_by_lag_-2..2": np.mean([_lags(p, t) for p, t in ok], 0).round(4).tolist(),
                         "seeds": seeds})
        print(json.dumps(rows[-len(per):]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", required=True, help="NAME=RUN,... runs with audio.h5 and track.h5, one per clip")
    ap.add_argument("--subjects", required=True, help="clip names whose audio path is trained, comma-separated")
    ap.add_argument("--variants", required=True, help='JSON list of {"name": ..., train-deform keys ..., '
                                                      '"features": {extract-audio keys}}')
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", default="audio_path_offline.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = load_avg()
    clips = {k: _clip_data(Path(v)) for k, v in (item.split("=", 1) for item in args.clips.split(","))}
    rows, cache = [], {}
    for v in json.loads(args.variants):
        v = dict(v)
        rows += run_variant(v.pop("name"), v, args.seeds, clips, args.subjects.split(","), cache)
    summary = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        cross = [r["corr"] for r in rows if r["variant"] == name and not r["driver"].startswith("(")]
        held = [r["corr"] for r in rows if r["variant"] == name and r["driver"].startswith("(")]
        summary.append({"variant": name, "cross_median": round(statistics.median(cross), 3),
                        "cross_mean": round(statistics.mean(cross), 3), "held_mean": round(statistics.mean(held), 3)})
    print_table(rows, [(k, k) for k in ("variant", "subject", "driver", "corr", "corr_by_lag_-2..2")])
    print()
    print_table(summary, [(k, k) for k in summary[0]])
    write_json(args.out, {"benchmark": "train-deform's audio path alone: implied lip gap vs real mouth opening",
                          "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": load_avg(),
                                      "threads": 1, "cpu_count": os.cpu_count()},
                          "drive_seconds": DRIVE_SECONDS, "rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
