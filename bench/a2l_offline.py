"""Benchmark: train-a2l settings screened without a field or a render.

For each variant and subject, train-a2l runs on a copy of the subject's run (audio.h5, track.h5),
then the model predicts landmarks for the first 20 s of every other clip's audio (gated by its
speech, as render does) and the predicted lip gap is correlated frame by frame with that clip's
real mouth opening (its track.h5 mouth_open). Also the held-out self figure train-a2l records
(mouth_open_corr, ungated). Correlation only: the render's own scale is bench/lipsync.py's.

    OMP_WAIT_POLICY=PASSIVE python bench/a2l_offline.py --clips german_20s=/w/german,french_50s=/w/french,\\
        grid_s1_180s=/w/grid --subjects german_20s,french_50s --work /tmp/a2l \\
        --variants '[{"name": "default"}, {"name": "d32", "d_model": 32, "layers": 1}]' --out a2l_offline.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import h5py
import numpy as np

from common import load_avg, machine, print_table, write_json

DRIVE_SECONDS = 20.0


def screen(name: str, sets: dict, subject: str, clips: dict, work: Path, preset: str) -> dict:
    from talkctl.audio.recipe import FeatureRecipe, speech_activity
    from talkctl.cli import main as cli
    from talkctl.face.canonical import mouth_opening
    from talkctl.head.a2l_predict import full_landmarks, load_predictor
    from talkctl.metrics.lipsync import pearson
    from talkctl.timebase import SAMPLE_RATE

    run = work / f"{name}_{subject}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for fn in ("run.json", "track.h5", "audio.h5"):
        shutil.copy(clips[subject]["run"] / fn, run / fn)
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={json.dumps(v)}")]
    if cli(["train-a2l", "--run", str(run), "--preset", preset, "-q", *args]) != 0:
        raise SystemExit(f"train-a2l failed on {run}")
    predictor, recipe = load_predictor(run), FeatureRecipe.from_artifact(run)
    with h5py.File(run / "a2l.h5") as f:
        row = {"variant": name, "subject": subject, "self": json.loads(f.attrs["metrics"])["mouth_open_corr"],
               "selected_step": int(f.attrs["selected_step"])}
    for other, clip in clips.items():
        if other == subject:
            continue
        wav = clip["wav"][: int(DRIVE_SECONDS * SAMPLE_RATE)]
        feats = recipe(wav)
        off = predictor.offsets(feats, speech_activity(wav, len(feats)))
        gap = mouth_opening(full_landmarks(predictor.neutral, predictor.indices, off), predictor.n_landmarks)
        n = min(len(gap), len(clip["mouth"]))
        ok = np.isfinite(clip["mouth"][:n])
        row[other] = pearson(gap[:n][ok], clip["mouth"][:n][ok])
    return row


def main(argv=None) -> int:
    from talkctl.media.audio import load_waveform

    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", required=True, help="NAME=RUN,... runs with audio.h5 and track.h5, one per clip")
    ap.add_argument("--subjects", required=True, help="clip names whose a2l model is trained, comma-separated")
    ap.add_argument("--variants", required=True, help='JSON list of {"name": ..., train-a2l keys ...}')
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--work", type=Path, default=Path("/tmp/talkctl_a2l_offline"))
    ap.add_argument("--out", default="a2l_offline.json")
    args = ap.parse_args(argv)
    load_before = load_avg()
    clips = {}
    for name, run in (item.split("=", 1) for item in args.clips.split(",")):
        run = Path(run)
        with h5py.File(run / "track.h5") as f:
            mouth = np.asarray(f["mouth_open"][()], np.float64)
        video = json.loads((run / "run.json").read_text())["video"]["path"]
        clips[name] = {"run": run, "mouth": mouth, "wav": load_waveform(video)}
    rows = []
    for v in json.loads(args.variants):
        v = dict(v)
        name = v.pop("name")
        for subject in args.subjects.split(","):
            rows.append(screen(name, v, subject, clips, args.work, args.preset))
            print(json.dumps(rows[-1]), flush=True)
    summary = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        cross = [r[c] for r in mine for c in clips if c in r]
        summary.append({"variant": name, "cross_median": round(statistics.median(cross), 3),
                        "self_mean": round(statistics.mean(r["self"] for r in mine), 3)})
    print_table(summary, [(k, k) for k in summary[0]])
    write_json(args.out, {"benchmark": "train-a2l alone: predicted lip gap vs real mouth opening (cross and self)",
                          "preset": args.preset, "drive_seconds": DRIVE_SECONDS,
                          "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": load_avg()},
                          "rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
