"""Benchmark: extract-audio feature speed on CPU (target: 60 s of audio in under 3 s).

Rows: for each extractor (phonetic with its default workers and with one process, mel-formant),
features (raw frames + normalisation + 25 fps windows) for 60 s of synthetic speech-like audio
and, when ../shared exists, for 60 s of real speech (the french clip looped); ffmpeg decoding of
that clip; the whole default stage through run_stage.
Prints a table and writes bench/results/audio_cpu.json (medians over --repeat runs).

    OMP_WAIT_POLICY=PASSIVE python bench/bench_audio.py [--repeat 7] [--seconds 60]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from common import describe, load_avg, machine, shared_file, write_json

SR = 16000


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Alternating vowels (pulse train through formant resonators), fricative noise and pauses."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    vowels = [((730, 1090, 2440)), ((270, 2290, 3010)), ((300, 870, 2240)), ((530, 1840, 2480)), ((570, 840, 2410))]
    out, n_total = [], int(seconds * SR)
    while sum(map(len, out)) < n_total:
        n = int(rng.uniform(0.08, 0.3) * SR)
        kind = rng.choice(["vowel", "vowel", "vowel", "fricative", "pause"])
        if kind == "vowel":
            f0 = rng.uniform(90, 220)
            y = np.zeros(n)
            y[(np.arange(0, n, SR / f0)).astype(int)] = 1.0
            for f in vowels[rng.integers(len(vowels))]:
                bw = rng.uniform(60, 150)
                r = np.exp(-np.pi * bw / SR)
                y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], y)
            y = lfilter([1], [1, -0.9], y) * rng.uniform(0.2, 1.0) / (np.abs(y).max() + 1e-9)
        elif kind == "fricative":
            y = lfilter([1, -0.95], [1], rng.normal(0, 0.05, n))
        else:
            y = rng.normal(0, 1e-4, n)
        out.append(y)
    return (0.3 * np.concatenate(out)[:n_total]).astype(np.float32)


def timed(fn, repeat: int) -> tuple[float, list[float], float]:
    """(median wall s, wall times, median CPU s of this process: unlike wall time, not inflated by
    other processes on shared cores, but blind to work done in worker processes)."""
    fn()  # warm-up: first-call costs (imports, FFT plans) are not steady-state speed
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), times, statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--out", type=Path, default=Path("audio_cpu.json"),
                    help="results file (a bare name goes under bench/results/)")
    args = ap.parse_args()

    import scipy

    from talkctl.audio import recipe
    from talkctl.media.audio import load_waveform
    from talkctl.stages import extract_audio as xa
    from talkctl.timebase import n_video_frames

    info = machine(numpy=np.__version__, scipy=scipy.__version__, pocketsphinx=version("pocketsphinx"))
    variants = {"phonetic": {"extractor": "phonetic"}, "phonetic, 1 process": {"extractor": "phonetic", "phone_workers": 1},
                "mel-formant": {"extractor": "mel-formant"}}
    recipes = {name: recipe.FeatureRecipe.from_config({**xa.DEFAULTS, **cfg}) for name, cfg in variants.items()}

    def features(rec, wav):
        def go():
            raw = rec.raw(wav)
            rec.fit(raw)
            return rec.windows(raw, n_video_frames(len(wav)))[1]
        return go

    rows = []
    synth = speech_like(args.seconds)
    clip = shared_file("data", "video", "french_50s.mp4")
    real = load_waveform(clip) if clip is not None else None
    for name, rec in recipes.items():
        med, times, cpu = timed(features(rec, synth), args.repeat)
        rows.append({"case": f"{name} features, synthetic speech {args.seconds:.0f} s", "median_s": med,
                     "runs_s": times, "median_cpu_s": cpu, "audio_s": args.seconds})
        if real is not None:
            med, times, cpu = timed(features(rec, np.resize(real, int(args.seconds * SR))), args.repeat)
            rows.append({"case": f"{name} features, real speech {args.seconds:.0f} s (french clip looped)",
                         "median_s": med, "runs_s": times, "median_cpu_s": cpu, "audio_s": args.seconds})

    if clip is not None:
        med, times, _ = timed(lambda: load_waveform(clip), args.repeat)
        rows.append({"case": "ffmpeg decode french_50s.mp4 (48 kHz AAC -> 16 kHz mono)", "median_s": med,
                     "runs_s": times, "audio_s": len(real) / SR})

        from talkctl.pipeline import run_stage
        from talkctl.rundir import RunDir

        with tempfile.TemporaryDirectory() as tmp:
            rd = RunDir(Path(tmp) / "run")
            rd.set_video(clip)
            med, times, _ = timed(lambda: run_stage("extract-audio", rd, force=True, device="cpu"), args.repeat)
        rows.append({"case": "whole default stage on french_50s.mp4 (decode + features + write audio.h5)", "median_s": med,
                     "runs_s": times, "audio_s": len(real) / SR})
    else:
        print("(no shared data/video/french_50s.mp4: real-speech rows skipped)", file=sys.stderr)

    info["load_avg_after"] = load_avg()
    width = max(len(r["case"]) for r in rows)
    print(f"{'case':<{width}}  {'median s':>9}  {'CPU s':>6}  {'x realtime':>10}")
    for r in rows:
        r["realtime_factor"] = r["audio_s"] / r["median_s"]
        cpu = f"{r['median_cpu_s']:.2f}" if "median_cpu_s" in r else ""
        print(f"{r['case']:<{width}}  {r['median_s']:>9.3f}  {cpu:>6}  {r['realtime_factor']:>10.0f}")
    print(describe(info))
    target = {"case": "every extractor's features for 60 s of audio (default workers)", "limit_s": 3.0,
              "met": all(r["median_s"] < 3.0 for r in rows if " features" in r["case"] and "1 process" not in r["case"])}
    write_json(args.out, {"benchmark": "extract-audio CPU", "repeat": args.repeat, "machine": info,
                          "target": target, "rows": rows})


if __name__ == "__main__":
    main()
