"""Stage `train-a2l`: audio features -> the subject's landmark motion (a2l.h5).

First half of the decoupled two-stage method (Ma, Cao, Zhang, CVM 2025): a Transformer
(a2l_model.py) maps the per-frame audio windows of audio.h5 to per-frame offsets of the
moving landmarks (mouth, jaw, eyelids) from the subject's neutral face, in the canonical
pose-free head space of track.h5 (canonical_landmarks.py). It is trained on the subject's
own clip, frames before the held-out last 1/11, with a landmark loss plus a velocity loss
(differences between consecutive frames), and scored on the held-out frames: mouth
landmark distance (normalised by the inter-ocular distance, as metrics.lmd) and the
correlation of the predicted mouth opening with the tracked one.

a2l.h5 keeps everything head.a2l_predict (new audio: landmarks_for_audio, load_predictor) needs: weights,
basis, channels, landmark indices, neutral face. The clip's sound is realigned as train-deform's (av_offset).
Checkpoints: RUN/checkpoints/a2l.h5.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl import artifacts, h5files
from talkctl.audio.av_offset import aligned_clip_audio, resolve_setting as resolve  # av_offset checked up front
from talkctl.audio.recipe import speech_activity
from talkctl.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range
from talkctl.curves import Curves
from talkctl.devices import load_torch_rng, save_torch_rng, to_device
from talkctl.errors import ArtifactError, StageError, UsageError
from talkctl.face.canonical import TRACK_FIELDS
from talkctl.head.a2l_predict import amplitude_attrs, full_landmarks
from talkctl.progress import METRICS_EVERY

VERSION = 1
DEFAULTS = {
    "iterations": 2000,
    "batch": 16,            # sequences per step
    "seq_len": 48,          # frames per training sequence (~2 s)
    "lr": 5e-4,
    "lr_final": 5e-5,       # exponential decay to this
    "weight_decay": 0.05,
    "d_model": 128,
    "layers": 2,
    "heads": 4,
    "ff_mult": 2,
    "dropout": 0.3,
    "conv_channels": 64,
    "formants": True,       # use the formant channels of the features (ablation switch)
    "parts": ["mouth", "jaw", "eyes"],
    "alignment": "auto",    # pose removal: auto | lift-2d | procrustes (canonical_landmarks.py)
    "pca_components": 16,   # predict in a PCA basis of the subject's offsets (0: plain coordinates)
    "pca_variance": 0.999,
    "loss": "l1",           # l1 | l2 landmark loss (in inter-ocular units)
    "velocity_weight": 1.0,
    "feature_noise": 1.0,   # std of Gaussian noise added to the (normalised) features in training
    "amplitude": "utterance",  # render scales each audio's lip gap to the subject's spread (a2l_predict) | calibrated
    "av_offset": None,      # None/auto: a clip >= 0.1 s out of sync is realigned (audio.av_offset) | seconds
    "val_fraction": 0.1,    # the last part of the training frames picks the model (early stopping); 0: off
    "patience": 5,          # evaluations without a better validation mouth LMD before stopping; 0: never
    "eval_every": 100,
    "checkpoint_every": 500,
    "resume": False,
    "seed": 0,
}
PRESETS = {
    "tiny": {"iterations": 300, "d_model": 64, "layers": 2, "seq_len": 32, "batch": 8, "eval_every": 50},
    # one voice's 20-60 s: a small model generalises better (bench/results/a2l_offline_s6.json, cross +0.07)
    "fast": {"iterations": 1000, "d_model": 32, "layers": 1},
    "paper": {"iterations": 4000, "d_model": 256, "layers": 4, "seq_len": 64},  # ~12 s on an H100 (assumed)
}
NON_SEMANTIC = {"resume", "eval_every", "checkpoint_every"}
RANGES = {**dict.fromkeys(("iterations", "batch", "d_model", "layers", "heads", "ff_mult", "conv_channels",
                           "eval_every"), AT_LEAST_1), "seq_len": Range(2, 4096), "lr": POSITIVE, "lr_final": POSITIVE,
          **dict.fromkeys(("weight_decay", "pca_components", "velocity_weight", "feature_noise", "patience",
                           "checkpoint_every"), NON_NEGATIVE), "dropout": Range(0, 0.95), "pca_variance": Range(0, 1, True),
          "val_fraction": Range(0, 0.5), "seed": Range(0, 2**32 - 1), "av_offset": Range(-1, 1)}

MIN_TRAIN_FRAMES = 8
MIN_VAL_FRAMES = 25  # 1 s: fewer cannot tell a better model from noise
MAX_GAIN = 2.0  # the most the spread calibration may widen the predicted motion
# Regularisation defaults (dropout 0.3, feature noise 1.0, weight decay 0.05, 16 PCA components)
# come from a small sweep on french_50s (1145 training frames), where the model overfits
# after a few hundred steps: held-out mouth LMD 0.0184 -> 0.0163 (dropout 0.1, no noise,
# weight decay 1e-4 -> the defaults), mouth-opening correlation 0.67 -> 0.81.


# ---- data --------------------------------------------------------------------------
@dataclass
class A2LData:
    features: np.ndarray     # (T, W, D') selected channels
    channels: np.ndarray     # (D',) indices into the extractor's D channels
    feature_names: list[str]
    targets: np.ndarray      # (T, P, 3) offsets from the neutral face, canonical units
    points: np.ndarray       # (T, L, 3) canonical landmarks
    neutral: np.ndarray      # (L, 3)
    indices: np.ndarray      # (P,) landmark indices predicted
    valid: np.ndarray        # (T,)
    n_landmarks: int
    iod: float               # inter-ocular distance of the neutral face
    held_start: int
    info: dict
    speech: np.ndarray | None = None  # (T,) speech activity of the clip's audio (audio.recipe.speech_activity)


def prepare(audio, track, cfg: dict, log=None) -> A2LData:
    """Inputs of the stage from an open audio.h5 and track.h5's arrays (artifacts.Track)."""
    from talkctl.timebase import held_out_start
    from talkctl.head.a2l_model import input_channels
    from talkctl.face.canonical import canonical_landmarks, interocular, moving_indices, neutral_shape

    feats = audio["features"]
    names = json.loads(audio.attrs.get("feature_names", "[]")) or [f"f{i}" for i in range(feats.shape[-1])]
    if len(names) != feats.shape[-1]:
        raise ArtifactError(f"audio.h5 lists {len(names)} feature names for {feats.shape[-1]} channels: "
                            "rerun `talkctl extract-audio --force`")
    channels = input_channels(names, bool(cfg["formants"]))
    if cfg["alignment"] not in ("auto", "lift-2d", "procrustes"):
        raise UsageError(f"train-a2l alignment={cfg['alignment']!r}: use auto, lift-2d or procrustes")
    lm = canonical_landmarks(track, method=cfg["alignment"])
    T_audio, T_track = feats.shape[0], lm.points.shape[0]
    T = min(T_audio, T_track)
    if abs(T_audio - T_track) > 25:
        raise StageError(f"audio.h5 has {T_audio} frames but track.h5 has {T_track} (more than 1 s apart): "
                         "they come from different media; rerun extract-audio and track on the same video")
    if T_audio != T_track and log:
        log.info("audio has %d frames, track %d: using the first %d", T_audio, T_track, T)
    held = held_out_start(T)
    if held < MIN_TRAIN_FRAMES:
        raise StageError(f"only {held} training frames ({T} in all): train-a2l needs a clip of a few seconds at least")
    audio_in = aligned_clip_audio(audio, track["mouth_open"] if "mouth_open" in track else None, track["valid"],
                                  cfg["av_offset"], log)
    x = audio_in.features[:T][..., channels]
    points = lm.points[:T]
    valid = lm.valid[:T]
    neutral = neutral_shape(points, valid, np.arange(held))
    try:
        idx = moving_indices(lm.n, tuple(cfg["parts"]), rigid=lm.rigid)
    except ValueError as exc:
        raise UsageError(f"train-a2l parts: {exc}") from None
    iod = float(interocular(neutral, lm.n))
    targets = points[:, idx] - neutral[idx]
    info = {"frames": int(T), "train_frames": int(held), "heldout_frames": int(T - held),
            "landmarks": int(len(idx)), "input_dim": int(len(channels)), "feature_dim": int(feats.shape[-1]),
            "alignment": lm.method, "rigid_rms_median": float(np.median(lm.rigid_rms[:T]) / max(iod, 1e-9)),
            **audio_in.attrs()}
    speech = speech_activity(audio_in.wav, T) if audio_in.wav is not None else None
    return A2LData(x, channels, names, targets.astype(np.float32), points, neutral, idx, valid, lm.n, iod, held, info,
                   speech)


