"""Benchmark: the two methods on one subject, side by side, through the CLI.

  gstalker  train-deform --condition audio  + train-torso --mode gaussian   (audio-driven GSTalker)
  two-stage train-a2l + train-deform --condition landmarks + train-torso --mode image
            (decoupled two-stage method: audio -> landmarks -> Gaussians; StyleUNet torso)

Both start from the same extract-audio / track / parse / init-static outputs (one base run,
copied), so the runs differ only in method. Every stage is its own `talkctl` process, so each
artifact's peak_rss_mb is that stage's own. Figures come from one `talkctl eval GST TWO --audio A`
(held-out PSNR / SSIM, mouth LMD and opening correlation, cross-driven sync on unseen audio,
training time per stage, training peak memory, model size); the two-stage run is also
evaluated on its tracked held-out landmarks (`--set landmarks=track`): the landmark field's
upper bound, with no audio model in the loop. Single training runs, not medians.
Interrupted? Run it again: stages that are up to date are skipped.

    OMP_WAIT_POLICY=PASSIVE python bench/compare_methods.py                  # synthetic subject, tiny
    OMP_WAIT_POLICY=PASSIVE python bench/compare_methods.py --video ../shared/data/video/french_50s.mp4 \\
        --audio ../shared/data/audio/sun_22s.wav --preset fast --work /tmp/cmp_french --out compare_methods_french.json
Prints two markdown tables and writes bench/results/<out>.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import load_avg, machine, write_json

METHODS = {
    "gstalker": [("train-deform", ["condition=audio"]), ("train-torso", ["mode=gaussian"])],
    "two-stage": [("train-a2l", []), ("train-deform", ["condition=landmarks"]), ("train-torso", ["mode=image"])],
}
BASE_STAGES = ("track", "parse", "init-static")


def talkctl(*args: str, capture: bool = False) -> str:
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    cmd = [sys.executable, "-m", "talkctl", *args]
    print("$ talkctl", " ".join(args), flush=True)
    res = subprocess.run(cmd, env=env, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return res.stdout or ""


def stage_sets(sets: list[str], stage: str) -> list[str]:
    """--set STAGE.KEY=VALUE items for one stage, as talkctl's `--set KEY=VALUE` arguments."""
    out = []
    for item in sets:
        st, kv = item.split(".", 1)
        if st == stage:
            out += ["--set", kv]
    return out


def train(run: Path, stage: str, preset: str, extra: list[str], sets: list[str]) -> None:
    args = [stage, "--run", str(run), "--preset", preset, "--device", "cpu", "-q"]
    for kv in extra:
        args += ["--set", kv]
    talkctl(*args, *stage_sets(sets, stage))


def synthetic_inputs(work: Path, seconds: float) -> tuple[Path, Path]:
    from talkctl.synthetic.audio import make_audio
    from talkctl.synthetic.clip import make_subject

    subj = make_subject(work / "subject", seconds=seconds, size=256, seed=0)
    return subj.video_path, make_audio(6.0, seed=7).write_wav(work / "subject" / "unseen_voice.wav")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, help="the subject's clip (default: a generated synthetic subject)")
    ap.add_argument("--audio", type=Path, help="unseen audio for the cross-driven sync figure")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic subject")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--work", type=Path, default=Path("/tmp/talkctl_compare"))
    ap.add_argument("--out", default="compare_methods.json", help="file name under bench/results/")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override for one stage, e.g. train-deform.iterations=1500")
    args = ap.parse_args(argv)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    load_before = load_avg()
    video, audio = args.video, args.audio
    if video is None:
        video, synth_audio = synthetic_inputs(work, args.seconds)
        audio = audio or synth_audio
    base = work / "base"
    talkctl("extract-audio", str(video), "--run", str(base), "--preset", args.preset, "-q")
    for st in BASE_STAGES:
        train(base, st, args.preset, [], args.set)
    runs = {}
    for method, steps in METHODS.items():
        dest = runs[method] = work / method
        if not dest.exists():  # a rerun keeps a method's finished stages (the CLI skips them)
            shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.lock", "eval.json", "report.html"))
        for st, extra in steps:
            train(dest, st, args.preset, extra, args.set)
    ev = ["eval", "--device", "cpu", "--json", "-q"] + (["--audio", str(audio)] if audio else [])
    # the upper bound has no audio model, so no cross-driven figure: its sync is the held-out render's
    upper = json.loads(talkctl(*ev[:5], str(runs["two-stage"]), "--set", "landmarks=track", capture=True))
    both = json.loads(talkctl(*ev, str(runs["gstalker"]), str(runs["two-stage"]), capture=True))
    rows = both["table"]
    rows.append({**upper["figures"], "run": "two-stage, tracked landmarks (upper bound; sync: held-out)"})
    from talkctl.report.tables import COMPARE_KEYS, STAGE_KEYS, STAGE_MEMORY_KEYS, comparison_markdown

    keys = COMPARE_KEYS + ("model_psnr", "model_ssim", "head_psnr", "sync_corr_real")
    out = {"benchmark": "gstalker vs two-stage, one subject", "video": str(video), "audio": str(audio),
           "preset": args.preset, "sets": args.set, "machine": {**machine(), "load_avg_before": load_before},
           "rows": rows}
    write_json(args.out, out)
    print(comparison_markdown(rows, keys))
    print(comparison_markdown(rows, STAGE_KEYS))
    print(comparison_markdown(rows, STAGE_MEMORY_KEYS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
