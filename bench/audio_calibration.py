"""Benchmark: how well each audio representation predicts the real mouth opening, within and across speakers.

A calibration of the audio features alone (no talking-head model): for every shared clip, a ridge
regression from the features of a +-4 video-frame window to the tracked mouth opening (track.h5
`mouth_open`, mediapipe at the fast preset) is fitted on the clip's training frames (the first
10/11, talkctl.timebase) and scored on its held-out tail and on every other clip: Pearson r at
lag 0, and the amplitude ratio std(predicted) / std(real). The ridge strength is chosen by blocked
cross-validation inside the training frames.

Feature variants, for each extractor: normalised as extract-audio does (statistics of the training
clip, applied to the other clips at render time); per utterance (each clip with its own statistics);
vocal-tract-length normalised (each clip's spectrum warped so its median F3 sits at 2.5 kHz) and per
utterance; per utterance with the training clip augmented by four warped copies (x0.88-1.12: formants
and pitch together); and phonetic + mel-formant side by side.

Audio/video drift: a clip whose speech loudness leads or trails the mouth by a lag that drifts
over the clip (grid_s1_180s, 60 joined GRID clips, drifts ~0.5 frame per 3 s clip to ~1.4 s at the
end) is re-aligned per 3 s block before scoring (lag of best loudness/mouth correlation over
three blocks, median-filtered); the lags found are in the JSON.

    OMP_WAIT_POLICY=PASSIVE python bench/audio_calibration.py [--runs DIR] [--clips a.mp4 b.mp4 ...]

Needs ../shared (or TALKCTL_SHARED); the clips are tracked once with `talkctl track` into --runs.
Writes bench/results/audio_calibration.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, SHARED_HINT, describe, load_avg, machine, shared_dir, write_json

CLIPS = ("french_50s", "german_20s", "grid_s1_180s")
CONTEXT = 4  # video frames each side of the predicted frame
ALPHAS = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
AUG_WARPS = (0.88, 0.94, 1.06, 1.12)  # frequency warps of the training audio (augmentation)
BLOCK = 75  # frames per alignment block (3 s: one GRID sentence)
MAX_LAG = 45  # frames searched when aligning


# ---- data ----------------------------------------------------------------------------
def tracked_mouth(video: Path, run: Path) -> np.ndarray:
    """(T,) mouth opening per 25 fps frame; `talkctl track` runs once per clip into `run`."""
    import h5py

    if not (run / "track.h5").exists():
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, "-m", "talkctl", "track", str(video), "--run", str(run), "--preset", "fast",
                        "-q"], check=True, env=env)
    with h5py.File(run / "track.h5", "r") as f:
        return f["mouth_open"][()].astype(np.float64)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-18))


def best_lag(loud: np.ndarray, mouth: np.ndarray, lo: int, hi: int, lags: range) -> int:
    """Lag (frames) maximising corr(loud[t + lag], mouth[t]) over t in [lo, hi)."""
    scores = []
    for lag in lags:
        a, b = max(lo, -lag), min(hi, len(mouth) - max(lag, 0))
        scores.append(pearson(loud[a + lag:b + lag], mouth[a:b]) if b - a > 10 else -1.0)
    return lags[int(np.argmax(scores))]


def drift_lags(loud: np.ndarray, mouth: np.ndarray) -> np.ndarray | None:
    """Per-block audio lag (frames) when the audio drifts against the video, else None.

    Each block's lag is taken over three blocks around it; a robust line through them says
    whether there is drift (over 3 frames end to end); then each block's lag is searched again
    within +-6 frames of the line (single blocks are noisy) and median-filtered."""
    from scipy.ndimage import median_filter

    n = len(mouth)
    starts = np.arange(0, n, BLOCK)
    span = lambda s: (max(0, s - BLOCK), min(n, s + 2 * BLOCK))  # noqa: E731
    lags = np.array([best_lag(loud, mouth, *span(s), range(-MAX_LAG, MAX_LAG + 1)) for s in starts], float)
    design = np.stack([starts, np.ones(len(starts))], axis=1).astype(float)
    keep = np.ones(len(starts), bool)
    for _ in range(3):
        coef = np.linalg.lstsq(design[keep], lags[keep], rcond=None)[0]
        keep = np.abs(lags - design @ coef) < 3
    if abs(coef[0] * n) <= 3 or keep.sum() < len(starts) // 2:
        return None
    line = np.rint(design @ coef).astype(int)
    local = [best_lag(loud, mouth, *span(s), range(c - 6, c + 7)) for s, c in zip(starts, line)]
    return median_filter(np.array(local), 3, mode="nearest")


def realign(wav: np.ndarray, mouth: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Undo audio/video drift: shift each 3 s block of audio by its own lag."""
    from talkctl.audio.recipe import rms_db_per_frame
    from talkctl.timebase import SAMPLES_PER_FRAME

    n = len(mouth)
    lags = drift_lags(rms_db_per_frame(wav, n).astype(np.float64), mouth)
    if lags is None:
        return wav, []
    out = np.zeros(n * SAMPLES_PER_FRAME, np.float32)
    for s, lag in zip(range(0, n, BLOCK), lags):
        v0, v1 = s * SAMPLES_PER_FRAME, min(n, s + BLOCK) * SAMPLES_PER_FRAME
        a0 = v0 + int(lag) * SAMPLES_PER_FRAME
        src = wav[max(0, a0):max(0, a0 + v1 - v0)]
        out[v0 + max(0, -a0):v0 + max(0, -a0) + len(src)] = src[:v1 - v0 - max(0, -a0)]
    return out, [int(v) for v in lags]