# ---- metrics -----------------------------------------------------------------------
def heldout_metrics(pred_offsets: np.ndarray, data: A2LData, frames: slice | None = None) -> dict:
    """Mouth LMD (/ inter-ocular distance) and mouth-opening correlation on the held-out frames
    (or `frames`), and the same LMD for the predict-the-neutral-face baseline."""
    from talkctl.metrics.lipsync import lmd, pearson
    from talkctl.face.canonical import mouth_opening, part_positions

    h = frames if frames is not None else slice(data.held_start, None)
    truth = data.targets[h]
    mouth = part_positions(data.indices, data.n_landmarks, "mouth")
    all_lmd = float(np.linalg.norm(pred_offsets - truth, axis=-1).mean() / data.iod)
    if len(mouth) == 0:
        return {"all_lmd": all_lmd}

    def mouth_lmd(off):
        d = np.linalg.norm(off[:, mouth] - truth[:, mouth], axis=-1).mean(1)
        return float(d.mean() / data.iod)

    full_pred = full_landmarks(data.neutral, data.indices, pred_offsets)
    gap_pred = mouth_opening(full_pred, data.n_landmarks)
    gap_true = mouth_opening(data.points[h], data.n_landmarks)
    return {
        "mouth_lmd": mouth_lmd(pred_offsets),
        "mouth_lmd_baseline": mouth_lmd(np.zeros_like(truth)),
        # the eval-protocol figure: 2D (x, y) mouth distance in canonical space, per-frame IOD
        "mouth_lmd_2d": lmd(full_pred, data.points[h], mouth=tuple(int(i) for i in data.indices[mouth])),
        "mouth_open_corr": pearson(gap_pred, gap_true),
        "all_lmd": all_lmd,
    }


