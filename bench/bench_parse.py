"""Benchmark: the parse stage end to end on CPU (target: >= 25 frames/s at 512x512).

For each shared clip (french_50s, german_20s, grid_s1_180s; skipped when ../shared is absent)
a run directory gets frames.h5 / track.h5 -- from the real `track` stage when it is built,
else from the test stand-in (tests/fixtures/fake_track.py: mediapipe face mesh, square crop) -- then
`parse --force --preview` runs in a fresh subprocess, which reports its wall time, CPU time and
peak RSS. The tracking itself is not timed. Prints a table and writes bench/results/parse_cpu.json.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_parse.py [--clips french german] [--frames 500]
        [--workdir /tmp/talkctl_bench_parse] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import ROOT, SHARED_HINT, machine, shared_file, write_json

CLIPS = {  # name -> (file, square crop for the stand-in tracker: x0, y0, side)
    "french": ("french_50s.mp4", None),
    "german": ("german_20s.mp4", None),
    "grid": ("grid_s1_180s.mp4", (36, 0, 288)),
}

# runs in a child process so its peak RSS is the parse stage's alone
CHILD = r"""
import json, resource, sys, time
from talkctl.pipeline import run_stage
from talkctl.rundir import RunDir
t0, c0 = time.time(), time.process_time()
s = run_stage("parse", RunDir(sys.argv[1]), force=True, overrides={"preview": True})
wall, cpu = time.time() - t0, time.process_time() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss, "summary": s}, default=str))
"""


def prepare(name: str, videos: Path, workdir: Path, frames: int | None) -> Path:
    from talkctl import artifacts
    from talkctl.pipeline import STAGE_BY_NAME, run_stage
    from talkctl.rundir import RunDir

    fname, crop = CLIPS[name]
    video = videos / fname
    run = RunDir(workdir / f"{name}-{frames or 'all'}")
    if artifacts.state(run, "track")[0] == "done" and artifacts.state(run, "frames")[0] == "done":
        return run.path
    if STAGE_BY_NAME["track"].built and not frames:
        run.set_video(video)
        run_stage("track", run, overrides={"size": 512})
    else:
        sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
        from fake_track import track_clip

        track_clip(run, video, frames, 512, crop)
    return run.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    ap.add_argument("--frames", type=int, default=None, help="only the first N frames of each clip")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/talkctl_bench_parse"))
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    videos = shared_file("data", "video")
    if videos is None:
        sys.exit(f"needs the shared clips, data/video in the shared data ({SHARED_HINT})")
    info = machine()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    rows = []
    for name in args.clips:
        run = prepare(name, videos, args.workdir, args.frames)
        runs = []
        for _ in range(args.repeat):
            load0 = os.getloadavg()[0]
            out = subprocess.run([sys.executable, "-c", CHILD, str(run)], capture_output=True, text=True, env=env, cwd=ROOT)
            if out.returncode != 0:
                sys.exit(f"parse failed on {name}:\n{out.stderr[-2000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["load_1m_before"], res["load_1m_after"] = load0, os.getloadavg()[0]
            runs.append(res)
        s = runs[0]["summary"]
        med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
        rows.append({
            "clip": name, "frames": s["frames"], "size": s["size"],
            "seconds": round(med("wall_s"), 2), "frames_per_s": round(s["frames"] / med("wall_s"), 1),
            "cpu_seconds": round(med("cpu_s"), 2), "cpu_frames_per_s": round(s["frames"] / med("cpu_s"), 1),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
            "load_1m": [round(r["load_1m_before"], 2) for r in runs] + [round(runs[-1]["load_1m_after"], 2)],
            "head/neck/torso/bg": [s["head_fraction"], s["neck_fraction"], s["torso_fraction"], s["background_fraction"]],
            "background_seen": s["background_seen"], "preview": s.get("preview"),
        })
    print(f"{'clip':8} {'frames':>6} {'wall s':>7} {'fps':>6} {'cpu s':>7} {'cpu fps':>8} {'RSS MB':>7}  load 1m")
    for r in rows:
        print(f"{r['clip']:8} {r['frames']:6d} {r['seconds']:7.1f} {r['frames_per_s']:6.1f} {r['cpu_seconds']:7.1f} "
              f"{r['cpu_frames_per_s']:8.1f} {r['peak_rss_mb']:7d}  {r['load_1m']}")
    write_json("parse_cpu.json", {
        "benchmark": "parse stage end to end (subprocess: imports, plate, labels, torso targets, preview)",
        "target": ">= 25 frames/s at 512x512 on 2 CPU cores",
        "machine": info, "repeat": args.repeat,
        "note": "machine shared with other jobs: see load_1m (1-minute load average before each run, then after); "
                "cpu_frames_per_s is frames / CPU seconds of the process (all its threads)",
        "rows": rows,
    })


if __name__ == "__main__":
    main()
