"""eval: how good a trained run is -> RUN/eval.json and RUN/report.html.

    talkctl eval RUN [--audio FILE]    (through the stage runner; evaluate() from Python)

Self-driven, on the held-out frames (the last 1/11 of the clip, never trained on), against
the real frames at the model's resolution:
  head     the rendered head alpha-composited over the real frame (the usual protocol)
  full     torso + head over the background plate (what `render` outputs)
  PSNR, PSNR inside the head mask, SSIM, LPIPS (unavailable with the reason when its weights
  are missing: never a number), LMD on the mouth and the correlation of mouth opening, from
  the run's own landmark backend run on real and rendered frames alike (both upscaled to at
  least LANDMARK_SIDE px so the detector sees faces of the same size).
Lip sync: mouth opening vs speech energy at the best lag within +-2 frames (metrics.audio_mouth_sync)
on the real held-out video (the target), on the self-driven render, and cross-driven on
`audio` when given; SyncNet confidence/offset when its weights are present.
Lip sync with a ground truth (`drive_videos`, `talkctl eval RUN --drive-video OTHER.mp4`, repeatable):
the head driven by OTHER's audio, its mouth opening against the real mouth of OTHER's speaker
(head.drive_video): correlation at lag 0, best lag within +-3 frames and its correlation, and
the amplitude ratio std(rendered) / std(real); the figures xsync_* are medians over the drives.
The self-driven held-out render gets the same amplitude ratio (mouth_amp).
Efficiency: training seconds per stage (artifact attrs), Gaussian counts, render frames/s,
peak memory (this process; training's own record when the artifacts carry one).

It writes no HDF5 artifact: the runner checks its inputs and holds the run's lock, nothing is fingerprinted.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import resource
import time
from pathlib import Path

import numpy as np

from talkctl import __version__, artifacts
from talkctl.devices import device_name
from talkctl.errors import StageError
from talkctl.face.reader import LANDMARK_SIDE, LandmarkReader, MouthTrack
from talkctl.head.drive import audio_drive, self_drive, with_landmarks
from talkctl.head.drive_video import drive_video_figures, rendered_mouth
from talkctl.head.renderer import Renderer, render_batches
from talkctl.images import resize_square
from talkctl.metrics.lipsync import (amplitude_ratio, audio_energy_per_frame, audio_mouth_sync, fill_gaps, lmd,
                                     mouth_open_correlation)
from talkctl.metrics.sequence import ImageFigures
from talkctl.metrics.syncnet import load_syncnet, syncnet_score, syncnet_status
from talkctl.progress import null_progress
from talkctl.report.html import write_report
from talkctl.timebase import FPS

VERSION = 1
DEFAULTS = {"audio": None,  # also drive the head with this audio file: lip-sync figures on new speech
            "drive_videos": [],  # drive the head with these videos' audio; their real mouths are the truth
            "size": 0, "batch": 8, "lpips": True, "report_frames": 3, "pose": "train", "pose_start": 0,
            "blink": "source", "rasterizer": "auto",
            "landmarks": "auto"}  # landmark-driven heads: auto (a2l) | track (the held-out frames' own) | OTHER_RUN
PRESETS = {"tiny": {}, "fast": {}, "paper": {}}
NON_SEMANTIC = set(DEFAULTS)

# training-time stage -> the artifact whose attrs carry its seconds
STAGE_ARTIFACTS = (("extract-audio", "audio"), ("track", "track"), ("parse", "parse"), ("init-static", "static"),
                   ("train-deform", "deform"), ("train-torso", "torso"), ("train-a2l", "a2l"))  # a2l: two-stage runs only


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


def training_info(run) -> dict:
    """Seconds per stage, Gaussian counts, validation curves and any recorded peak memory."""
    stages, curves, peak = {}, {}, {}
    for stage, art in STAGE_ARTIFACTS:
        attrs = artifacts.read_attrs(run, art) or {}
        if attrs.get("seconds") is not None:
            stages[stage] = float(attrs["seconds"])
        for k in ("peak_memory_mb", "peak_rss_mb", "max_rss_mb", "peak_gpu_memory_mb"):
            if attrs.get(k) is not None:
                peak[f"{stage}:{k}"] = float(attrs[k])
    deform = artifacts.read_attrs(run, "deform") or {}
    torso = artifacts.read_attrs(run, "torso") or {}
    gaussians = {"head": int(deform.get("n_gaussians", 0)), "torso": int(torso.get("n_gaussians", 0))}
    import h5py

    for stage, art, keys in (("init-static", "static", ("head/val_psnr", "torso/val_psnr")),
                             ("train-deform", "deform", ("val_psnr",)), ("train-torso", "torso", ("val_psnr",))):
        path = artifacts.spec(art).path(run)
        try:
            with h5py.File(path, "r") as f:
                for k in keys:
                    if k in f:
                        c = np.asarray(f[k][()]).reshape(-1, 2)
                        name = stage if len(keys) == 1 else f"{stage} ({k.split('/')[0]})"
                        curves[name] = {"psnr_step": c[:, 0].tolist(), "psnr": c[:, 1].tolist()}
                        loss = k.replace("val_psnr", "loss_curve")  # every step's loss (older artifacts: none)
                        if loss in f:
                            c = np.asarray(f[loss][()]).reshape(-1, 2)
                            curves[name].update(step=c[:, 0].tolist(), loss=c[:, 1].tolist())
        except OSError:
            continue
    return {"stages": stages, "gaussians": gaussians, "curves": curves, "training_peak_memory": peak,
            "method": method_name(deform, torso), "model_mb": model_mb(run)}


# What `render` loads: the head (canonical Gaussians + field), the torso, and a2l.h5 for two-stage runs.
MODEL_ARTIFACTS = ("deform", "torso", "a2l")


def model_mb(run) -> float:
    """Size on disk of the trained model a render needs, in MiB."""
    paths = [artifacts.spec(a).path(run) for a in MODEL_ARTIFACTS]
    return round(sum(p.stat().st_size for p in paths if p.exists()) / 2 ** 20, 2)


def method_name(deform_attrs: dict, torso_attrs: dict) -> str:
    """"gstalker" (audio-driven field, Gaussian torso), "two-stage" (landmark field, image torso), or the mix."""
    cond, mode = str(deform_attrs.get("condition", "audio")), str(torso_attrs.get("mode", "gaussian"))
    if (cond, mode) == ("audio", "gaussian"):
        return "gstalker"
    if (cond, mode) == ("landmarks", "image"):
        return "two-stage"
    return f"{cond} field + {mode} torso"


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
    track_attrs = artifacts.read_attrs(run, "track") or {}
    reader = LandmarkReader(str(track_attrs.get("landmark_backend") or "auto"), device)
    syncnet_on = syncnet_status() is None
    try:
        held = _held_out_pass(run, renderer, drive, reader, cfg, device, progress)
        cross = None
        if audio is not None:
            cross = _cross_pass(run, renderer, Path(audio), reader, cfg, device, progress, syncnet_on)
            held["sync"]["cross_driven"] = cross
        drives = [drive_video_figures(run, renderer, v, reader, cfg, device, progress) for v in cfg["drive_videos"]]
    finally:
        reader.close()
    passes = [held] + ([cross] if cross else []) + drives
    model_s = sum(p.pop("model_s") for p in passes)
    n_rendered = sum(p.pop("n_rendered") for p in passes)

    info = training_info(run)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    efficiency = {"train_seconds": sum(info["stages"].values()), "stage_seconds": info["stages"],
                  "gaussians": info["gaussians"], "render_fps": n_rendered / model_s if model_s > 0 else None,
                  "render_frames": n_rendered, "device": device_name(device),
                  "eval_peak_rss_mb": peak_mb, "training_peak_memory": info["training_peak_memory"] or
                  "not recorded by the training stages"}
    if device.startswith("cuda"):
        import torch

        efficiency["eval_peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    figures = _figures(held, cross, drives, info, efficiency, peak_mb, drive, device, syncnet_on)
    a, b = drive.held_out
    result = _finite({
        "run": str(run), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "talkctl_version": __version__, "device": device_name(device), "held_out": [a, b], "size": renderer.size,
        "figures": figures, "head_over_real": held["head"], "full_composite": held["full"], "lip": held["lip"],
        "sync": held["sync"], "drive_videos": drives,
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


def _held_out_pass(run, renderer, drive, reader, cfg, device, progress) -> dict:
    """Render the held-out frames self-driven; image, mouth and sync figures against the real frames."""
    a, b = drive.held_out
    size = renderer.size
    head_figs = ImageFigures(lpips=bool(cfg["lpips"]), device=device)
    full_figs = ImageFigures(lpips=False)
    full_figs.lpips_model, full_figs.lpips_reason = head_figs.lpips_model, head_figs.lpips_reason
    real_mouth, rend_mouth = MouthTrack(reader), MouthTrack(reader)
    n = b - a
    picks = set(np.linspace(0, n - 1, min(int(cfg["report_frames"]), n)).round().astype(int).tolist())
    report_frames, model_s, n_rendered = [], 0.0, 0
    with artifacts.open_for_read(run, "frames") as ff, artifacts.open_for_read(run, "parse") as pf, \
            progress(n, "eval (held-out)") as task:
        def real_frames(idx):
            return np.stack([resize_square(ff["frames"][a + i], size) for i in idx])

        for idx, out, secs in render_batches(renderer, drive, int(cfg["batch"]), real_frames):
            model_s += secs
            n_rendered += len(idx)
            real = out["real"]
            for j, i in enumerate(idx):
                mask = resize_square(pf["labels"][a + i], size, nearest=True) == 1
                head_figs.add(real[j], out["head_over_real"][j], mask if mask.any() else None)
                full_figs.add(real[j], out["full"][j], mask if mask.any() else None)
                if int(i) in picks:
                    report_frames.append({"index": int(a + i), "real": real[j], "rendered": out["head_over_real"][j],
                                          "label": f"frame {a + i}: head over the real frame"})
                    report_frames.append({"index": int(a + i), "real": real[j], "rendered": out["full"][j],
                                          "label": f"frame {a + i}: full composite (torso + head over the plate)"})
            real_mouth.add(real)
            rend_mouth.add(out["full"])
            task.advance(len(idx))

    found = real_mouth.found & rend_mouth.found
    mouth_real, mouth_rend = real_mouth.mouth_open(), rend_mouth.mouth_open()
    lip = {"landmark_backend": reader.backend.name, "frames": n, "frames_with_face_real": int(real_mouth.found.sum()),
           "frames_with_face_rendered": int(rend_mouth.found.sum()), "landmark_input_side": max(size, LANDMARK_SIDE)}
    if found.sum() >= 2:
        lip["lmd"] = lmd(rend_mouth.stacked()[found], real_mouth.stacked()[found], normalise="interocular")
        lip["mouth_corr"] = mouth_open_correlation(mouth_real[found], mouth_rend[found])
        lip["mouth_amp"] = amplitude_ratio(mouth_rend[found], mouth_real[found])
    else:
        lip["lmd"] = lip["mouth_corr"] = lip["mouth_amp"] = None
        lip["reason"] = f"faces found in both real and rendered frames for only {int(found.sum())} of {n} frames"
    sync = {"real_heldout": _sync(mouth_real, drive.wav, real_mouth.found),
            "rendered_heldout": _sync(mouth_rend, drive.wav, rend_mouth.found)}
    return {"head": head_figs.summary(), "full": full_figs.summary(), "lip": lip, "sync": sync,
            "report_frames": report_frames, "mouth_real": mouth_real, "mouth_rend": mouth_rend,
            "model_s": model_s, "n_rendered": n_rendered}


def _cross_pass(run, renderer, audio: Path, reader, cfg, device, progress, syncnet_on: bool) -> dict:
    """Drive the head with new audio: mouth opening vs speech energy, SyncNet where its weights are."""
    cdrive = with_landmarks(run, audio_drive(run, audio, cfg, device), cfg, device)
    out = rendered_mouth(renderer, cdrive, reader, int(cfg["batch"]), progress, "eval (new audio)", keep_frames=syncnet_on)
    cmouth = out["track"]
    cross = {"audio": str(audio.absolute()), "pose": cdrive.pose_description, "frames": cdrive.n_frames,
             "frames_with_face": int(cmouth.found.sum()), **_sync(cmouth.mouth_open(), cdrive.wav, cmouth.found)}
    cross["syncnet"] = _syncnet(out["frames"], cdrive.wav, device)
    return {**cross, "model_s": out["model_s"], "n_rendered": out["n_rendered"]}


def _median(drives: list[dict], key: str):
    vals = [d[key] for d in drives if d.get(key) is not None and math.isfinite(d[key])]
    return float(np.median(vals)) if vals else None


def _figures(held, cross, drives, info, efficiency, peak_mb, drive, device, syncnet_on) -> dict:
    """The flat figures dict of eval.json, the comparison table and the report."""
    hs, fs, lip, sync = held["head"], held["full"], held["lip"], held["sync"]
    stage_peaks = {k.split(":")[0]: v for k, v in info["training_peak_memory"].items() if k.endswith(":peak_rss_mb")}
    main_sync = cross if cross is not None else sync["rendered_heldout"]
    figures = {
        "psnr": hs["psnr"], "psnr_face": hs.get("psnr_face"), "ssim": hs["ssim"], "lpips": hs["lpips"],
        "full_psnr": fs["psnr"], "full_ssim": fs["ssim"], "full_lpips": fs["lpips"],
        "lmd": lip["lmd"], "mouth_corr": lip["mouth_corr"], "mouth_amp": lip.get("mouth_amp"),
        "sync_corr": main_sync.get("corr"), "sync_lag": main_sync.get("lag"),
        "sync_corr_real": sync["real_heldout"].get("corr"),
        **({"xsync_corr": _median(drives, "corr"), "xsync_lag": _median(drives, "best_lag"),
            "xsync_best": _median(drives, "best_corr"), "xsync_amp": _median(drives, "amp"),
            "xsync_drives": len(drives)} if drives else {}),
        "render_fps": efficiency["render_fps"], "peak_memory_mb": peak_mb,
        "train_seconds": efficiency["train_seconds"], "gaussians": info["gaussians"],
        "method": info["method"], "model_mb": info["model_mb"],
        "train_peak_memory_mb": max(stage_peaks.values(), default=None),
        **{f"seconds:{st}": s for st, s in info["stages"].items()},
        **{f"peak_rss_mb:{st}": v for st, v in stage_peaks.items()},
    }
    if hs["lpips"] is None:
        figures["lpips_reason"] = hs.get("lpips_reason")
        figures["full_lpips_reason"] = hs.get("lpips_reason")
    sn = (cross or {}).get("syncnet") if cross else _syncnet([], drive.wav, device) if not syncnet_on else None
    if sn is None:
        sn = {"confidence": None, "offset": None, "reason": "SyncNet is run on cross-driven renders: give --audio FILE"}
    figures["syncnet_confidence"], figures["syncnet_offset"] = sn.get("confidence"), sn.get("offset")
    if sn.get("reason"):
        figures["syncnet_reason"] = sn["reason"]
    return figures


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
    fs = result["full_composite"]
    notes = [f"held-out frames {result['held_out'][0]}..{result['held_out'][1] - 1}, compared at {result['size']} px",
             "headline PSNR / SSIM / LPIPS: the rendered head composited over the real frame; "
             f"full composite (torso + head over the background plate): PSNR {_fmt(fs.get('psnr'), '.2f')} dB, "
             f"SSIM {_fmt(fs.get('ssim'), '.4f')}",
             f"lip sync figure: {result['sync_source']}",
             f"render speed measured on {result['device']}"]
    cross = result["sync"].get("cross_driven")
    if cross:
        notes.append(f"cross-driven audio: {cross['audio']} ({cross['frames']} frames, poses: {cross['pose']})")
    for d in drives:
        notes.append(f"driven by {d['video']} ({d['frames']} frames, poses: {d['pose']}): mouth vs its real speaker "
                     f"corr {_fmt(d['corr'], '.3f')} at lag 0, best {_fmt(d['best_corr'], '.3f')} at lag "
                     f"{_fmt(d['best_lag'], '+d')}, amplitude x{_fmt(d['amp'], '.2f')}" + (f" ({d['reason']})" if d.get("reason") else ""))
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
        "training": info["curves"], "notes": notes,
    }
    write_report(run.file("report.html"), data)


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per run for report.comparison_table; runs named by their folder (the full path when two share a name)."""
    names = [Path(str(r["run"])).name for r in results]
    return [{"run": name if names.count(name) == 1 else str(r["run"]), **r["figures"]} for name, r in zip(names, results)]