def validation_frames(data: A2LData, cfg: dict) -> int:
    """How many of the last training frames are held back to pick the model (0: no early stopping)."""
    n = int(round(float(cfg["val_fraction"]) * data.held_start))
    return 0 if n < MIN_VAL_FRAMES or data.held_start - n < MIN_TRAIN_FRAMES else n


def selection_score(m: dict) -> float:
    """What early stopping minimises: mouth LMD, or the LMD of all predicted points without a mouth."""
    return float(m.get("mouth_lmd", m["all_lmd"]))


def jitter(offsets: np.ndarray) -> float:
    """Mean magnitude of the frame-to-frame acceleration (second difference) of offsets."""
    if len(offsets) < 3:
        return 0.0
    return float(np.linalg.norm(np.diff(offsets, n=2, axis=0), axis=-1).mean())


# ---- checkpoints (named datasets, never pickles) -----------------------------------------
def _save_checkpoint(path: Path, model, opt, step: int, rng: np.random.Generator, fingerprint: str, curve: dict,
                     running: list, best: "Best"):
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5files.atomic(path) as f:  # checksummed: a damaged checkpoint is found before it is used
        g = f.create_group("model")
        for k, v in model.state_dict().items():
            g.create_dataset(k, data=v.detach().cpu().numpy())
        o = f.create_group("optimizer")
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                o.create_dataset(f"{pid}/{k}", data=v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v))
        c = f.create_group("curve")
        for k, v in curve.items():
            c.create_dataset(k, data=np.asarray(v, np.float64))
        f.create_dataset("running_loss", data=np.asarray(running, np.float64))  # since the last curve point
        b = f.create_group("best")
        b.attrs.update({"score": best.score, "step": best.step, "bad": best.bad})
        for k, v in (best.state or {}).items():
            b.create_dataset(k, data=v.numpy())
        save_torch_rng(f)
        f.attrs.update({"numpy_rng": json.dumps(rng.bit_generator.state), "step": step, "fingerprint": fingerprint})


def _load_checkpoint(path: Path, model, opt, rng: np.random.Generator, fingerprint: str, best: "Best", log=None):
    """(step, curve, running losses) from a checkpoint of the same fingerprint, or None; fills
    `best`. A damaged checkpoint is discarded with a warning (training starts afresh)."""
    import h5py
    import torch

    if not path.exists():
        return None
    if problem := h5files.verify_path(path):
        if log:
            log.warning("checkpoint %s is damaged (%s); discarded, starting afresh", path, problem)
        path.unlink(missing_ok=True)
        return None
    with h5py.File(path, "r") as f:
        if f.attrs.get("fingerprint") != fingerprint:
            return None
        model.load_state_dict({k: torch.from_numpy(f["model"][k][()]) for k in f["model"]})
        sd = opt.state_dict()
        for pid in f["optimizer"]:
            sd["state"][int(pid)] = {k: torch.as_tensor(f["optimizer"][pid][k][()]) for k in f["optimizer"][pid]}
        opt.load_state_dict(sd)
        load_torch_rng(f)
        rng.bit_generator.state = json.loads(f.attrs["numpy_rng"])
        curve = {k: f["curve"][k][()].tolist() for k in f["curve"]}
        b = f["best"]
        best.score, best.step, best.bad = float(b.attrs["score"]), int(b.attrs["step"]), int(b.attrs["bad"])
        best.state = {k: torch.from_numpy(b[k][()]) for k in b} or None
        return int(f.attrs["step"]), curve, f["running_loss"][()].tolist()