# ---- features -------------------------------------------------------------------------
def per_frame(recipe, raw: np.ndarray, n: int) -> np.ndarray:
    """(n, D) mean of the normalised feature frames that fall in each video frame."""
    _, win = recipe.windows(raw, n)
    return win.mean(axis=1)


def make_recipe(name: str):
    from talkctl.audio.recipe import FEATURE_DEFAULTS, FeatureRecipe
    from talkctl.timebase import FPS

    recipe = FeatureRecipe.from_config({**FEATURE_DEFAULTS, "extractor": name})
    recipe.window = max(1, round(recipe.extractor.rate / FPS))  # the feature frames of one video frame
    return recipe


def warp_spectrum(wav: np.ndarray, factor: float) -> np.ndarray:
    """Move every frequency f to factor * f (formants and pitch: a longer or shorter vocal tract and a
    lower or higher voice), keeping the duration: STFT magnitudes resampled along frequency, phases kept."""
    from scipy.signal import istft, stft

    _, _, z = stft(wav, fs=16000, nperseg=512, noverlap=384)
    src = np.arange(z.shape[0]) / factor
    i0 = np.minimum(src.astype(int), z.shape[0] - 2)
    w = np.clip(src - i0, 0.0, 1.0)[:, None]
    mag = np.abs(z)
    warped = (mag[i0] * (1 - w) + mag[i0 + 1] * w) * (src < z.shape[0] - 1)[:, None]
    _, x = istft(warped * np.exp(1j * np.angle(z)), fs=16000, nperseg=512, noverlap=384)
    return np.pad(x, (0, max(0, len(wav) - len(x))))[:len(wav)].astype(np.float32)


def vtln_factor(wav: np.ndarray) -> float:
    """Warp that brings the clip's median third formant (voiced frames, LPC) to 2.5 kHz, within 0.8-1.25."""
    from talkctl.audio.melformant import VOICING_THRESHOLD, MelFormantExtractor

    ex = MelFormantExtractor()
    raw = ex.frames(wav)
    voiced = raw[:, ex.names.index("voicing")] >= VOICING_THRESHOLD
    f3 = float(np.median(raw[voiced, ex.names.index("F3")])) if voiced.sum() > 20 else 2.5
    return float(np.clip(2.5 / f3, 0.8, 1.25))


