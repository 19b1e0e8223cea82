"""Wall time of `talkctl batch` with the local engine and with a local Ray instance, on the
three shared clips at the `tiny` preset, and whether both engines give equal artifacts.

    python bench/batch_engines.py [--to STAGE] [--workers 2] [--work DIR]

--to defaults to the last stage of the chain that is built (with everything before it).
Each engine starts from an empty root, through the real CLI in a subprocess (`python -m
talkctl batch ...`), so the times are what a user sees, Ray's start-up included.
Prints a table; writes bench/results/batch_engines.json (one run per engine: the runs
take minutes; medians would need repeats this machine cannot afford).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, SHARED_HINT, describe, load_avg, machine, shared_dir, write_json

CLIPS = {"french": "data/video/french_50s.mp4", "german": "data/video/german_20s.mp4",
         "grid": "data/video/grid_s1_180s.mp4"}


def last_built() -> str:
    from talkctl.pipeline import CHAIN, STAGE_BY_NAME

    last = None
    for name in CHAIN:
        if not STAGE_BY_NAME[name].built:
            break
        last = name
    if last is None:
        sys.exit("no stage is built yet")
    return last


def ray_version() -> str | None:
    try:
        import ray
    except ImportError:
        return None
    return ray.__version__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--to", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--work", type=Path, default=Path("/tmp/talkctl-bench-batch"))
    ap.add_argument("--out", type=Path, default=Path("batch_engines.json"),
                    help="results file (a bare name goes under bench/results/)")
    args = ap.parse_args()
    to = args.to or last_built()
    shared = shared_dir()
    missing = [p for p in CLIPS.values() if shared is None or not (shared / p).exists()]
    if missing:
        sys.exit(f"needs the shared clips ({SHARED_HINT}): missing {missing}")
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = args.work / "three_clips.toml"
    manifest.write_text("".join(f'[[subject]]\nname = "{n}"\nvideo = "{shared / p}"\n\n' for n, p in CLIPS.items()))
    info = machine(ray=ray_version())
    rows = []
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    for engine in args.engines.split(","):
        root = args.work / engine
        shutil.rmtree(root, ignore_errors=True)
        cmd = [sys.executable, "-m", "talkctl", "batch", str(manifest), "--root", str(root), "--preset", "tiny",
               "--to", to, "--engine", engine, "--workers", str(args.workers), "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        record = json.loads(proc.stdout) if proc.stdout.strip() else {}
        subjects = record.get("subjects", {})
        rows.append({"engine": engine, "wall_s": round(wall, 2), "rc": proc.returncode,
                     "subjects": {n: {"status": s["status"], "error": s["error"],
                                      "stages": {k: v.get("seconds") for k, v in s["stages"].items()}}
                                  for n, s in subjects.items()},
                     "stderr_tail": proc.stderr[-400:] if proc.returncode else ""})
        print(f"{engine}: rc {proc.returncode}, wall {wall:.1f} s", flush=True)
    equal = None
    if len(rows) == 2 and all(r["subjects"] for r in rows):
        # compared even when a subject failed: what each engine did produce must be equal
        from talkctl.batch.compare import compare_roots

        diffs = compare_roots(args.work / rows[0]["engine"], args.work / rows[1]["engine"])
        same_status = {n: s["status"] for n, s in rows[0]["subjects"].items()} == \
                      {n: s["status"] for n, s in rows[1]["subjects"].items()}
        if not same_status:
            diffs.append("subjects ended differently on the two engines")
        equal = not diffs
    else:
        diffs = ["not compared: an engine did not run"]
    info["load_avg_after"] = load_avg()
    print(f"\nthree shared clips, preset tiny, chain extract-audio..{to}, {args.workers} workers")
    print(describe(info))
    print(f"{'engine':8} {'wall s':>8}  per-subject stage seconds")
    for r in rows:
        per = "; ".join(f"{n}: " + ", ".join(f"{k} {v:.1f}" for k, v in s["stages"].items() if v is not None)
                        for n, s in r["subjects"].items())
        print(f"{r['engine']:8} {r['wall_s']:8.1f}  {per}")
    for r in rows:
        for n, sub in r["subjects"].items():
            if sub["status"] != "done":
                print(f"{r['engine']}: {n} {sub['status']}: {sub['error']}")
    n_files = len(list((args.work / rows[0]["engine"]).glob("*/*.h5"))) if rows else 0
    print(f"artifacts equal (HDF5 datasets + fingerprints, {n_files} files): {equal}" + ("" if equal else f" {diffs[:5]}"))
    write_json(args.out, {"benchmark": "talkctl batch: local vs Ray engine", "chain_to": to, "preset": "tiny",
                          "workers": args.workers, "clips": CLIPS, "machine": info, "runs": rows,
                          "artifacts_equal": equal, "artifacts_compared": n_files, "differences": diffs[:20]})


if __name__ == "__main__":
    main()
