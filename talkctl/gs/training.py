"""What init-static, train-deform and train-torso share: the held-out split, streamed
frames, the training loop with validation, progress and HDF5 checkpoints (+ --resume).

A stage builds a `Trainable` (its models, optimizers, one-step function, validation) and
hands it to `train(...)`. The loop owns: step counting, validation every `val_every`
steps, the progress bar, checkpoints every `checkpoint_every` steps to
RUN/checkpoints/<name>.h5 (parameters, Adam state, step, torch + numpy RNG, elapsed
time, validation curve; atomic .partial + os.replace), resuming from one (`resume`, only
from a checkpoint with the stage's current fingerprint), and `stop_after` (stop at a step
with a checkpoint written: time-boxed runs and tests). A finished phase also leaves a
checkpoint; the stage drops its checkpoints (`clear_checkpoints`) once its artifact is
written, so an interrupted multi-phase stage (init-static: head, then torso) resumes
where it stopped.

Frames stream from frames.h5 / parse.h5 through `FrameStore`: random access, one HDF5
chunk per frame, downscaled to the training size and kept in an LRU cache of at most
`cache_frames` frames (uint8; a 256^2 RGB frame is 192 KiB, so the default 512 frames
is ~100 MiB per store). Memory does not grow with the clip length. On CUDA the stores keep
every frame on the GPU when they fit (gs.scene.GPU_FRAME_SHARE); frames are decoded on the
host and moved as uint8, and the one-hot labels and resizing are made on the device.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import closing
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from talkctl import h5files
from talkctl.config import AT_LEAST_1, NON_NEGATIVE, Range
from talkctl.curves import Curves
from talkctl.devices import load_torch_rng, save_torch_rng, to_device
from talkctl.errors import StageError
from talkctl.lru import Lru
from talkctl.progress import METRICS_EVERY


# ---- data ------------------------------------------------------------------------
def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B,H,W,C) float -> (B,size,size,C), antialiased."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    y = F.interpolate(x.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.permute(0, 2, 3, 1)


class FrameStore:
    """Per-frame images from an HDF5 dataset (T,S,S,3) uint8 or labels (T,S,S) uint8,
    downscaled to `size` on first use and cached (LRU, at most `cache_frames` frames).

    mode "rgb" -> float (B,size,size,3) in [0,1]; mode "labels" -> float (B,size,size,n_classes)
    soft class masks (area fractions after downscaling)."""

    def __init__(self, dataset, size: int, mode: str = "rgb", n_classes: int = 4, cache_frames: int = 512,
                 device: str = "cpu"):
        self.ds, self.size, self.mode, self.n_classes = dataset, int(size), mode, n_classes
        self.cache_frames, self.device = max(1, int(cache_frames)), device
        self._cache = Lru(self.cache_frames)
        self.reads = 0

    def __len__(self) -> int:
        return self.ds.shape[0]

    def _load(self, i: int) -> torch.Tensor:
        self.reads += 1
        # uint8 to the device first (pinned, non-blocking), then one-hot / resize there
        raw = to_device(np.asarray(self.ds[i]), self.device)
        if self.mode == "rgb":
            x = raw.float()[None] / 255.0
        else:
            x = F.one_hot(raw.long(), self.n_classes).float()[None]
        x = resize_images(x, self.size)[0]
        return (x * 255.0).round().clamp(0, 255).to(torch.uint8)

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        out = []
        for i in (int(j) for j in indices):
            out.append(self._cache.fetch(i, self._load))
        return torch.stack(out).float() / 255.0


def scale_intrinsics(K: np.ndarray | torch.Tensor, from_size: int, to_size: int):
    """Pinhole K in pixels of a from_size^2 image -> the same camera for to_size^2 pixels."""
    s = to_size / from_size
    K = K.clone() if isinstance(K, torch.Tensor) else np.array(K, dtype=np.float32, copy=True)
    K[..., 0, :] *= s
    K[..., 1, :] *= s
    return K


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [0,1]; with a (…,H,W,1) mask, over the masked pixels only."""
    if mask is None:
        mse = float(((a - b) ** 2).mean())
    else:
        w = mask.expand_as(a)
        mse = float((((a - b) ** 2) * w).sum() / w.sum().clamp(min=1e-8))
    return 10.0 * math.log10(1.0 / max(mse, 1e-10))


def spread(idx: np.ndarray, n: int) -> np.ndarray:
    """n evenly spaced members of idx (all when n <= 0 or n >= len(idx))."""
    if n <= 0 or n >= len(idx):
        return idx
    return idx[np.linspace(0, len(idx) - 1, n).round().astype(int)]