def speaker_copies(wavs: dict) -> dict:
    """(clip, tag) -> waveform: as recorded (""), vocal-tract-length normalised ("vtln"), and the
    warped copies used to augment a training clip ("warp0.88" ...)."""
    out = {}
    for clip, wav in wavs.items():
        out[clip, ""] = wav
        out[clip, "vtln"] = warp_spectrum(wav, vtln_factor(wav))
        for f in AUG_WARPS:
            out[clip, f"warp{f}"] = warp_spectrum(wav, f)
    return out


def variants(recipes: dict, raws: dict, lengths: dict) -> dict:
    """name -> (f(train clip, clip) -> (T, D) features of `clip` as a model trained on `train clip`
    sees them, augment(train clip) -> extra (T, D) training copies or None)."""
    def normed(ext, per_utt, tag=""):
        def f(train, clip, copy=tag):
            r = recipes[ext]
            r.fit(raws[ext, clip if per_utt else train, copy if per_utt else tag])
            return per_frame(r, raws[ext, clip, copy], lengths[clip])
        return f

    def augmented(ext):
        plain = normed(ext, True)
        return plain, lambda train: [plain(train, train, f"warp{f}") for f in AUG_WARPS]

    out = {}
    for ext in recipes:
        out[f"{ext}, training-clip norm"] = (normed(ext, False), None)
        out[f"{ext}, per-utterance norm"] = (normed(ext, True), None)
        out[f"{ext}, VTLN + per-utterance norm"] = (normed(ext, True, "vtln"), None)
        out[f"{ext}, per-utt. + warp augmentation"] = augmented(ext)
    if {"phonetic", "mel-formant"} <= set(recipes):
        a, b = normed("phonetic", False), normed("mel-formant", True)
        out["phonetic + mel-formant per-utt."] = (lambda t, c: np.concatenate([a(t, c), b(t, c)], axis=1), None)
    return out


# ---- ridge read-out ---------------------------------------------------------------------
def stack(x: np.ndarray) -> np.ndarray:
    idx = np.clip(np.arange(len(x))[:, None] + np.arange(-CONTEXT, CONTEXT + 1)[None], 0, len(x) - 1)
    return x[idx].reshape(len(x), -1)


def ridge(X: np.ndarray, y: np.ndarray, alpha: float):
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Xs = (X - mu) / sd
    w = np.linalg.solve(Xs.T @ Xs + alpha * len(X) * np.eye(X.shape[1]), Xs.T @ (y - y.mean()))
    return lambda Z: ((Z - mu) / sd) @ w + y.mean()


def choose_alpha(X: np.ndarray, y: np.ndarray, folds: int = 5) -> float:
    """Blocked cross-validation; frames within the window context of a test block are left out."""
    edges = np.linspace(0, len(X), folds + 1).astype(int)
    best = (-np.inf, ALPHAS[0])
    for alpha in ALPHAS:
        rs = []
        for a, b in zip(edges[:-1], edges[1:]):
            train = np.ones(len(X), bool)
            train[max(0, a - 2 * CONTEXT):b + 2 * CONTEXT] = False
            rs.append(pearson(ridge(X[train], y[train], alpha)(X[a:b]), y[a:b]))
        best = max(best, (float(np.mean(rs)), alpha))
    return best[1]


