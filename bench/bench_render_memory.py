"""Peak memory of `talkctl render` against the length of the driving audio (issue 19: it must
not grow with it; target <= 500 MB for 10 minutes at 256^2).

A tiny trained run (the synthetic subject, every stage at the tiny preset with few
iterations; or --run RUN) renders synthetic speech of each length through the real entry
point, `python -m talkctl render`, in a fresh process; the peak is the largest resident set
of that process and its children (getrusage of a wrapper), i.e. the whole render: imports,
decoding, features, the frame loop and encoding. --tree runs another checkout's talkctl
(e.g. the main branch, for a before/after table).

    python bench/bench_render_memory.py [--minutes 1 4 10] [--size 256] [--run RUN] [--tree DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, describe, load_avg, machine, print_table, write_json

OVERRIDES = {  # as tests/fixtures/trained_run.py: small crop, few iterations
    "track": {"size": 64},
    "init-static": {"resolution": 48, "head_iterations": 60, "torso_iterations": 20, "val_every": 30},
    "train-deform": {"resolution": 48, "iterations": 40, "val_every": 20},
    "train-torso": {"resolution": 48, "iterations": 20, "val_every": 10},
}
WRAPPER = ("import json, resource, subprocess, sys, time\n"
           "t = time.time(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
           "print(json.dumps({'rc': p.returncode, 'err': p.stderr[-2000:], 'out': p.stdout, 'wall_s': time.time() - t,\n"
           "                  'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")


def build_run(base: Path) -> Path:
    from talkctl.pipeline import run_stage
    from talkctl.rundir import RunDir
    from talkctl.synthetic import make_subject

    subject = make_subject(base / "subject", seconds=3.6, size=128, seed=0)
    run = RunDir(base / "run")
    run.set_video(subject.video_path)
    for stage in ("extract-audio", "track", "parse", "init-static", "train-deform", "train-torso"):
        run_stage(stage, run, preset="tiny", device="cpu", overrides=OVERRIDES.get(stage, {}))
    return run.path


def render_peak(tree: Path, run: Path, audio: Path, size: int, out: Path) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(tree))
    cmd = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "talkctl", "render", "--run", str(run),
           "--audio", str(audio), "-o", str(out), "--size", str(size), "--device", "cpu", "--json", "-q"]
    res = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree).stdout)
    if res["rc"] != 0:
        raise SystemExit(f"render failed ({res['rc']}): {res['err']}")
    summary = json.loads(res["out"])
    return {"peak_mb": round(res["peak_mb"], 1), "wall_s": round(res["wall_s"], 1), "frames": summary["frames"],
            "stage_peak_mb": summary.get("peak_rss_mb")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 4, 10])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--run", type=Path, help="a trained run directory (default: build a tiny one)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the talkctl checkout to run (default: this one)")
    ap.add_argument("--out", default="render_memory_cpu.json")
    args = ap.parse_args()
    from talkctl.media.ffmpeg import write_wav
    from talkctl.synthetic import make_audio

    info = machine(tree=str(args.tree.absolute()))
    work = Path(tempfile.mkdtemp(prefix="bench-render-memory-"))
    run = args.run or build_run(work)
    rows = []
    for minutes in args.minutes:
        audio = work / f"voice_{minutes:g}min.wav"
        write_wav(audio, make_audio(minutes * 60.0, sample_rate=16000, seed=7).samples, 16000)
        t0 = time.time()
        r = render_peak(args.tree.absolute(), run, audio, args.size, work / "out.mp4")
        audio.unlink()
        rows.append({"minutes": minutes, **r})
        print(f"{minutes:g} min: peak {r['peak_mb']} MB ({time.time() - t0:.0f} s)", file=sys.stderr)
    print(f"render --size {args.size}, tree {args.tree}")
    print_table(rows, [("minutes", "audio min"), ("frames", "frames"), ("peak_mb", "peak RSS MB"),
                       ("stage_peak_mb", "stage peak MB"), ("wall_s", "wall s")])
    info["load_avg_after"] = load_avg()
    print(describe(info))
    write_json(args.out, {"machine": info, "size": args.size, "run": str(run), "rows": rows})


if __name__ == "__main__":
    main()