@dataclass
class Best:
    """Early stopping: the best validation score so far, its step and weights, evaluations since."""
    score: float = math.inf
    step: int = 0
    bad: int = 0
    state: dict | None = None

    def update(self, score: float, step: int, model) -> None:
        if score < self.score:
            self.score, self.step, self.bad = score, step, 0
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.bad += 1


# ---- training ------------------------------------------------------------------------
def build_model(data: A2LData, cfg: dict):
    from talkctl.head.a2l_model import AudioToLandmarks, offset_basis

    P = len(data.indices)
    train = data.targets[: data.held_start][data.valid[: data.held_start]]
    if len(train) < 2:
        train = data.targets[: data.held_start]
    basis, binfo = offset_basis(train.reshape(len(train), P * 3), int(cfg["pca_components"]), float(cfg["pca_variance"]))
    model = AudioToLandmarks(in_dim=data.features.shape[-1], window=data.features.shape[1], n_coeffs=basis.shape[0],
                             out_dim=P * 3, d_model=int(cfg["d_model"]), layers=int(cfg["layers"]),
                             heads=int(cfg["heads"]), ff_mult=int(cfg["ff_mult"]), dropout=float(cfg["dropout"]),
                             conv_channels=int(cfg["conv_channels"]))
    model.set_basis(basis)
    return model, binfo