def calibrate(feature, augment, mouths: dict) -> list[dict]:
    from talkctl.timebase import held_out_start

    rows = []
    for train in mouths:
        y = mouths[train]
        start = held_out_start(len(y))
        X = stack(feature(train, train))
        fit_x, fit_y = X[:start - CONTEXT], y[:start - CONTEXT]  # no window reaches into the held-out part
        alpha = choose_alpha(fit_x, fit_y)
        if augment is not None:  # the same mouth under warped copies of the training audio
            extra = [stack(a)[:start - CONTEXT] for a in augment(train)]
            fit_x, fit_y = np.concatenate([fit_x, *extra]), np.tile(fit_y, 1 + len(extra))
        model = ridge(fit_x, fit_y, alpha)
        pred = model(X[start + CONTEXT:])
        truth = y[start + CONTEXT:]
        row = {"train": train, "alpha": alpha, "heldout": {"r": pearson(pred, truth), "amp": float(pred.std() / truth.std())}}
        for other in mouths:
            if other != train:
                p = model(stack(feature(train, other)))
                row[other] = {"r": pearson(p, mouths[other]), "amp": float(p.std() / mouths[other].std())}
        rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    cross = [v for r in rows for k, v in r.items() if isinstance(v, dict) and k != "heldout"]
    return {"heldout_r_mean": float(np.mean([r["heldout"]["r"] for r in rows])),
            "cross_r_median": float(np.median([c["r"] for c in cross])), "cross_r_min": float(min(c["r"] for c in cross)),
            "cross_amp_median": float(np.median([c["amp"] for c in cross]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "talkctl-audio-calibration",
                    help="where each clip's `talkctl track` run is kept between invocations")
    ap.add_argument("--clips", nargs="+", type=Path, help="videos (default: the shared clips)")
    ap.add_argument("--extractors", nargs="+", default=["mel-formant", "phonetic"])
    ap.add_argument("--out", type=Path, default=Path("audio_calibration.json"))
    args = ap.parse_args()
    if args.clips is None:
        if shared_dir() is None:
            raise SystemExit(f"no shared clips: put them in {SHARED_HINT}, or give --clips")
        args.clips = [shared_dir() / "data" / "video" / f"{c}.mp4" for c in CLIPS]

    from talkctl.media.audio import load_waveform
    from talkctl.timebase import SAMPLES_PER_FRAME

    info = machine()
    mouths, wavs, alignment = {}, {}, {}
    for video in args.clips:
        mouth = tracked_mouth(video, args.runs / video.stem)
        wav = load_waveform(video)
        n = min(len(mouth), len(wav) // SAMPLES_PER_FRAME)
        wavs[video.stem], alignment[video.stem] = realign(wav[:n * SAMPLES_PER_FRAME], mouth[:n])
        mouths[video.stem] = mouth[:n]
    recipes = {e: make_recipe(e) for e in args.extractors}
    raws, seconds = {}, {}
    for e, r in recipes.items():
        t = time.perf_counter()
        for c, w in wavs.items():
            raws[e, c, ""] = r.raw(w)
        seconds[e] = time.perf_counter() - t
    for (c, tag), w in speaker_copies(wavs).items():
        for e, r in recipes.items():
            if tag:
                raws[e, c, tag] = r.raw(w)
    lengths = {c: len(m) for c, m in mouths.items()}
    results = {}
    for name, (feature, augment) in variants(recipes, raws, lengths).items():
        rows = calibrate(feature, augment, mouths)
        results[name] = {"rows": rows, "summary": summarise(rows)}
    print_results(results, list(mouths))
    info["load_avg_after"] = load_avg()
    print(describe(info))
    audio_s = sum(len(w) for w in wavs.values()) / 16000
    write_json(args.out, {"benchmark": "audio features -> mouth opening, ridge read-out", "machine": info,
                          "clips": {c: {"frames": lengths[c], "realigned_lags": alignment[c]} for c in mouths},
                          "extraction_s_per_60s": {e: s / audio_s * 60 for e, s in seconds.items()},
                          "context_frames": CONTEXT, "results": results})


def print_results(results: dict, clips: list[str]) -> None:
    width = max(map(len, results))
    for name, res in results.items():
        for row in res["rows"]:
            cells = [f"{name:<{width}}", f"{row['train']:<13}", "held-out r {r:+.2f} (x{amp:.2f})".format(**row["heldout"])]
            cells += ["{0} r {r:+.2f} (x{amp:.2f})".format(c[:6], **row[c]) for c in clips if c in row]
            print(" | ".join(cells))
    print()
    print(f"{'features':<{width}}  held-out r  cross r median  cross r min  cross amp median")
    for name, res in results.items():
        s = res["summary"]
        print(f"{name:<{width}}  {s['heldout_r_mean']:>10.2f}  {s['cross_r_median']:>14.2f}  {s['cross_r_min']:>11.2f}"
              f"  {s['cross_amp_median']:>16.2f}")


if __name__ == "__main__":
    main()
