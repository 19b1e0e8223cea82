"""Benchmark: `talkctl train-a2l` on a real clip, formants on and off (the ablation switch).

Runs extract-audio and track once (skipped when the run directory already has them), then
train-a2l at the chosen preset for each formants setting and seed, and reports the held-out
figures (last 1/11 of the clip): mouth landmark distance / inter-ocular distance (and the
predict-the-neutral-face baseline), mouth-opening correlation, jitter, and training time.
Table on stdout, bench/results/a2l_cpu.json (medians over seeds per setting).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_a2l.py [--clip french_50s] [--run DIR] [--preset fast] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, print_table, write_json  # noqa: E402

SHARED = Path(os.environ.get("TALKCTL_SHARED", ROOT / ".." / "shared"))
FIGURES = ("mouth_lmd", "mouth_lmd_baseline", "mouth_open_corr", "all_lmd", "jitter", "jitter_truth", "seconds")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="french_50s")
    ap.add_argument("--run", type=Path, default=None, help="run directory (reused if it has audio.h5/track.h5)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()

    import torch

    from talkctl.pipeline import run_stage
    from talkctl.rundir import RunDir

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    video = SHARED / "data" / "video" / f"{args.clip}.mp4"
    if not video.exists():
        raise SystemExit(f"needs {video} (../shared); set TALKCTL_SHARED")
    run = RunDir(args.run or Path(tempfile.mkdtemp(prefix="a2l_bench_")) / args.clip)
    if run.video() is None:
        run.set_video(video)
    run_stage("extract-audio", run, device="cpu")
    run_stage("track", run, device="cpu")
    rows, per_setting = [], {}
    for formants in (True, False):
        for seed in args.seeds:
            s = run_stage("train-a2l", run, preset=args.preset, overrides={"formants": formants, "seed": seed},
                          device="cpu", force=True)
            row = {"formants": formants, "seed": seed, **{k: s.get(k) for k in FIGURES}}
            row["input_dim"] = s["input_dim"]
            rows.append(row)
            per_setting.setdefault(formants, []).append(row)
            print(row, flush=True)
    print_table(rows, [("formants", "formants"), ("seed", "seed"), ("input_dim", "D"), ("mouth_lmd", "mouth LMD"),
                       ("mouth_lmd_baseline", "neutral LMD"), ("mouth_open_corr", "open corr"),
                       ("jitter", "jitter"), ("seconds", "s")])
    summary = {("formants_on" if f else "formants_off"): {k: round(statistics.median(r[k] for r in rs), 4)
                                                         for k in FIGURES} for f, rs in per_setting.items()}
    path = write_json("a2l_cpu.json", {
        "clip": args.clip, "preset": args.preset, "seeds": args.seeds, "median": summary, "runs": rows,
        "units": "LMD and jitter: / inter-ocular distance in canonical head space; held-out = last 1/11 of the clip",
        "machine": machine()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
