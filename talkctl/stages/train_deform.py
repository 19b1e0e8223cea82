"""train-deform: the audio-driven deformation field of the head (deform.h5).

Each canonical head Gaussian (from static.h5, or random with static_init=false) is moved
per frame by DeformField(position features ⊕ condition code ⊕ eye inputs: blink, brow raise) -> Δposition,
Δrotation, Δscale; colour and opacity are not deformed. Gaussians (with density control)
and the field train jointly; several frames per step go through the rasteriser's
per-camera means/quats/scales batch.

Loss = L1(head region) + mask_weight·L1(alpha, head mask) + perceptual_weight·perceptual
(LPIPS when usable, D-SSIM with perceptual=auto otherwise; recorded in the artifact attr
`perceptual_loss`) + lip_loss·L1(lip patch from track.h5's lip_box; lip_resolution "full": rendered
and compared at the crop's full size, gs.lip_patch, so teeth and the inside of the mouth are learnt
from the full-resolution frames).

Kept weights: the last `val_fraction` of the training frames (one stretch, never the held-out
frames) is not trained on; it is scored every `val_every` steps and the weights of the best score
from `keep_best_from` of the iterations on are kept (keep_best), as train-a2l does. deform.h5 records the step kept (kept_step) and what the
validation curve is of (val_measure); psnr_head is the held-out head-region PSNR of the kept weights.

Learning rates: the hash grid uses the paper's 5e-3. The paper's 1.6e-5 for the MLP is
kept for the `paper` preset (35k steps of 4 frames; its time budget is next to PRESETS);
`tiny` and `fast` run 17-230x fewer steps, and Adam moves a weight by about lr per step, so
with 1.6e-5 the zero-initialised output layer would barely leave zero in 3k steps: they use
lr_mlp = 1e-3 (documented, overridable).

condition: "audio" (GSTalker: audio features -> AudioCondition code + the tracked blink) or
"landmarks" (the decoupled two-stage method: the tracked canonical landmarks of track.h5 ->
LandmarkCondition, landmark_condition.py: per-frame offset code + per-Gaussian relative
position code; no blink input, the eyelid landmarks carry it). deform.h5 then also keeps
landmark_indices, landmark_neutral and the attrs landmark_sigma/k/scale/alignment/parts,
which render needs to drive the head with a2l's, another run's or edited landmarks.

Ablations: static_init (false = random Gaussians), encoding (hashgrid | raw),
perceptual (auto | lpips | dssim | none), lip_loss (weight, 0 disables).

audio_landmark_loss (condition=audio; our addition to the paper, 0 gives its exact losses):
each step also asks a linear read-out of the audio code to predict the tracked mouth and jaw
landmark offsets of `audio_landmark_batch` random training frames. Rendering sees only `batch`
frames a step, far too few at CPU budgets for the audio code to learn articulation from
pixels alone; the landmarks are free (track.h5) and cost no rendering.

audio_mouth_dim K > 0 (the default; 0 = the paper's free audio code, read out linearly as above):
the audio code is read out as the mouth state (head.mouth_state: K principal components of the
tracked mouth/jaw landmark offsets) and the field sees only that state, so what the field learns
from one voice is how a mouth state looks, and what the audio path learns is which mouth state a
sound makes: a new voice moves the mouth as far as its predicted states say. The state is
supervised with the tracked one (audio_landmark_loss) and not by the photometric loss (detached:
pixels cannot turn it back into a per-frame code); in `audio_teacher` of the steps the field is
given the tracked state instead, so it learns the full range of mouth shapes. In pauses (speech
activity 0, audio.recipe.speech_activity) the state is the subject's closed mouth. At the end, the
field renders the tracked states of speaking training frames at a few gains and the run's landmark
reader measures how far the rendered mouth opens against the real one: deform.h5 mouth_render_gain,
the gain render multiplies into every drive's mouth state (head.mouth_render).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from talkctl.audio.av_offset import resolve_setting as resolve  # av_offset checked before any work (pipeline.prepare)
from talkctl.config import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, Range
from talkctl.devices import to_device
from talkctl.errors import ArtifactError, UsageError
from talkctl.head.conditions import AudioCondition, FeatureAugment
from talkctl.head.mouth_readout import (LandmarkReadout, landmark_readout, mouth_amplitude, speed_perturbed_source,
                                        tracked_landmarks)
from talkctl.head.mouth_state import spread_gain
from talkctl.head.renderer import to_uint8
from talkctl.head.field import (ENCODING_DEFAULTS, ENCODING_RANGES, DeformField, apply_deform, build_condition,
                                field_param_groups, grid_kwargs, hashgrid_backend, save_state_dict)
from talkctl.gs.gaussians import HEAD_BOX, GaussianModel
from talkctl.head.models import build_field, fit_eye_columns
from talkctl.gs.optim import GAUSSIAN_DEFAULTS, GAUSSIAN_RANGES, GaussianOptim
from talkctl.gs.lip_patch import LipPatches
from talkctl.gs.losses import l1, lip_l1, perceptual_loss
from talkctl.gs.scene import Scene
from talkctl.gs.splat import over, render, resolve_rasterizer
from talkctl.gs.training import (TRAIN_DEFAULTS, TRAIN_NON_SEMANTIC, TRAIN_RANGES, adam, batch_schedule, clear_checkpoints,
                                 compiled, keep_best_start, spread, train, validation_split, write_curves)

VERSION = 2  # 2: a validation slice of the training frames picks the kept weights
DEFAULTS = {
    "rasterizer": "auto",
    "condition": "audio",
    "resolution": 256,
    "iterations": 2000,
    "batch": 2,
    "static_init": True,
    "random_gaussians": 4000,     # used when static_init is false
    **ENCODING_DEFAULTS,
    "hidden": 64,
    "layers": 3,
    "code_dim": 32,
    "attn_window": 8,
    # condition=landmarks (landmark_condition.py): parts driving the head, kernel width (canonical
    # units: outer eye corners 0.65 apart), neighbours per Gaussian, pose removal of the landmarks
    "landmark_parts": ["mouth", "jaw", "eyes"],
    "landmark_sigma": 0.08,
    "landmark_k": 8,
    "landmark_alignment": "auto",
    "lr_grid": 5e-3,
    "lr_mlp": 1e-3,
    "mask_weight": 0.1,
    "perceptual": "auto",
    "perceptual_weight": 0.1,
    "lip_loss": 0.2,
    "brows": False,               # condition=audio: the tracked brow raise as an eye input next to the blink (face.brows; opt-in: bench/results/brows_french_s6.json)
    "lip_resolution": "full",     # full: the lip patch rendered and compared at the crop's size (gs.lip_patch) | train
    "audio_landmark_loss": 1.0,   # condition=audio: weight of the landmark read-out of the audio code
    "audio_landmark_batch": 64,
    "audio_mouth_dim": 12,        # condition=audio: mouth-state components the field sees (0: the free audio code)
    "audio_teacher": 0.5,         # condition=audio, mouth state: fraction of steps the field gets the tracked state
    # mouth state: the audio path (features -> state) trains on the landmark read-out alone, for
    # audio_steps steps (then frozen: longer fits the one voice, not speech), with decoupled weight
    # decay and feature noise / channel dropout (head.conditions.FeatureAugment)
    # (noise 0.4 / dropout 0.2 against 0.2 / 0.1: held-out mouth corr. 0.61-0.63 against 0.56-0.58, cross-speaker
    # unchanged: bench/results/lipsync_lips3_refit.json. Not more steps: keep_best may keep step 500's weights on)
    "audio_steps": 800,
    "audio_ensemble": 3,          # mouth state: encoders trained side by side, their states averaged
    "audio_weight_decay": 0.1,
    "audio_noise": 0.4,
    "audio_dropout": 0.2,
    "audio_speed": [0.9, 1.1],    # and on the training audio played at these speeds (audio.perturb; [] = off)
    "val_frames": 16,              # validation frames checked, spread over the validation slice
    "val_fraction": 0.1,           # the last part of the training frames: validation that picks the kept weights
    "keep_best": True,             # keep the weights of the best validation (False: those of the last step)
    "keep_best_from": 0.25,        # ... among the validations from this share of the iterations on
    # the last audio_val_fraction of the frames the field trains on are kept from the audio path; on
    # them the predicted states' spread is matched to the tracked ones' (AudioCondition.gain): a
    # prediction unsure of a sound regresses to the mean mouth, and the gain gives it back its articulation
    "audio_val_fraction": 0.1,
    # utterance: each driving audio's predicted states are rescaled over its speech to spread as far as
    # the subject's tracked states do (head.drive.drive_mouth_gain) | calibrated: the gain above only
    "audio_amplitude": "utterance",
    "av_offset": None,            # condition=audio: None/auto: a clip >= 0.1 s out of sync is realigned (audio.av_offset) | seconds
    **GAUSSIAN_DEFAULTS,
    "lr_means": 1.6e-4,
    "densify_start": 500,
    "densify_stop": 1500,
    "densify_reset_every": 0,
    **TRAIN_DEFAULTS,
}
# The `paper` schedules of all training stages, sized for <= 10 min in total on one H100 at 512^2
# (a 50 s clip, 1260 frames). Per-step costs are ASSUMED, not yet measured (no GPU so far):
# bench/gpu_check.sh measures them; replace the figures below with its steps/s when it has run.
#   stage          steps x batch   assumed per step                           train    + fixed*
#   init-static    10000+5000 x 1  2.5 ms (gsplat fwd+bwd of one view, Adam)   38 s     20 s
#   train-deform   35000 x 4       8 ms (~700 eager launches of the torch hash  280 s     25 s
#                                  grid + field + gsplat on 4 views; CPU-bound)
#   train-torso    10000 x 4       8 ms (pose field + gsplat, head render)      80 s     20 s
#   train-a2l      4000 x 16 seq   3 ms (4-layer Transformer, d 256)            12 s      5 s
#   total                                                                       410 s  + 70 s = 8 min
# *fixed: CUDA start-up, the first pass over the frames (h5 gunzip, ~5 ms a frame per store),
# validation, checkpoints. Margin: deform's cost grows with the Gaussians, hence the 100k cap and
# densification only in its first half; at 10 ms a deform step the total is ~9 min.
PRESETS = {
    # tiny trains at 128 px: a real face at 64 px renders as a smudge where the mouth is
    "tiny": {"resolution": 128, "iterations": 150, "random_gaussians": 600, "grid_levels": 4, "grid_base": 8,
             "grid_max": 32, "grid_log2_size": 10, "hidden": 32, "layers": 2, "code_dim": 8, "attn_window": 4,
             "densify_start": 50, "densify_every": 50, "densify_stop": 120, "densify_max_gaussians": 1500,
             "val_every": 50, "checkpoint_every": 50, "val_frames": 2},
    "fast": {},
    "paper": {"resolution": 512, "iterations": 35000, "random_gaussians": 10000, "lr_mlp": 1.6e-5,
              "hidden": 64, "layers": 3, "sh_degree": 3, "lr_means": 1.6e-5, "lr_means_final": 1.6e-7,
              "densify_start": 500, "densify_stop": 17500, "densify_reset_every": 3000,
              "densify_max_gaussians": 100000, "val_every": 5000, "checkpoint_every": 10000, "batch": 4},
}
# which validations there are decides the weights kept (keep_best): val_every and val_frames count
NON_SEMANTIC = set(TRAIN_NON_SEMANTIC) - {"val_every"}
MAX_GAIN = 2.0  # the most the calibration may widen the predicted mouth motion
RANGES = {"resolution": Range(16, 4096), "iterations": AT_LEAST_1, "batch": Range(1, 64), "random_gaussians": AT_LEAST_1,
          **ENCODING_RANGES, "hidden": AT_LEAST_1, "layers": AT_LEAST_1, "code_dim": AT_LEAST_1, "attn_window": AT_LEAST_1,
          "landmark_sigma": POSITIVE, "landmark_k": AT_LEAST_1, "lr_grid": POSITIVE, "lr_mlp": POSITIVE,
          "mask_weight": NON_NEGATIVE, "perceptual_weight": NON_NEGATIVE, "lip_loss": NON_NEGATIVE,
          "audio_landmark_loss": NON_NEGATIVE, "audio_landmark_batch": AT_LEAST_1, "val_frames": AT_LEAST_1,
          "audio_mouth_dim": Range(0, 64), "audio_teacher": FRACTION, "audio_steps": NON_NEGATIVE, "audio_ensemble": Range(1, 16),
          "audio_weight_decay": NON_NEGATIVE, "audio_noise": NON_NEGATIVE, "audio_dropout": Range(0, 0.95),
          "val_fraction": Range(0, 0.5), "audio_val_fraction": Range(0, 0.5), "keep_best_from": FRACTION,
          "av_offset": Range(-1, 1), **GAUSSIAN_RANGES, **TRAIN_RANGES}


class DeformTrainer:
    def __init__(self, scene: Scene, rasterize, gaussians: GaussianModel, field: DeformField, condition, cfg,
                 perceptual_fn, readout: LandmarkReadout | None = None):
        self.scene, self.rasterize, self.cfg = scene, rasterize, cfg
        # fit on the training frames but a validation slice of them (val_fraction); without one
        # the curve shows held-out frames and nothing is picked by it
        self.fit_idx, val_idx = validation_split(scene.train_idx, float(cfg["val_fraction"]))
        self.val_idx = spread(val_idx, int(cfg["val_frames"])) if len(val_idx) else scene.held_subset(int(cfg["val_frames"]))
        self.g = GaussianOptim(gaussians, cfg, int(cfg["iterations"]), 1.0)
        self.field, self.condition, self.perceptual_fn = field, condition, perceptual_fn
        self.field_fn = compiled(field, cfg)
        self.readout = readout
        self.audio_copies = (1, 0)  # (copies of the training audio in the condition's source, frames each)
        self.mouth = bool(getattr(condition, "mouth_dim", 0)) and readout is not None
        if self.mouth:
            condition.augment = FeatureAugment(float(cfg["audio_noise"]), float(cfg["audio_dropout"]))
        self._make_optimizers()
        self.lips = None
        if cfg["lip_resolution"] == "full" and float(cfg["lip_loss"]) > 0:
            self.lips = LipPatches(scene.frames_full, scene.labels.ds, scene.lip_box_full, scene.K_crop,
                                   device=scene.device)

    def _make_optimizers(self):
        c = self.cfg
        groups = field_param_groups(self.field, None if self.mouth else self.condition, c["lr_grid"], c["lr_mlp"])
        if self.readout is not None and not self.mouth:
            groups.append({"params": list(self.readout.parameters()), "lr": c["lr_mlp"], "name": "readout"})
        self.net_opt = adam(groups, c)
        self.audio_opt = torch.optim.AdamW(self.condition.parameters(), lr=c["lr_mlp"],
                                           weight_decay=float(c["audio_weight_decay"])) if self.mouth else None

    @property
    def optimizers(self):
        return {"gaussians": self.g.opt, "field": self.net_opt, **({"audio": self.audio_opt} if self.mouth else {})}

    def arrays(self):
        out = self.g.arrays()
        out.update({f"field.{k}": v.detach().cpu().numpy() for k, v in self.field.state_dict().items()})
        out.update({f"cond.{k}": v.detach().cpu().numpy() for k, v in self.condition.state_dict().items()})
        if self.readout is not None and self.readout.linear is not None:
            out.update({f"readout.{k}": v.detach().cpu().numpy() for k, v in self.readout.linear.state_dict().items()})
        return out

    def load_arrays(self, arrays):
        self.g.load_arrays(arrays)
        self.field.load_state_dict({k[6:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("field.")})
        self.condition.load_state_dict({k[5:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("cond.")})
        if self.readout is not None and self.readout.linear is not None:
            self.readout.linear.load_state_dict({k[8:]: torch.as_tensor(v) for k, v in arrays.items()
                                                 if k.startswith("readout.")})
        self._make_optimizers()

    def deformed(self, idx, degree=None, teacher: bool = False, teacher_gain: float = 1.0):
        """(means, quats, scales, colours, SH degree, world_to_cam) of frames idx (teacher: with
        teacher_gain x their tracked mouth states)."""
        sc, m = self.scene, self.g.model
        t = to_device(idx, m.means.device, torch.long)
        if self.mouth:  # supervised by the landmarks only; the tracked state in `teacher` steps
            code = teacher_gain * self.readout.targets[t] if teacher else self.condition.encode(idx).detach()
        else:
            code = self.condition.encode(idx)
        pg = self.condition.per_gaussian(code, m.means)
        dxyz, dq, ds = self.field_fn(m.means, code, fit_eye_columns(sc.blink[t], self.field.eye_dim), pg=pg)
        means, quats, scales = apply_deform(m.means, m.params["quats"], m.params["log_scales"], dxyz, dq, ds)
        colors, deg = m.color_inputs(degree)
        return means, quats, scales, colors, deg, sc.w2c[t]

    def forward(self, idx, degree=None):
        means, quats, scales, colors, deg, w2c = self.deformed(idx, degree)
        return render(self.rasterize, means, quats, scales, self.g.model.opacities, colors, w2c, self.scene.K,
                      self.scene.res, deg)

    def lip_loss(self, idx, out, target, deformed) -> torch.Tensor:
        """L1 on the lip patch: at the crop's full size (lip_resolution full), else in the training render."""
        if self.lips is None:
            return lip_l1(out.rgb, target, self.scene.lip_box[idx])
        patch, K = self.lips.get(idx)
        means, quats, scales, colors, deg, w2c = deformed
        lips = render(self.rasterize, means, quats, scales, self.g.model.opacities, colors, w2c, K, self.lips.side, deg)
        return l1(lips.rgb, patch)

    def step(self, step, rng):
        c = self.cfg
        idx = batch_schedule(self.fit_idx, int(c["batch"]), rng)
        self.g.before_step(step)
        target, mask = self.scene.head_targets(idx)
        teacher = self.mouth and bool(rng.random() < float(c["audio_teacher"]))
        deformed = self.deformed(idx, self.g.active_degree(step), teacher=teacher)
        means, quats, scales, colors, deg, w2c = deformed
        out = render(self.rasterize, means, quats, scales, self.g.model.opacities, colors, w2c, self.scene.K,
                     self.scene.res, deg)
        if self.g.strategy is not None:
            self.g.strategy.pre_backward(out)
        loss = l1(out.rgb, target) + c["mask_weight"] * l1(out.alpha, mask)
        if self.perceptual_fn is not None and c["perceptual_weight"] > 0:
            loss = loss + c["perceptual_weight"] * self.perceptual_fn(out.rgb, target)
        if c["lip_loss"] > 0:
            loss = loss + c["lip_loss"] * self.lip_loss(idx, out, target, deformed)
        audio_on = self.readout is not None and (not self.mouth or step < int(c["audio_steps"]))
        if audio_on:
            loss = loss + float(c["audio_landmark_loss"]) * self.readout.loss(self.condition, self._readout_frames(rng))
        loss.backward()
        self.net_opt.step()
        self.net_opt.zero_grad(set_to_none=True)
        if self.mouth:
            if audio_on:
                self.audio_opt.step()
            self.audio_opt.zero_grad(set_to_none=True)
        self.g.after_backward(step, out, self.scene.res)
        return {"loss": loss.detach(), "gaussians": self.g.model.num}

    def _readout_frames(self, rng) -> np.ndarray:
        """Random training frames for the landmark read-out (scattered: varied speech each step)."""
        n = int(self.cfg["audio_landmark_batch"])
        copies, T = self.audio_copies  # speed-perturbed copies follow the original features (audio_speed)
        return rng.choice(self.audio_frames()[0], n) + T * rng.integers(copies, size=n)

    def audio_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(frames the audio path trains on, frames that calibrate its gain); mouth-state mode keeps
        the last audio_val_fraction of the training frames (at least 1 s) for the gain."""
        tr = self.fit_idx  # never the validation slice that picks the kept weights
        n = int(round(float(self.cfg["audio_val_fraction"]) * len(tr))) if self.mouth else 0
        if n < 25 or len(tr) - n < 25:
            return tr, tr[:0]
        return tr[:-n], tr[-n:]

    @torch.no_grad()
    def calibrate_gain(self) -> float:
        """Mouth-state mode: set AudioCondition.gain so the predicted states on the calibration
        frames spread as far as the tracked ones (1..MAX_GAIN); returns it (1 without such frames)."""
        _, val = self.audio_frames()
        if not self.mouth or len(val) == 0:
            return 1.0
        self.condition.eval()
        t = torch.as_tensor(val, device=self.g.model.means.device)
        speech = None if self.condition.speech is None else self.condition.speech[t].cpu().numpy()
        gain = spread_gain(self.condition.encode(t).cpu().numpy(), self.readout.targets[t].cpu().numpy(), speech,
                           MAX_GAIN)
        self.condition.gain.fill_(gain)
        self.condition.train()
        return gain

    @torch.no_grad()
    def over_real(self, idx, gain: float) -> np.ndarray:
        """(C,R,R,3) uint8: the head with gain x the tracked mouth states of frames idx over the real frames."""
        means, quats, scales, colors, deg, w2c = self.deformed(idx, teacher=True, teacher_gain=gain)
        out = render(self.rasterize, means, quats, scales, self.g.model.opacities, colors, w2c, self.scene.K,
                     self.scene.res, deg)
        return to_uint8(over(out.rgb, out.alpha, self.scene.full_frames(idx)))

    @torch.no_grad()
    def validate(self, frames=None) -> float:
        """Head-region PSNR on `frames`, by default the validation frames (no feature augmentation)."""
        self.condition.eval()
        try:
            return self._validate(frames)
        finally:
            self.condition.train()

    def _validate(self, frames=None) -> float:
        idx = self.val_idx if frames is None else frames
        se, w = 0.0, 0.0
        for i in idx:
            target, mask = self.scene.head_targets([i])
            out = self.forward([i])
            m = mask.expand_as(target)
            se += float((((out.rgb - target) ** 2) * m).sum())
            w += float(m.sum())
        return 10 * np.log10(1.0 / max(se / max(w, 1e-8), 1e-10))


    @torch.no_grad()
    def preview(self):
        """(real, rendered) of the first held-out frame, for the training curves."""
        i = int(self.scene.held_idx[0])
        return self.scene.head_targets([i])[0][0], self.forward([i]).rgb[0]


def validation_measure(trainer: "DeformTrainer", scene) -> str:
    """What the validation curve is of (deform.h5 attr val_measure, shown in report.html)."""
    if len(trainer.val_idx) and trainer.val_idx[-1] < scene.held_idx[0]:
        return (f"head region, validation slice of the training frames ({int(trainer.val_idx[0])}.."
                f"{int(trainer.val_idx[-1])}, not trained on)")
    return "head region, held-out frames"


def field_mouth_gain(ctx, trainer: DeformTrainer, scene) -> dict:
    """deform.h5 attrs mouth_render_gain...: how far the trained field opens the tracked mouth
    states, read like eval reads (the run's landmark reader), and the gain making up for it
    (head.mouth_render)."""
    from talkctl import artifacts
    from talkctl.face.reader import LandmarkReader
    from talkctl.head.mouth_render import measure_render_gain, speaking_frames

    frames = speaking_frames(trainer.fit_idx, scene.speech)
    real = to_uint8(scene.full_frames(frames))
    backend = str((artifacts.read_attrs(ctx.run, "track") or {}).get("landmark_backend") or "auto")
    reader = LandmarkReader(backend, ctx.device)
    try:
        rec = measure_render_gain(trainer.over_real, frames, real, reader)
    finally:
        reader.close()
    if "mouth_render_reason" in rec:
        ctx.log.warning("mouth render gain not measured (1 kept): %s", rec["mouth_render_reason"])
    else:
        ctx.log.info("mouth render gain %.2f (response %s)", rec["mouth_render_gain"], rec["mouth_render_response"])
    return rec


def landmark_condition(ctx, cfg, scene):
    """LandmarkCondition on the tracked canonical landmarks (track.h5), the neutral face = mean of
    the training frames; returns it with the datasets deform.h5 keeps for render."""
    from talkctl.face.canonical import moving_indices, neutral_shape
    from talkctl.head.landmark_condition import LandmarkCondition, offset_scale

    lm, points = tracked_landmarks(ctx, cfg, scene, "condition=landmarks")
    if len(points) < scene.T:
        raise ArtifactError("track.h5 has fewer landmark frames than frames.h5: rerun `talkctl track --force`")
    try:
        idx = moving_indices(lm.n, tuple(cfg["landmark_parts"]), rigid=lm.rigid)
    except ValueError as exc:
        raise UsageError(f"train-deform landmark_parts: {exc}") from None
    neutral = neutral_shape(points, lm.valid[: scene.T], scene.train_idx)
    scale = offset_scale(points[scene.train_idx], neutral, idx)
    cond = LandmarkCondition(idx, lm.n, k=int(cfg["landmark_k"]), sigma=float(cfg["landmark_sigma"]), scale=scale,
                             neutral=neutral)
    cond.set_source(landmarks=points)
    attrs = {"landmark_sigma": cond.sigma, "landmark_k": cond.k, "landmark_scale": cond.scale,
             "landmark_alignment": lm.method, "landmark_parts": json.dumps(list(cfg["landmark_parts"]))}
    return cond, {"landmark_indices": idx, "landmark_neutral": neutral}, attrs


def initial_gaussians(ctx, cfg, gen) -> tuple[GaussianModel, str]:
    if cfg["static_init"]:
        with ctx.read("static") as f:
            return GaussianModel.load_h5(f["head"], ctx.device), "static.h5"
    return GaussianModel.random(int(cfg["random_gaussians"]), *HEAD_BOX, sh_degree=int(cfg["sh_degree"]),
                                generator=gen).to(ctx.device), "random"


def run(ctx, cfg: dict) -> dict:
    torch.manual_seed(int(cfg["seed"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    rasterize = resolve_rasterizer(cfg["rasterizer"], ctx.device, ctx)
    perceptual_name, perceptual_fn = perceptual_loss(cfg["perceptual"], ctx.device, ctx.log)
    if cfg["condition"] not in ("audio", "landmarks"):
        raise UsageError(f"train-deform condition={cfg['condition']!r}: use audio or landmarks")
    if cfg["lip_resolution"] not in ("full", "train"):
        raise UsageError(f"train-deform lip_resolution={cfg['lip_resolution']!r}: use full or train")
    if not 0 <= float(cfg["val_fraction"]) < 0.5:
        raise UsageError(f"train-deform val_fraction={cfg['val_fraction']!r}: use 0 (off) up to 0.5")
    landmarks = cfg["condition"] == "landmarks"
    with Scene(ctx, cfg, audio=not landmarks) as scene:
        gaussians, init_from = initial_gaussians(ctx, cfg, gen)
        extra, extra_attrs = {}, {}
        if landmarks:
            condition, extra, extra_attrs = landmark_condition(ctx, cfg, scene)
        else:
            feats = scene.features
            mean, std = AudioCondition.stats(feats[scene.train_idx])
            readout, mouth = landmark_readout(ctx, cfg, scene, int(cfg["code_dim"]))
            cond_spec = {"name": cfg["condition"], "feature_dim": int(feats.shape[2]), "window": int(feats.shape[1]),
                         "code_dim": int(cfg["code_dim"]), "attn_window": int(cfg["attn_window"]),
                         **({"mouth_dim": mouth["mouth_dim"], "ensemble": int(cfg["audio_ensemble"])} if mouth else {})}
            condition = build_condition(cond_spec)
            condition.mean.copy_(torch.as_tensor(mean))
            condition.std.copy_(torch.as_tensor(std))
            if mouth:
                condition.closed.copy_(torch.as_tensor(mouth["closed"]))
                extra_attrs = {"mouth_explained": mouth["explained"], **mouth_amplitude(cfg, readout, scene, mouth["axis"])}
            condition.set_source(features=feats, speech=scene.speech)
            extra, extra_attrs = {"audio_mean": mean, "audio_std": std}, {**extra_attrs, **scene.audio.attrs()}
        condition = condition.to(ctx.device)
        field_spec = {"encoding": cfg["encoding"], "bounds": [-1.0, 1.0], "grid": grid_kwargs(cfg),
                      "cond_dim": condition.out_dim, "hidden": int(cfg["hidden"]), "layers": int(cfg["layers"]),
                      "eye_dim": 0 if landmarks else (int(scene.blink.shape[1]) if cfg["brows"] else 1),  # blink (+ brow)
                      "pg_dim": int(condition.pg_dim)}
        field = build_field(field_spec, hashgrid=hashgrid_backend(cfg, ctx.device, ctx)).to(ctx.device)
        readout = None if landmarks else readout
        trainer = DeformTrainer(scene, rasterize, gaussians, field, condition, cfg, perceptual_fn, readout)
        if trainer.mouth:
            trainer.audio_copies = speed_perturbed_source(ctx, cfg, condition, readout, scene)
        res = train(ctx, "train-deform", trainer, int(cfg["iterations"]), cfg, description="deform",
                    keep_best_from=keep_best_start(cfg))
        if trainer.mouth:
            condition.set_source(features=scene.features, speech=scene.speech)  # the original audio alone
            extra_attrs["audio_gain"] = trainer.calibrate_gain()
            extra_attrs.update(field_mouth_gain(ctx, trainer, scene))
        val = trainer.validate(scene.held_idx)
        g = trainer.g.model
        with ctx.write("deform") as f:
            g.save_h5(f.create_group("head"))
            save_state_dict(f.create_group("field"), field)
            save_state_dict(f.create_group("condition"), condition)
            for k, v in extra.items():  # audio: audio_mean/std; landmarks: landmark_indices, landmark_neutral
                f.create_dataset(k, data=v)
            write_curves(f, res)
            f.create_dataset("intrinsics", data=scene.K.cpu().numpy())
            f.attrs.update({
                "field_spec": json.dumps(field_spec), "condition_spec": json.dumps(condition.spec()),
                "condition": cfg["condition"], "encoding": cfg["encoding"], "perceptual_loss": perceptual_name,
                "lip_loss": float(cfg["lip_loss"]), "init_from": init_from,
                "audio_landmark_loss": float(cfg["audio_landmark_loss"]) if readout is not None else 0.0,
                "audio_extractor": getattr(scene, "audio_extractor", ""),
                **extra_attrs,
                "resolution": scene.res, "crop_size": scene.S, "psnr_head": val, "n_gaussians": g.num,
                "train_seconds": res["seconds"], "held_out": [int(scene.held_idx[0]), int(scene.held_idx[-1]) + 1],
                "val_measure": validation_measure(trainer, scene), "kept_step": int(res["best_step"]),
            })
    clear_checkpoints(ctx, ["train-deform"])
    ctx.log.info("deform: held-out head PSNR %.2f dB, %d Gaussians, perceptual %s", val, g.num, perceptual_name)
    return {"psnr_head": round(val, 3), "n_gaussians": g.num, "perceptual_loss": perceptual_name,
            # what drove the held-out frames: a landmark head is scored with the tracked landmarks
            # (its upper bound); a2l-driven figures come from eval / bench/compare_methods.py
            "validation_driver": "tracked landmarks" if landmarks else "audio",
            "train_seconds": round(res["seconds"], 1), "init_from": init_from, "kept_step": int(res["best_step"])}
