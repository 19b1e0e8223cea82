"""Benchmark: lip sync with a ground truth, over the shared clips, through the CLI.

Every subject's model is driven by the audio of every other shared clip, and its rendered mouth
opening is compared frame by frame with the real mouth of the person in that clip
(`talkctl eval RUN --drive-video OTHER.mp4`): correlation at lag 0, best lag within +-3 frames
and its correlation, the driving clip's own picture-to-sound offset (audio.av_offset) and the
correlation at the lag it implies, amplitude ratio std(rendered) / std(real). Also per model: the self-driven
held-out figures (mouth correlation and amplitude ratio against the real held-out frames, head PSNR).

Both methods (compare_methods.METHODS: gstalker = audio-conditioned field; two-stage = a2l
landmarks + landmark field), for each audio extractor asked for. A subject's base run (extract-audio
.. init-static) is built once, or copied from --base DIR/<clip> when there; the extractor's
features are made on the copy (extract-audio --force --set extractor=X) before training. Driving clips are cut to
their first --drive-seconds (stream copy: timestamps kept). Interrupted? Run it again: stages
that are up to date are skipped; --eval-only re-evaluates trained runs.

    OMP_WAIT_POLICY=PASSIVE python bench/lipsync.py --preset fast --work /tmp/lipsync \\
        --base /path/to/base_runs --extractors mel-formant --out lipsync_fast.json
Prints the table and the medians; writes bench/results/<out>.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
from pathlib import Path

from common import SHARED_HINT, load_avg, machine, print_table, shared_file, write_json
from compare_methods import METHODS, stage_sets, talkctl, train

CLIPS = ("german_20s", "french_50s", "grid_s1_180s")
SUBJECTS = ("german_20s", "french_50s")
BASE_STAGES = ("track", "parse", "init-static")


def cut_clip(video: Path, seconds: float, out: Path) -> Path:
    """The first `seconds` of a clip, streams copied (the audio's timestamps stay as they are)."""
    if not out.exists():
        from talkctl.media.ffmpeg import ffmpeg_exe

        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(video), "-t", f"{seconds:g}",
                        "-map", "0:v:0", "-map", "0:a:0", "-c", "copy", str(out)], check=True)
    return out


def base_run(clip: str, video: Path, work: Path, base: Path | None, preset: str, sets: list[str]) -> Path:
    dest = work / f"base_{clip}"
    if not dest.exists() and base is not None and (base / clip / "static.h5").exists():
        shutil.copytree(base / clip, dest, ignore=shutil.ignore_patterns("*.lock", "checkpoints", "eval.json",
                                                                         "report.html"))
    talkctl("extract-audio", str(video), "--run", str(dest), "--preset", preset, "-q")
    for st in BASE_STAGES:
        train(dest, st, preset, [], sets)
    return dest


def trained_run(base: Path, name: str, method: str, extractor: str, work: Path, preset: str, sets: list[str],
                train_runs: bool) -> Path:
    dest = work / name
    if not dest.exists():
        if not train_runs:
            raise SystemExit(f"--eval-only: {dest} is not trained")
        shutil.copytree(base, dest, ignore=shutil.ignore_patterns("*.lock", "checkpoints", "eval.json", "report.html"))
        # this extractor's features, made by this checkout's recipe (a copied base may predate it)
        talkctl("extract-audio", "--run", str(dest), "--preset", preset, "--force", "-q", "--set",
                f"extractor={extractor}", *stage_sets(sets, "extract-audio"))
    if train_runs:
        for st, extra in METHODS[method]:
            train(dest, st, preset, extra, sets)
    return dest


def rows_of(result: dict, subject: str, method: str, extractor: str) -> list[dict]:
    fig = result["figures"]
    key = {"subject": subject, "method": method, "extractor": extractor}
    rows = [{**key, "driver": "(held-out, self)", "corr": fig.get("mouth_corr"), "corr_ci95": fig.get("mouth_corr_ci95"),
             "amp": fig.get("mouth_amp"), "head_psnr": fig.get("head_psnr", fig.get("psnr"))}]
    for d in result.get("drive_videos", []):
        rows.append({**key, "driver": Path(d["video"]).stem, "corr": d.get("corr"), "corr_ci95": d.get("corr_ci95"),
                     "best_lag": d.get("best_lag"),
                     "best_corr": d.get("best_corr"), "amp": d.get("amp"), "drive_av_offset_ms": d.get("av_offset_ms"),
                     "offset_lag": d.get("offset_lag"), "offset_corr": d.get("offset_corr")})
    return rows


