"""What a run's artifacts say about its training: seconds and peak memory per stage, Gaussian
counts, the validation curves (and what each measures), the method and the model's size."""
from __future__ import annotations

import numpy as np

from talkctl import artifacts

# training-time stage -> the artifact whose attrs carry its seconds
STAGE_ARTIFACTS = (("extract-audio", "audio"), ("track", "track"), ("parse", "parse"), ("init-static", "static"),
                   ("train-deform", "deform"), ("train-torso", "torso"), ("train-a2l", "a2l"))  # a2l: two-stage runs only

# what each training curve's PSNR is of, at the training resolution (an artifact's attr val_measure
# says it when it records one), and which of eval's figures is of the same kind
CURVE_MEASURES = {
    "init-static (head)": ("head region, held-out frames", "head"),
    "init-static (torso)": ("torso region, held-out frames", None),
    "train-deform": ("head region, held-out frames", "head"),
    "train-torso": ("model composite, whole frame, held-out frames", "model"),
}


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
                        measure, compare = CURVE_MEASURES[name]
                        measure = str(f.attrs.get("val_measure", measure))
                        curves[name] = {"psnr_step": c[:, 0].tolist(), "psnr": c[:, 1].tolist(), "measure": measure,
                                        "compare": compare}
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