def train_model(data: A2LData, cfg: dict, *, device: str = "cpu", progress=None, log=None,
                checkpoint: Path | None = None, fingerprint: str = "", stop_after: int | None = None, curves=None):
    """Train on frames [0, held_start): sequences from the first part, the last `val_fraction` picks
    the model and stops training after `patience` evaluations without improvement. Returns
    (model at its best validation step, curve dict, basis info)."""
    import torch

    if int(cfg["d_model"]) % int(cfg["heads"]):
        raise UsageError(f"train-a2l d_model={cfg['d_model']} must be a multiple of heads={cfg['heads']}")
    if cfg["loss"] not in ("l1", "l2"):
        raise UsageError(f"train-a2l loss={cfg['loss']!r}: use l1 or l2")
    torch.manual_seed(int(cfg["seed"]))
    rng = np.random.default_rng(int(cfg["seed"]))
    model, binfo = build_model(data, cfg)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    iters = int(cfg["iterations"])
    n_val = validation_frames(data, cfg)
    n_train = data.held_start - n_val
    val = slice(n_train, data.held_start)
    L = min(int(cfg["seq_len"]), n_train)
    X = torch.as_tensor(data.features[:n_train], dtype=torch.float32, device=device)
    Y = torch.as_tensor(data.targets[:n_train].reshape(n_train, -1), dtype=torch.float32, device=device) / data.iod
    M = torch.as_tensor(data.valid[:n_train], dtype=torch.float32, device=device)
    P = len(data.indices)
    curve = {"step": [], "train_loss": [], "heldout_mouth_lmd": [], "val_score": []}
    start, running, best = 0, [], Best()
    patience = int(cfg["patience"])
    if checkpoint is not None and cfg.get("resume"):
        got = _load_checkpoint(checkpoint, model, opt, rng, fingerprint, best, log)
        if got is not None:
            start, curve, running = got
            if log:
                log.info("resumed from %s at step %d", checkpoint, start)
    vw, noise = float(cfg["velocity_weight"]), float(cfg["feature_noise"])
    ar = torch.arange(L, device=device)

    def dist(a, b):  # per-point distance (l1: Euclidean distance of each landmark; l2: squared)
        d = (a - b).reshape(*a.shape[:-1], P, 3)
        return d.norm(dim=-1) if cfg["loss"] == "l1" else (d ** 2).sum(-1)

    from talkctl.progress import null_progress

    with (progress or null_progress)(iters, "train-a2l") as task:
        if start:
            task.advance(start)
        for step in range(start, iters):
            if stop_after is not None and step >= stop_after:
                break
            model.train()
            lr = math.exp(math.log(float(cfg["lr"])) * (1 - step / max(iters, 1)) +
                          math.log(float(cfg["lr_final"])) * step / max(iters, 1))
            for g in opt.param_groups:
                g["lr"] = lr
            s = to_device(rng.integers(0, n_train - L + 1, size=int(cfg["batch"])), device)
            rows = s[:, None] + ar[None]
            xb, yb, mb = X[rows], Y[rows], M[rows]
            if noise > 0:
                xb = xb + noise * torch.randn_like(xb)
            pred = model(xb) / data.iod
            loss_lm = (dist(pred, yb).mean(-1) * mb).sum() / mb.sum().clamp(min=1)
            loss = loss_lm
            if vw > 0 and L > 1:
                mv = mb[:, 1:] * mb[:, :-1]
                lv = (dist(pred[:, 1:] - pred[:, :-1], yb[:, 1:] - yb[:, :-1]).mean(-1) * mv).sum() / mv.sum().clamp(min=1)
                loss = loss + vw * lv
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            running.append(loss_lm.detach())  # read on the host only when needed (a GPU sync)
            done = step + 1
            if done % int(cfg["eval_every"]) == 0 or done == iters:
                m = heldout_metrics(predict_offsets(model, data, cfg, device), data)
                curve["step"].append(done)
                curve["train_loss"].append(float(np.mean([float(r) for r in running])))
                curve["heldout_mouth_lmd"].append(m.get("mouth_lmd", float("nan")))
                if n_val:
                    score = selection_score(heldout_metrics(predict_offsets(model, data, cfg, device, val), data, val))
                    curve["val_score"].append(score)
                    best.update(score, done, model)
                running = []
                _report(done, curve, n_val, opt, curves, log)
            stop = n_val > 0 and patience > 0 and best.bad >= patience
            if checkpoint is not None and (done % int(cfg["checkpoint_every"]) == 0 or done == iters or stop
                                           or (stop_after is not None and done == stop_after)):
                running = [float(r) for r in running]
                _save_checkpoint(checkpoint, model, opt, done, rng, fingerprint, curve, running, best)
            if done % METRICS_EVERY == 0 or done == iters:
                task.advance(1, loss=round(float(loss.detach()), 4))
            else:
                task.advance(1)
            if stop:
                if log:
                    log.info("early stop at step %d: no better validation score in %d evaluations since step %d",
                             done, patience, best.step)
                break
    if best.state is not None:
        model.load_state_dict(best.state)
    return model, curve, binfo


def _report(done: int, curve: dict, n_val: int, opt, curves, log) -> None:
    """The evaluation just made, to the training curves and the log."""
    if curves is not None:
        curves.scalars(done, {k: v[-1] for k, v in curve.items() if k != "step" and v}, prefix="val")
        curves.learning_rates(done, {"adamw": opt})
    if log:
        log.info("step %d loss %.4f held-out mouth LMD %.4f validation %.4f", done, curve["train_loss"][-1],
                 curve["heldout_mouth_lmd"][-1], curve["val_score"][-1] if n_val else float("nan"))


def predict_offsets(model, data: A2LData, cfg: dict, device: str = "cpu", frames: slice | None = None) -> np.ndarray:
    """Held-out (default) offsets (T', P, 3) predicted from the held-out features alone."""
    from talkctl.head.a2l_model import predict_sequence

    sel = frames if frames is not None else slice(data.held_start, None)
    flat = predict_sequence(model, data.features[sel], int(cfg["seq_len"]), device)
    return flat.reshape(len(flat), -1, 3)