def _median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def medians(rows: list[dict]) -> list[dict]:
    out = []
    for method, extractor in sorted({(r["method"], r["extractor"]) for r in rows}):
        mine = [r for r in rows if (r["method"], r["extractor"]) == (method, extractor)]
        cross = [r for r in mine if not r["driver"].startswith("(")]
        held = [r for r in mine if r["driver"].startswith("(")]
        out.append({"method": method, "extractor": extractor, "pairs": len(cross),
                    "cross_corr": _median(cross, "corr"), "cross_best_lag": _median(cross, "best_lag"),
                    "cross_best_corr": _median(cross, "best_corr"), "cross_offset_corr": _median(cross, "offset_corr"),
                    "cross_amp": _median(cross, "amp"),
                    "held_corr": _median(held, "corr"), "held_amp": _median(held, "amp"),
                    "held_head_psnr": _median(held, "head_psnr")})
    return out


def _fmt(rows: list[dict]) -> list[dict]:
    return [{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", default=",".join(SUBJECTS), help="clips whose models are trained")
    ap.add_argument("--drivers", default=",".join(CLIPS), help="clips whose audio drives them (real mouth = truth)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--extractors", default="phonetic,mel-formant", help="audio-feature extractors, comma-separated")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--drive-seconds", type=float, default=20.0, help="length of each driving clip")
    ap.add_argument("--work", type=Path, default=Path("/tmp/talkctl_lipsync"))
    ap.add_argument("--base", type=Path, help="folder of base runs (<clip>/ through init-static) to copy")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the trained runs in --work, train nothing")
    ap.add_argument("--out", default="lipsync.json", help="file name under bench/results/")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE",
                    help="override for one stage, e.g. train-deform.iterations=1500")
    args = ap.parse_args(argv)
    videos = {c: shared_file("data", "video", f"{c}.mp4") for c in CLIPS}
    missing = [c for c, v in videos.items() if v is None]
    if missing:
        raise SystemExit(f"needs the shared clips {', '.join(missing)} ({SHARED_HINT})")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    load_before = load_avg()
    drivers = {c: cut_clip(videos[c], args.drive_seconds, work / "drives" / f"{c}.mp4") for c in args.drivers.split(",")}
    rows = []
    for subject in args.subjects.split(","):
        base = None if args.eval_only else base_run(subject, videos[subject], work, args.base, args.preset, args.set)
        others = [str(p) for c, p in drivers.items() if c != subject]
        for extractor in args.extractors.split(","):
            for method in args.methods.split(","):
                run = trained_run(base, f"{subject}-{extractor}-{method}", method, extractor, work, args.preset,
                                  args.set, not args.eval_only)
                ev = ["eval", str(run), "--device", "cpu", "--json", "-q", "--set", "report_frames=1"]
                result = json.loads(talkctl(*ev, *(x for p in others for x in ("--drive-video", p)), capture=True))
                rows += rows_of(result, subject, method, extractor)
    summary = medians(rows)
    cols = [(k, k) for k in ("subject", "method", "extractor", "driver", "corr", "best_lag", "best_corr",
                             "drive_av_offset_ms", "offset_lag", "offset_corr", "amp", "head_psnr")]
    print_table(_fmt(rows), cols)
    print()
    print_table(_fmt(summary), [(k, k) for k in summary[0]] if summary else [])
    write_json(args.out, {"benchmark": "lip sync against real speakers (eval --drive-video)", "preset": args.preset,
                          "drive_seconds": args.drive_seconds, "sets": args.set,
                          "machine": {**machine(), "load_avg_before": load_before, "load_avg_after": load_avg()},
                          "rows": rows, "medians": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
