"""Benchmark: `talkctl track` end to end on CPU (target: >= 25 frames/s at 512x512).

One case per clip: the shared clips (french_50s, german_20s, grid_s1_180s) when ../shared
exists, else the synthetic subject (talkctl/synthetic.py, 20 s). Each case runs the whole
stage (decode, crop, landmarks, frames.h5 write, head pose, features) in a fresh process so
its peak RSS is its own; the table and bench/results/track_cpu.json give frames/s, stage
seconds by part, peak RSS and the quality figures (face rate, median reprojection error of
the rigid landmarks at the stored size, largest frame-to-frame head rotation).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_track.py [--repeat 1] [--size 512] [--clips french_50s ...]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, SHARED_HINT, describe, load_avg, machine, shared_file, write_json

CLIPS = ("french_50s", "german_20s", "grid_s1_180s")

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from talkctl.pipeline import run_stage
from talkctl.rundir import RunDir
rd = RunDir(sys.argv[3])
rd.set_video(sys.argv[2])
t = time.perf_counter()
s = run_stage("track", rd, overrides={"size": int(sys.argv[4]), "preview": True}, force=True, device="cpu")
s["wall_s"] = time.perf_counter() - t
s["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
s["ffmpeg_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(s, default=str))
"""


def run_case(video: Path, size: int, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = keep or Path(tmp) / "run"
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(video), str(run), str(size)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"track failed on {video}: {proc.stderr.strip().splitlines()[-1:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--clips", nargs="*", default=list(CLIPS))
    ap.add_argument("--keep", type=Path, help="keep the run directories (and previews) under this folder")
    ap.add_argument("--out", type=Path, default=Path("track_cpu.json"),
                    help="results file (a bare name goes under bench/results/)")
    args = ap.parse_args()
    import mediapipe
    import numpy

    info = machine(numpy=numpy.__version__, mediapipe=mediapipe.__version__)
    videos = shared_file("data", "video")
    if videos is not None:
        cases = [(c, videos / f"{c}.mp4") for c in args.clips]
    else:
        print(f"(no shared clips ({SHARED_HINT}): benchmarking the synthetic subject instead)", file=sys.stderr)
        from talkctl.synthetic.clip import make_subject

        tmp = Path(tempfile.mkdtemp())
        sub = make_subject(tmp, seconds=20.0, size=512, seed=0)
        cases = [("synthetic_20s", sub.video_path)]
    rows = []
    for name, video in cases:
        runs = [run_case(video, args.size, args.keep / name if args.keep else None) for _ in range(args.repeat)]
        fps = [r["frames_per_s"] for r in runs]
        best = runs[fps.index(statistics.median_low(fps))]
        rows.append({
            "clip": name, "frames": best["frames"], "video_s": best["video_seconds"], "source": best["source"],
            "crop": best["crop"], "frames_per_s_median": statistics.median(fps), "frames_per_s_runs": fps,
            "stage_s": best["timings_s"], "peak_rss_mb": round(best["peak_rss_mb"], 1),
            "ffmpeg_peak_rss_mb": round(best["ffmpeg_peak_rss_mb"], 1), "face_rate": best["face_rate"],
            "gap_frames": best["gap_frames"], "median_reproj_px": best["median_reproj_px"],
            "p95_reproj_px": best["p95_reproj_px"], "max_rotation_step_deg": best["max_rotation_step_deg"],
            "max_rotation_step_at_s": best["max_rotation_step_at_s"],
            "p99_rotation_step_deg": best["p99_rotation_step_deg"], "focal_px": best["focal_px"],
            "warnings": best["warnings"],
        })
    info["load_avg_after"] = load_avg()
    head = f"{'clip':<14} {'frames':>6} {'fps':>6} {'total s':>8} {'decode+lm s':>11} {'pose s':>6} {'RSS MB':>7} " \
           f"{'face %':>7} {'reproj px':>9} {'max rot':>8}"
    print(head)
    for r in rows:
        t = r["stage_s"]
        print(f"{r['clip']:<14} {r['frames']:>6} {r['frames_per_s_median']:>6.1f} {t['total']:>8.1f} "
              f"{t['decode_landmarks_write']:>11.1f} {t['pose']:>6.2f} {r['peak_rss_mb']:>7.0f} "
              f"{100 * r['face_rate']:>7.2f} {r['median_reproj_px']:>9.2f} {r['max_rotation_step_deg']:>7.2f}°")
    print(describe(info))
    targets = {"frames_per_s": 25.0, "face_rate": 0.99, "median_reproj_px": 3.0}
    met = all(r["frames_per_s_median"] >= 25 and r["face_rate"] >= 0.99 and r["median_reproj_px"] <= 3 for r in rows)
    write_json(args.out, {"benchmark": "track CPU", "size": args.size, "repeat": args.repeat,
                          "machine": info, "targets": targets, "targets_met": met, "rows": rows})


if __name__ == "__main__":
    main()