# ---- the stage -------------------------------------------------------------------------
def run(ctx, cfg: dict) -> dict:
    import torch

    t0 = time.perf_counter()
    track = artifacts.read_track(ctx.run, (*TRACK_FIELDS, "mouth_open"))
    with ctx.read("audio") as fa:
        data = prepare(fa, track, cfg, ctx.log)
        extractor = str(fa.attrs.get("extractor", ""))
    backend = str(track.attrs.get("landmark_backend", ""))
    ctx.use_backend("audio-features", extractor)
    if backend:
        ctx.use_backend("landmarks", backend)
    if not cfg["formants"] and data.features.shape[-1] == len(data.feature_names):
        ctx.log.warning("formants=false but the %s features have no formant channels: nothing dropped", extractor)
    if ctx.device == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    ckpt = ctx.run.path / "checkpoints" / "a2l.h5"
    with closing(Curves(ctx.run, "train-a2l", ctx.log)) as curves:
        model, curve, binfo = train_model(data, cfg, device=ctx.device, progress=ctx.progress, log=ctx.log,
                                          checkpoint=ckpt, fingerprint=ctx.fingerprint, curves=curves)
    gain = spread_calibration(model, data, cfg, ctx.device)
    held_pred = gain * predict_offsets(model, data, cfg, ctx.device)
    metrics = heldout_metrics(held_pred, data)
    metrics["jitter"] = jitter(held_pred) / data.iod
    metrics["jitter_truth"] = jitter(data.targets[data.held_start:]) / data.iod
    steps = {"steps_trained": int(curve["step"][-1]) if curve["step"] else 0,
             "selected_step": int(curve["step"][int(np.argmin(curve["val_score"]))]) if curve["val_score"]
             else (int(curve["step"][-1]) if curve["step"] else 0),
             "validation_frames": validation_frames(data, cfg)}
    train_seconds = time.perf_counter() - t0
    with ctx.write("a2l") as f:
        write_model(f, model, data, cfg, binfo, extractor)
        f.create_dataset("heldout_offsets", data=held_pred)
        c = f.create_group("curve")
        for k, v in curve.items():
            c.create_dataset(k, data=np.asarray(v, np.float64))
        f.attrs.update({"metrics": json.dumps(metrics), "held_start": data.held_start, "train_seconds": train_seconds,
                        "gain": gain, **steps, **{k: v for k, v in data.info.items() if k.startswith("av_offset")}})
    ckpt.unlink(missing_ok=True)  # only for resuming an unfinished stage: a2l.h5 holds the result
    info = {k: round(v, 4) if isinstance(v, float) else v for k, v in data.info.items()}
    return {**{k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}, **info,
            "formants": bool(cfg["formants"]), "pca_components": binfo["components"], "gain": round(gain, 3),
            "iterations": int(cfg["iterations"]), **steps}


def spread_calibration(model, data: A2LData, cfg: dict, device: str) -> float:
    """The gain (head.mouth_state.spread_gain) that makes the predicted offsets on the validation
    frames spread as far as the tracked ones; 1 without validation frames. a2l_predict applies it."""
    from talkctl.head.mouth_state import spread_gain

    n = validation_frames(data, cfg)
    if n == 0:
        return 1.0
    val = slice(data.held_start - n, data.held_start)
    pred = predict_offsets(model, data, cfg, device, frames=val).reshape(n, -1)
    speech = None if data.speech is None else data.speech[val]
    return spread_gain(pred, data.targets[val].reshape(n, -1), speech, MAX_GAIN)


def closed_offsets(data: A2LData) -> np.ndarray:
    """(P,3) the closed mouth: mean offsets of the training frames with the smallest lip gap
    (head.mouth_state.CLOSED_QUANTILE); what a2l_predict gives in pauses."""
    from talkctl.face.canonical import mouth_opening
    from talkctl.head.mouth_state import CLOSED_QUANTILE

    gap = mouth_opening(data.points[: data.held_start], data.n_landmarks)
    shut = np.nonzero(gap <= np.quantile(gap, CLOSED_QUANTILE))[0]
    return data.targets[shut].mean(0).astype(np.float32)


def write_model(f, model, data: A2LData, cfg: dict, binfo: dict, extractor: str) -> None:
    g = f.create_group("weights")
    for k, v in model.state_dict().items():
        g.create_dataset(k, data=v.detach().cpu().numpy())
    f.create_dataset("channels", data=data.channels)
    f.create_dataset("landmark_indices", data=data.indices)
    f.create_dataset("neutral", data=data.neutral)
    f.create_dataset("closed", data=closed_offsets(data))
    f.attrs.update({
        "model": json.dumps(model.hparams), "seq_len": int(cfg["seq_len"]), "formants": bool(cfg["formants"]),
        "feature_names": json.dumps(data.feature_names), "feature_dim": len(data.feature_names),
        "window": int(data.features.shape[1]), "extractor": extractor, "n_landmarks": int(data.n_landmarks),
        "interocular": data.iod, "basis": json.dumps(binfo), "parts": json.dumps(list(cfg["parts"])),
        **amplitude_attrs(cfg["amplitude"], data.points, data.n_landmarks, data.speech, data.held_start),
    })