def validation_split(train_idx: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames to fit, validation frames): the last `fraction` of the training frames, one
    contiguous stretch (neighbouring frames are near-copies: scattered ones would be no test),
    never the held-out frames. fraction 0: all frames fit, no validation frames."""
    n_val = int(round(float(fraction) * len(train_idx)))
    if n_val <= 0 or n_val >= len(train_idx):
        return train_idx, train_idx[:0]
    return train_idx[:-n_val], train_idx[-n_val:]


def batch_schedule(train_idx: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(train_idx, size=min(batch, len(train_idx)), replace=False)


def exp_lr(step: int, total: int, lr0: float, lr1: float) -> float:
    t = min(max(step / max(total, 1), 0.0), 1.0)
    return math.exp(math.log(lr0) * (1 - t) + math.log(lr1) * t)


# ---- what a stage hands the loop ------------------------------------------------------
class Trainable(Protocol):
    optimizers: dict[str, torch.optim.Optimizer]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every tensor to checkpoint (parameters, buffers, strategy state), flat names."""

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore from `arrays` (sizes may differ from now) and rebuild the optimizers."""

    def step(self, step: int, rng: np.random.Generator) -> dict:
        """One optimisation step; returns metrics for the progress bar (loss, n, ...): tensors may
        stay on the device, the loop reads them every METRICS_EVERY steps."""

    def validate(self) -> float:
        """Held-out PSNR (dB)."""


# ---- checkpoints -------------------------------------------------------------------
def _optimizer_to_h5(group, opt: torch.optim.Optimizer) -> None:
    sd = opt.state_dict()
    group.attrs["param_groups"] = json.dumps(sd["param_groups"])
    for idx, st in sd["state"].items():
        g = group.create_group(str(idx))
        for k, v in st.items():
            g.create_dataset(k, data=(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)))


def _optimizer_from_h5(group) -> dict:
    """An optimizer state_dict read from a checkpoint group."""
    state = {int(idx): {k: torch.as_tensor(group[idx][k][()]) for k in group[idx].keys()} for idx in group.keys()}
    return {"state": state, "param_groups": json.loads(group.attrs["param_groups"])}


class Best:
    """The best validation score so far (higher is better), its step and the trainable's arrays then."""

    def __init__(self):
        self.score, self.step, self.arrays = -math.inf, -1, None

    def update(self, score: float, step: int, trainable: Trainable) -> None:
        if math.isfinite(score) and score > self.score:
            self.score, self.step = float(score), int(step)
            self.arrays = {k: np.array(v, copy=True) for k, v in trainable.arrays().items()}

    def to_h5(self, f) -> None:
        if self.arrays is not None:
            g = f.create_group("best")
            g.attrs.update({"score": self.score, "step": self.step})
            for k, v in self.arrays.items():
                g.create_dataset(k, data=v)

    def from_h5(self, f) -> None:
        if "best" in f:
            g = f["best"]
            self.score, self.step = float(g.attrs["score"]), int(g.attrs["step"])
            self.arrays = {k: g[k][()] for k in g.keys()}


