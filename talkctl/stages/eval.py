"""eval: how good a trained run is -> RUN/eval.json and RUN/report.html.

    talkctl eval RUN [--audio FILE]    (through the stage runner; evaluate() from Python)

Self-driven, on the held-out frames (the last 1/11 of the clip, never trained on), against
the real frames at the model's resolution, the whole frame of what the mp4 shows, per composite
(head.composite, exactly render's pixels):
  portrait  the real frame as the template, the rendered lower face blended in (render's default
            for poses of this run: dubbing)
  model     the rendered head + torso over the background plate (free viewpoint, other poses)
  head      diagnostic of the head alone: the rendered head alpha-composited over the real frame
            (the papers' protocol; not a frame any render writes)
The headline figures (psnr, ssim, lpips, lmd, render_fps) are those of `composite` (auto: the
one render would write for these frames, portrait); both composites are reported by name.
  PSNR, PSNR inside the head mask, SSIM, LPIPS (unavailable with the reason when its weights
  are missing: never a number), LMD on the mouth and the correlation of mouth opening, from
  the run's own landmark backend run on real and rendered frames alike (both upscaled to at
  least LANDMARK_SIDE px so the detector sees faces of the same size).
Lip sync: mouth opening vs speech energy at the best lag within +-2 frames (metrics.audio_mouth_sync)
on the real held-out video (the target), on the self-driven render, and cross-driven on
`audio` when given; SyncNet confidence/offset when its weights are present.
Lip sync with a ground truth (`drive_videos`, `talkctl eval RUN --drive-video OTHER.mp4`, repeatable):
the head driven by OTHER's audio, its mouth opening (on the composite render would write, as the
cross-driven pass) against the real mouth of OTHER's speaker (head.drive_video): correlation at lag
0, best lag within +-3 frames and its correlation, and the amplitude ratio std(rendered) / std(real);
also OTHER's own picture-to-sound offset (audio.av_offset) and the correlation at the lag it implies,
since a real speaker is a ground truth only up to that offset; the figures xsync_* are medians over
the drives. The held-out renders get the same amplitude ratio (mouth_amp). clip_av_offset_ms: the
training clip's own offset (what train-deform realigns from 0.1 s on).
Efficiency: training seconds per stage (artifact attrs), Gaussian counts, render frames/s per
composite (timed as render times it: head render (+ torso) + compositing), peak memory (this
process; training's own record when the artifacts carry one).

It writes no HDF5 artifact: the runner checks its inputs and holds the run's lock, nothing is fingerprinted.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import resource
import time
from pathlib import Path

import numpy as np

from talkctl import __version__, artifacts
from talkctl.config import NON_NEGATIVE, Range
from talkctl.devices import device_name
from talkctl.errors import StageError
from talkctl.face.reader import LANDMARK_SIDE, LandmarkReader, MouthTrack
from talkctl.head.composite import Compositor, check_composite, compositor_for, resolve_composite
from talkctl.head.drive import audio_drive, self_drive, trained_av_attrs, with_landmarks
from talkctl.head.drive_video import drive_video_figures, rendered_mouth
from talkctl.head.portrait_blend import BlendSettings
from talkctl.head.renderer import Renderer, render_batches
from talkctl.images import resize_square
from talkctl.jpeg_frames import frame_images
from talkctl.metrics.lipsync import (amplitude_ratio, audio_energy_per_frame, audio_mouth_sync, correlation_interval,
                                     fill_gaps, lmd, mouth_open_correlation)
from talkctl.metrics.sequence import ImageFigures
from talkctl.metrics.syncnet import load_syncnet, syncnet_score, syncnet_status
from talkctl.progress import null_progress
from talkctl.report.html import write_report
from talkctl.report.run_info import training_info
from talkctl.timebase import FPS

VERSION = 1
DEFAULTS = {"audio": None,  # also drive the head with this audio file: lip-sync figures on new speech
            "drive_videos": [],  # drive the head with these videos' audio; their real mouths are the truth
            "size": 0, "batch": 8, "lpips": True, "report_frames": 3, "pose": "train", "pose_start": 0,
            "blink": "source", "rasterizer": "auto",
            "composite": "auto",  # the headline (both are reported): auto (portrait, as render) | portrait | model
            "portrait_region": "lower",
            "landmarks": "auto"}  # landmark-driven heads: auto (a2l) | track (the held-out frames' own) | OTHER_RUN
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)
RANGES = {"size": Range(0, 4096), "batch": Range(1, 256), "report_frames": Range(0, 100), "pose_start": NON_NEGATIVE}



def _finite(v):
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.ndarray):
        return _finite(v.tolist())
    return v


def _sync(mouth: np.ndarray, wav: np.ndarray, found: np.ndarray) -> dict:
    if found.sum() < max(5, 0.5 * len(found)):
        return {"corr": None, "lag": None, "reason": f"a face was found in only {int(found.sum())} of {len(found)} frames"}
    corr, lag = audio_mouth_sync(fill_gaps(mouth), wav)
    return {"corr": corr if math.isfinite(corr) else None, "lag": int(lag),
            **({} if math.isfinite(corr) else {"reason": "mouth opening or audio energy constant"})}


def _syncnet(frames: list[np.ndarray], wav: np.ndarray, device: str) -> dict:
    why = syncnet_status()
    if why:
        return {"confidence": None, "offset": None, "reason": why}
    try:
        r = syncnet_score(np.stack(frames), wav, model=load_syncnet(device=device))
        return {"confidence": r.get("confidence"), "offset": r.get("offset")}
    except Exception as exc:  # a figure that cannot be computed is reported, not invented
        return {"confidence": None, "offset": None, "reason": f"SyncNet failed: {exc}"}


def run(ctx, cfg: dict) -> dict:
    return evaluate(ctx.run, audio=cfg["audio"], cfg=cfg, device=ctx.device, progress=ctx.progress, log=ctx.log)


def evaluate(run, audio: Path | None = None, cfg: dict | None = None, device: str = "cpu", progress=None, log=None) -> dict:
    """Compute every figure, write RUN/eval.json and RUN/report.html; returns the eval dict.
    The caller holds the run's lock and has checked its artifacts (the stage runner does both)."""
    cfg = {**DEFAULTS, **(cfg or {})}
    progress = progress or null_progress
    t_start = time.perf_counter()
    renderer = Renderer.load(run, device, int(cfg["size"]), str(cfg["rasterizer"]))
    drive = with_landmarks(run, self_drive(run), cfg, device)
    headline = resolve_composite(str(cfg["composite"]), drive)
    check_composite(headline, str(cfg["portrait_region"]))
    track_attrs = artifacts.read_attrs(run, "track") or {}
    reader = LandmarkReader(str(track_attrs.get("landmark_backend") or "auto"), device)
    syncnet_on = syncnet_status() is None
    try:
        held = _held_out_pass(run, renderer, drive, reader, cfg, device, progress, headline)
        cross = None
        if audio is not None:
            cross = _cross_pass(run, renderer, Path(audio), reader, cfg, device, progress, syncnet_on)
            held["sync"]["cross_driven"] = cross
        drives = [drive_video_figures(run, renderer, v, reader, cfg, device, progress) for v in cfg["drive_videos"]]
    finally:
        reader.close()
    for p in ([cross] if cross else []) + drives:  # the headline speed is the held-out pass's, per composite
        p.pop("model_s"), p.pop("n_rendered")

    info = training_info(run)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    comps = held["composites"]
    efficiency = {"train_seconds": sum(info["stages"].values()), "stage_seconds": info["stages"],
                  "gaussians": info["gaussians"], "render_fps": comps[headline]["render_fps"],
                  "render_fps_by_composite": {m: c["render_fps"] for m, c in comps.items()},
                  "render_frames": held["n_rendered"], "device": device_name(device),
                  "eval_peak_rss_mb": peak_mb, "training_peak_memory": info["training_peak_memory"] or
                  "not recorded by the training stages"}
    if device.startswith("cuda"):
        import torch

        efficiency["eval_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    figures = _figures(held, cross, drives, info, efficiency, peak_mb, drive, device, syncnet_on)
    figures.update(_clip_offset(run))
    a, b = drive.held_out
    result = _finite({
        "run": str(run), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "talkctl_version": __version__, "device": device_name(device), "held_out": [a, b], "size": renderer.size,
        "composite": headline, "figures": figures, "composites": comps, "head_over_real": held["head"],
        "lip": held["lip"], "sync": held["sync"], "drive_videos": drives,
        "sync_source": "cross-driven (--audio)" if cross is not None else "self-driven held-out render",
        "efficiency": efficiency, "seconds": time.perf_counter() - t_start,
    })
    _write_json(run.file("eval.json"), result)
    _write_report(run, result, held, drives, drive.wav, b - a, info)
    result["report"] = str(run.file("report.html"))
    result["eval_json"] = str(run.file("eval.json"))
    if log is not None:
        log.info("eval: %s", figures)
    return result


def _lip(real: MouthTrack, rend: MouthTrack, n: int) -> dict:
    """Mouth landmark distance and mouth-opening correlation, rendered vs real."""
    found = real.found & rend.found
    lip = {"frames_with_face_rendered": int(rend.found.sum()), "mouth_frames": int(found.sum())}
    if found.sum() >= 2:
        real_open, rend_open = real.mouth_open()[found], rend.mouth_open()[found]
        lip["lmd"] = lmd(rend.stacked()[found], real.stacked()[found], normalise="interocular")
        lip["mouth_corr"] = mouth_open_correlation(real_open, rend_open)
        ci = correlation_interval(real_open, rend_open)  # a short held-out tail is a few seconds: say how sure
        lip["mouth_corr_ci95"] = None if ci is None else list(ci)
        lip["mouth_amp"] = amplitude_ratio(rend_open, real_open)
    else:
        lip["lmd"] = lip["mouth_corr"] = lip["mouth_amp"] = lip["mouth_corr_ci95"] = None
        lip["reason"] = f"faces found in both real and rendered frames for only {int(found.sum())} of {n} frames"
    return lip


# what eval scores on the held-out frames: both composites the mp4 can show, and the head alone
VIEWS = {"portrait": "portrait composite (the real frame, the rendered face blended in)",
         "model": "model composite (rendered head + torso over the background plate)",
         "head": "diagnostic: the rendered head alone over the real frame"}


def see_through(coverage: np.ndarray, labels: np.ndarray) -> float:
    """Share of the real person's pixels (parse labels, 2 px in from its outline) where the model
    composite's head and torso cover less than 90%: the plate shows through (gaps at the neck,
    see-through hair)."""
    import cv2

    person = cv2.erode((labels > 0).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return float((coverage[person] < 0.9).mean()) if person.any() else 0.0


def _held_out_pass(run, renderer, drive, reader, cfg, device, progress, headline: str) -> dict:
    """Render the held-out frames self-driven; per view (VIEWS) image and mouth figures against the
    real frames, and per composite the seconds render would spend (its model speed)."""
    a, b = drive.held_out
    size, n = renderer.size, b - a
    shared = ImageFigures(lpips=bool(cfg["lpips"]), device=device)
    figs = {m: ImageFigures(lpips=False) for m in VIEWS}
    for f in figs.values():
        f.lpips_model, f.lpips_reason = shared.lpips_model, shared.lpips_reason
    mouths = {m: MouthTrack(reader) for m in ("real", "portrait", "model")}
    secs = {"head": 0.0, "model": 0.0, "portrait": 0.0}
    gaps = []  # per frame: the share of the person the model composite leaves see-through
    picks = set(np.linspace(0, n - 1, min(int(cfg["report_frames"]), n)).round().astype(int).tolist())
    order = [headline] + [m for m in VIEWS if m != headline]
    report_frames = []
    portrait = Compositor(run, "portrait", size, BlendSettings(region=str(cfg["portrait_region"])))
    what = {**VIEWS, "portrait": f"{portrait.describe()} (the portrait composite)"}
    with artifacts.open_for_read(run, "frames") as ff, artifacts.open_for_read(run, "parse") as pf, \
            progress(n, "eval (held-out)") as task, contextlib.closing(portrait):
        frames = frame_images(ff, "frames")

        def real_frames(idx):
            return np.stack([resize_square(frames[a + i], size) for i in idx])

        for idx, out, _ in render_batches(renderer, drive, int(cfg["batch"]), real_frames):
            shown, _, c_secs = portrait.compose(out, drive.source_frames[idx])
            views = {"portrait": shown, "model": out["full"], "head": out["head_over_real"]}
            secs["head"], secs["model"] = secs["head"] + out["seconds"]["head"], secs["model"] + out["seconds"]["model"]
            secs["portrait"] += c_secs
            for j, i in enumerate(idx):
                labels = resize_square(pf["labels"][a + i], size, nearest=True)
                mask = labels == 1
                gaps.append(see_through(out["coverage"][j], labels))
                for m in VIEWS:
                    figs[m].add(out["real"][j], views[m][j], mask if mask.any() else None)
                if int(i) in picks:
                    report_frames += [{"index": int(a + i), "real": out["real"][j], "rendered": views[m][j],
                                       "label": f"frame {a + i}: {what[m]}"} for m in order]
            for m in ("portrait", "model"):
                mouths[m].add(views[m])
            mouths["real"].add(out["real"])
            task.advance(len(idx))
    composites = {m: {**figs[m].summary(), **_lip(mouths["real"], mouths[m], n),
                      "render_fps": n / (secs["head"] + secs[m]) if secs["head"] + secs[m] > 0 else None,
                      "what": what[m]} for m in ("portrait", "model")}
    composites["model"]["see_through"] = float(np.mean(gaps)) if gaps else None
    real, rend = mouths["real"], mouths[headline]
    lip = {"landmark_backend": reader.backend.name, "frames": n, "frames_with_face_real": int(real.found.sum()),
           "landmark_input_side": max(size, LANDMARK_SIDE), "composite": headline, **_lip(real, rend, n)}
    sync = {"real_heldout": _sync(real.mouth_open(), drive.wav, real.found),
            "rendered_heldout": _sync(rend.mouth_open(), drive.wav, rend.found)}
    return {"composites": composites, "head": figs["head"].summary(), "lip": lip, "sync": sync,
            "report_frames": report_frames, "mouth_real": real.mouth_open(), "mouth_rend": rend.mouth_open(),
            "n_rendered": n}


def _cross_pass(run, renderer, audio: Path, reader, cfg, device, progress, syncnet_on: bool) -> dict:
    """Drive the head with new audio: mouth opening vs speech energy, SyncNet where its weights are;
    on the frames render would write (the same composite)."""
    cdrive = with_landmarks(run, audio_drive(run, audio, cfg, device), cfg, device)
    comp = compositor_for(run, str(cfg["composite"]), str(cfg["portrait_region"]), cdrive, renderer.size)
    mode = comp.mode
    out = rendered_mouth(renderer, cdrive, comp, reader, int(cfg["batch"]), progress, "eval (new audio)",
                         keep_frames=syncnet_on)
    cmouth = out["track"]
    cross = {"audio": str(audio.absolute()), "pose": cdrive.pose_description, "composite": mode,
             "frames": cdrive.n_frames, "frames_with_face": int(cmouth.found.sum()),
             **_sync(cmouth.mouth_open(), cdrive.wav, cmouth.found)}
    cross["syncnet"] = _syncnet(out["frames"], cdrive.wav, device)
    return {**cross, "model_s": out["model_s"], "n_rendered": out["n_rendered"]}


def _median(drives: list[dict], key: str):
    vals = [d[key] for d in drives if d.get(key) is not None and math.isfinite(d[key])]
    return float(np.median(vals)) if vals else None


def _figures(held, cross, drives, info, efficiency, peak_mb, drive, device, syncnet_on) -> dict:
    """The flat figures dict of eval.json, the comparison table and the report: the headline is the
    composite the mp4 shows (`composite`); both composites and the head alone by name."""
    comps, hs, lip, sync = held["composites"], held["head"], held["lip"], held["sync"]
    hl = comps[lip["composite"]]
    stage_peaks = {k.split(":")[0]: v for k, v in info["training_peak_memory"].items() if k.endswith(":peak_rss_mb")}
    main_sync = cross if cross is not None else sync["rendered_heldout"]
    figures = {
        "composite": lip["composite"], "psnr": hl["psnr"], "psnr_face": hl.get("psnr_face"), "ssim": hl["ssim"],
        "lpips": hl["lpips"], "lmd": hl["lmd"], "mouth_corr": hl["mouth_corr"], "mouth_amp": hl.get("mouth_amp"),
        "mouth_corr_ci95": hl.get("mouth_corr_ci95"), "mouth_frames": hl.get("mouth_frames"),
        **{f"{m}_{k}": comps[m].get(k) for m in ("portrait", "model") for k in ("psnr", "ssim", "lpips", "lmd")},
        "model_see_through": comps["model"].get("see_through"),
        "head_psnr": hs["psnr"], "head_psnr_face": hs.get("psnr_face"), "head_ssim": hs["ssim"], "head_lpips": hs["lpips"],
        "sync_corr": main_sync.get("corr"), "sync_lag": main_sync.get("lag"),
        "sync_corr_real": sync["real_heldout"].get("corr"),
        **({"xsync_corr": _median(drives, "corr"), "xsync_lag": _median(drives, "best_lag"),
            "xsync_best": _median(drives, "best_corr"), "xsync_amp": _median(drives, "amp"),
            "xsync_offset_corr": _median(drives, "offset_corr"), "xsync_drives": len(drives)} if drives else {}),
        "render_fps": efficiency["render_fps"], "peak_memory_mb": peak_mb,
        "train_seconds": efficiency["train_seconds"], "gaussians": info["gaussians"],
        "method": info["method"], "model_mb": info["model_mb"],
        "train_peak_memory_mb": max(stage_peaks.values(), default=None),
        **{f"seconds:{st}": s for st, s in info["stages"].items()},
        **{f"peak_rss_mb:{st}": v for st, v in stage_peaks.items()},
    }
    if hs["lpips"] is None:
        figures["lpips_reason"] = hs.get("lpips_reason")
    sn = (cross or {}).get("syncnet") if cross else _syncnet([], drive.wav, device) if not syncnet_on else None
    if sn is None:
        sn = {"confidence": None, "offset": None, "reason": "SyncNet is run on cross-driven renders: give --audio FILE"}
    figures["syncnet_confidence"], figures["syncnet_offset"] = sn.get("confidence"), sn.get("offset")
    if sn.get("reason"):
        figures["syncnet_reason"] = sn["reason"]
    return figures


def _clip_offset(run) -> dict:
    """The training clip's own picture-to-sound offset, as its training estimated it (audio.av_offset;
    head.drive.trained_av_attrs): a head learns it unless it was realigned."""
    est = trained_av_attrs(run).get("av_offset_estimate_s")
    if est is None:
        return {"clip_av_offset_ms": None, "clip_av_offset_reason": "not estimated in training (av_offset set by hand, "
                                                                    "too little speech, or trained by an older talkctl)"}
    return {"clip_av_offset_ms": round(1000.0 * est)}


def _own_offset_note(d: dict) -> str:
    if d.get("av_offset_ms") is None:
        return f"; its own picture-to-sound offset unknown ({d['av_offset_reason']})" if d.get("av_offset_reason") else ""
    ms = int(d["av_offset_ms"])
    way = f"leads its sound by {ms} ms" if ms >= 0 else f"trails its sound by {-ms} ms"
    return (f"; its picture {way} (estimated from its phones and its real mouth), "
            f"corr {_fmt(d['offset_corr'], '.3f')} at the lag {d['offset_lag']:+d} that implies")


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StageError(f"cannot write {path}: {exc.strerror or exc}; check the run directory's permissions") from None


def _write_report(run, result, held, drives, wav, n, info) -> None:
    fig = dict(result["figures"])
    comps, head = result["composites"], result["head_over_real"]
    other = [m for m in comps if m != result["composite"]]
    notes = [f"held-out frames {result['held_out'][0]}..{result['held_out'][1] - 1}, compared at {result['size']} px",
             f"headline PSNR / SSIM / LPIPS / LMD / render speed: the whole frame of what the mp4 shows, "
             f"{comps[result['composite']]['what']}",
             *[f"{comps[m]['what']}: PSNR {_fmt(comps[m].get('psnr'), '.2f')} dB, SSIM {_fmt(comps[m].get('ssim'), '.4f')}, "
               f"{_fmt(comps[m].get('render_fps'), '.1f')} fps" for m in other],
             f"{VIEWS['head']}: PSNR {_fmt(head.get('psnr'), '.2f')} dB, inside the head mask "
             f"{_fmt(head.get('psnr_face'), '.2f')} dB",
             f"lip sync figure: {result['sync_source']}",
             f"render speed measured on {result['device']} as render measures it (head render, plus torso for "
             "the model composite, plus compositing)"]
    cross = result["sync"].get("cross_driven")
    if cross:
        notes.append(f"cross-driven audio: {cross['audio']} ({cross['frames']} frames, poses: {cross['pose']})")
    for d in drives:
        notes.append(f"driven by {d['video']} ({d['frames']} frames, poses: {d['pose']}): mouth vs its real speaker "
                     f"corr {_fmt(d['corr'], '.3f')} at lag 0, best {_fmt(d['best_corr'], '.3f')} at lag "
                     f"{_fmt(d['best_lag'], '+d')}, amplitude x{_fmt(d['amp'], '.2f')}" + (f" ({d['reason']})" if d.get("reason") else "")
                     + _own_offset_note(d))
    data = {
        "title": f"talkctl evaluation: {Path(str(result['run'])).name}",
        "subtitle": str(result["run"]),
        "meta": {"run": result["run"], "device": result["device"], "talkctl": result["talkctl_version"]},
        "figures": fig, "stages": info["stages"], "gaussians": info["gaussians"], "frames": held["report_frames"],
        "curves": {"fps": FPS, "mouth_real": fill_gaps(held["mouth_real"]).tolist(),
                   "mouth_rendered": fill_gaps(held["mouth_rend"]).tolist(),
                   "audio_energy_db": audio_energy_per_frame(wav, n_frames=n).tolist(),
                   "title": "Mouth opening on the held-out frames"},
        "drive_curves": [{"fps": FPS, "mouth_real": d["mouth_real"], "mouth_rendered": d["mouth_rendered"],
                          "real_label": "real speaker", "title": f"Driven by {Path(d['video']).name}: rendered mouth "
                          f"vs the real speaker's (corr {_fmt(d['corr'], '.2f')}, amplitude x{_fmt(d['amp'], '.2f')})"}
                         for d in drives if d.get("mouth_real") is not None],
        "training": _with_references(info["curves"], result), "notes": notes,
    }
    write_report(run.file("report.html"), data)


def _with_references(curves: dict, result: dict) -> dict:
    """Training curves with eval's own figure of the same kind beside them (a dashed line), so a
    curve is never read as the render's quality: the head-region curves get the head's PSNR
    inside the head mask, the torso's curve the model composite's whole-frame PSNR."""
    refs = {"head": (result["head_over_real"].get("psnr_face"), "eval: head over the real frame, inside the head mask"),
            "model": (result["composites"]["model"].get("psnr"), "eval: model composite, whole frame")}
    out = {}
    for name, c in curves.items():
        ref = refs.get(c.get("compare"))
        out[name] = {**c, **({"reference": {"value": ref[0], "label": ref[1]}} if ref and ref[0] is not None else {})}
    return out


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per run for report.comparison_table; runs named by their folder (the full path when two share a name)."""
    names = [Path(str(r["run"])).name for r in results]
    return [{"run": name if names.count(name) == 1 else str(r["run"]), **r["figures"]} for name, r in zip(names, results)]