def save_checkpoint(path: Path, *, step: int, fingerprint: str, trainable: Trainable, rng: np.random.Generator,
                    elapsed: float, curve: list, best: Best | None = None) -> None:
    """Atomic and checksummed (h5files.atomic): a damaged checkpoint is found before it is used."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5files.atomic(path) as f:
        f.attrs.update({"step": step, "fingerprint": fingerprint, "elapsed": elapsed,
                        "numpy_rng": json.dumps(rng.bit_generator.state)})
        m = f.create_group("model")
        for k, v in trainable.arrays().items():
            m.create_dataset(k, data=v)
        o = f.create_group("optimizers")
        for name, opt in trainable.optimizers.items():
            _optimizer_to_h5(o.create_group(name), opt)
        save_torch_rng(f)
        f.create_dataset("val_curve", data=np.asarray(curve, dtype=np.float64).reshape(-1, 2))
        if best is not None:
            best.to_h5(f)


def load_checkpoint(path: Path, trainable: Trainable, rng: np.random.Generator,
                    best: Best | None = None) -> tuple[int, float, list]:
    """Everything is read before anything is restored, so a file that fails to read leaves
    `trainable` and `best` as they were (training then starts afresh)."""
    import h5py

    with h5py.File(path, "r") as f:
        kept = Best()
        kept.from_h5(f)
        arrays = {k: f["model"][k][()] for k in f["model"].keys()}
        optimizers = {name: _optimizer_from_h5(f["optimizers"][name]) for name in trainable.optimizers}
        numpy_rng = json.loads(f.attrs["numpy_rng"])
        curve = [tuple(r) for r in f["val_curve"][()].tolist()]
        step, elapsed = int(f.attrs["step"]), float(f.attrs["elapsed"])
        load_torch_rng(f)
    trainable.load_arrays(arrays)
    for name, opt in trainable.optimizers.items():
        opt.load_state_dict(optimizers[name])
    rng.bit_generator.state = numpy_rng
    if best is not None:
        best.__dict__.update(kept.__dict__)
    return step, elapsed, curve


def resume(ctx, name: str, ckpt: Path, trainable: Trainable, rng: np.random.Generator,
           best: Best | None = None) -> tuple[int, float, list]:
    """(step, elapsed, curve) from the stage's checkpoint, or (0, 0, []) to start afresh: none
    there, one made with other inputs or settings, or a damaged one (discarded with a warning)."""
    if not ckpt.exists():
        ctx.log.info("%s: no checkpoint at %s; starting afresh", name, ckpt)
        return 0, 0.0, []
    problem = h5files.verify_path(ckpt)
    if problem is None and checkpoint_fingerprint(ckpt) != ctx.fingerprint:
        ctx.log.warning("%s: checkpoint %s was made with other inputs or settings; starting afresh", name, ckpt)
        return 0, 0.0, []
    if problem is None:
        try:
            start, elapsed, curve = load_checkpoint(ckpt, trainable, rng, best)
            ctx.log.info("%s: resumed from %s at step %d", name, ckpt, start)
            return start, elapsed, curve
        except (OSError, RuntimeError, KeyError, ValueError) as exc:  # made before checksums, damaged
            problem = f"unreadable ({str(exc).splitlines()[0][:120]})"
    ctx.log.warning("%s: checkpoint %s is damaged (%s); discarded, starting afresh", name, ckpt, problem)
    ckpt.unlink(missing_ok=True)
    return 0, 0.0, []


def checkpoint_fingerprint(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs["fingerprint"])
    except (OSError, KeyError):
        return None


# ---- the loop ------------------------------------------------------------------------
TRAIN_DEFAULTS = {
    "seed": 0,
    "resume": False,
    "checkpoint_every": 500,
    "val_every": 250,
    "stop_after": 0,          # stop after this many steps with a checkpoint (0 = run to the end)
    "cache_frames": 512,
    # GPU speed-ups, off by default (measured per clip with bench/gpu_check.sh before turning on):
    "fused_adam": False,      # CUDA: Adam as one fused kernel for all parameters (ignored on CPU)
    "compile": False,         # torch.compile the deformation fields (first steps pay the compile)
}
TRAIN_RANGES = {"seed": Range(0, 2**32 - 1), "checkpoint_every": NON_NEGATIVE, "val_every": AT_LEAST_1,
                "stop_after": NON_NEGATIVE, "cache_frames": AT_LEAST_1}
TRAIN_NON_SEMANTIC = {"resume", "checkpoint_every", "val_every", "stop_after", "cache_frames", "fused_adam",
                      "compile"}


def adam(params, cfg: dict, **kw) -> torch.optim.Adam:
    """Adam with the fused CUDA kernel when cfg["fused_adam"] asks for it and every parameter is
    on CUDA (the optimizer state layout is the same, so density control edits it as usual)."""
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(cfg.get("fused_adam")) and bool(tensors) and all(p.is_cuda for p in tensors)
    return torch.optim.Adam(params, fused=True, **kw) if fused else torch.optim.Adam(params, **kw)


def compiled(module, cfg: dict):
    """torch.compile(module) when cfg["compile"] (dynamic shapes: density control changes N);
    the module itself is kept for its state_dict."""
    return torch.compile(module, dynamic=True) if cfg.get("compile") else module


def keep_best_start(cfg: dict) -> int | None:
    """train-deform's first step whose weights may be kept (None: keep the last step's). Not the start: the
    untrained field is the static head, whose neutral mouth can out-score a talking one in PSNR
    on unseen frames (german_20s: 30.2 dB at step 0 against 29.3-30.0 after)."""
    if not cfg["keep_best"] or float(cfg["val_fraction"]) <= 0:
        return None
    return max(1, int(round(float(cfg["keep_best_from"]) * int(cfg["iterations"]))))


def train(ctx, name: str, trainable: Trainable, iterations: int, cfg: dict, *, description: str | None = None,
          keep_best_from: int | None = None) -> dict:
    """Run (or resume) `iterations` steps. Returns {val_curve, val_psnr, seconds, steps, best_step,
    best_psnr}. keep_best_from (a step): the trainable ends with the arrays of its best validation at
    that step or later (trainable.validate must then score frames it does not train on; earlier steps
    are no candidates: an untrained deformation field keeps the static head, which a PSNR can prefer
    to a talking one), kept in the checkpoints too. None: the last step's arrays."""
    ckpt = ctx.run.path / "checkpoints" / f"{name}.h5"
    rng = np.random.default_rng(int(cfg["seed"]))
    best = Best() if keep_best_from is not None else None
    start, elapsed, curve = resume(ctx, name, ckpt, trainable, rng, best) if cfg.get("resume") else (0, 0.0, [])
    val_every = max(1, int(cfg["val_every"]))
    ck_every = int(cfg["checkpoint_every"])
    stop_after = int(cfg.get("stop_after") or 0)
    t0 = time.time() - elapsed

    def save(step: int, seconds: float) -> None:
        save_checkpoint(ckpt, step=step, fingerprint=ctx.fingerprint, trainable=trainable, rng=rng,
                        elapsed=seconds, curve=curve, best=best)

    curves = Curves(ctx.run, name, ctx.log)
    if not curve:  # the starting point, so the curve shows what training gained
        curve.append((0, trainable.validate()))
        curves.scalars(0, {"psnr": curve[0][1]}, prefix="val")
        if best is not None and keep_best_from <= 0:
            best.update(curve[0][1], 0, trainable)
    val = curve[-1][1]
    losses = []  # (step, training loss): the report's loss chart
    with ctx.progress(iterations, description or name) as task, closing(curves):
        if start:
            task.advance(start)
        for step in range(start, iterations):
            metrics = trainable.step(step, rng)
            done = step + 1
            validating = done % val_every == 0 or done == iterations
            reading = validating or done % METRICS_EVERY == 0 or done == start + 1
            loss = metrics.get("loss")  # every step's where reading it waits for nothing (CPU)
            if loss is not None and (reading or not (torch.is_tensor(loss) and loss.is_cuda)):
                losses.append((done, float(loss)))
            if reading:
                metrics = {k: float(v) if torch.is_tensor(v) else v for k, v in metrics.items()}
                curves.scalars(done, metrics)
                curves.learning_rates(done, _optimizers(trainable))
                if validating:
                    val = trainable.validate()
                    curve.append((done, val))
                    curves.scalars(done, {"psnr": val}, prefix="val")
                    if best is not None and done >= keep_best_from:
                        best.update(val, done, trainable)
                    if hasattr(trainable, "preview"):
                        curves.image_pair(done, *trainable.preview())
                    ctx.log.info("%s step %d: validation PSNR %.2f dB, %s", name, done, val, ", ".join(
                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
                task.advance(1, **metrics, psnr=val)
            else:
                task.advance(1)  # metrics stay on the device: reading a loss waits for the GPU
            if done < iterations and ((ck_every and done % ck_every == 0) or done == stop_after):
                save(done, time.time() - t0)
            if done == stop_after and done < iterations:
                raise StageError(f"{name} stopped at step {done} (stop_after); rerun with --resume to continue")
    seconds = time.time() - t0
    if ck_every and start < iterations:
        # a finished phase stays resumable until the stage has written its artifact
        # (init-static trains head then torso: a crash in the torso keeps the head)
        save(iterations, seconds)
    res = {"val_curve": curve, "val_psnr": val, "seconds": seconds, "steps": iterations,
           "loss_curve": bucket_means(losses), "best_step": iterations, "best_psnr": val}
    if best is not None and best.arrays is not None:
        if best.step != iterations:
            trainable.load_arrays(best.arrays)
            ctx.log.info("%s: keeping the weights of step %d (validation PSNR %.2f dB; %.2f dB at the end)",
                         name, best.step, best.score, val)
        res.update(best_step=best.step, best_psnr=best.score)
    return res


def bucket_means(points: list[tuple[int, float]], n: int = 200) -> list[tuple[int, float]]:
    """At most n (last step, mean loss) pairs: a per-step loss curve small enough to store and plot."""
    if not points:
        return []
    a = np.asarray(points, np.float64)
    edges = np.linspace(0, len(a), min(n, len(a)) + 1).astype(int)
    return [(float(a[j - 1, 0]), float(a[i:j, 1].mean())) for i, j in zip(edges[:-1], edges[1:])]


def write_curves(group, res: dict) -> None:
    """A training phase's curves into its artifact group: val_psnr (held-out PSNR every val_every
    steps) and loss_curve (training loss, bucket means over the steps run since the last (re)start:
    every step on a CPU, every METRICS_EVERY steps on a GPU)."""
    group.create_dataset("val_psnr", data=np.asarray(res["val_curve"], dtype=np.float64).reshape(-1, 2))
    if res.get("loss_curve"):
        group.create_dataset("loss_curve", data=np.asarray(res["loss_curve"], dtype=np.float64).reshape(-1, 2))


def _optimizers(trainable) -> dict:
    opts = trainable.optimizers
    return opts() if callable(opts) else opts


def clear_checkpoints(ctx, names) -> None:
    """Drop the stage's checkpoints once its artifact is written."""
    for name in names:
        (ctx.run.path / "checkpoints" / f"{name}.h5").unlink(missing_ok=True)
