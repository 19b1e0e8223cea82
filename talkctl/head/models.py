"""Loading trained models for rendering: the API the render and eval stages call.

    head = load_head(run, device)             # deform.h5: canonical Gaussians + field + condition
    head.set_audio(features)                  # (T,W,D) from audio.h5 of the driving audio
    head.set_landmarks(landmarks)             # or (T,L,3) canonical landmarks when head.condition_name == "landmarks"
                                              # (landmark_source.landmark_source gives them)
    out = head.render(frames, world_to_cam, K, size, blink=None)   # frames: (C,) audio frame indices
    torso = load_torso(run, device)           # torso.h5: torso Gaussians + pose field (or the image torso)
    t_out = torso.render(world_to_cam, K, size, head_rgb=out.rgb, head_alpha=out.alpha)
                                              # the head poses drive the torso; the image torso
                                              # (torso.mode == "image") is made from the head render
    img = composite(background, t_out, out)   # plate <- torso <- head, (C,size,size,3) in [0,1]
    static = load_static(run, device)         # static.h5 (no deformation): .render(world_to_cam, K, size)

world_to_cam (C,4,4) are head-to-camera transforms (track.h5's world_to_cam); K (3,3) is in
pixels of the size x size output (`scale_intrinsics(track_K, crop_size, size)`; each model
keeps `.K_crop`/`.crop_size` of its training data for that). The renders are RasterOutputs
over black (rgb premultiplied by alpha). `head.codes(frames)` gives the condition codes alone
(head.render(..., code=...) then needs no source). A loaded model is for rendering: what its
frames share (hash-grid features of the canonical Gaussians, opacities, colours) is made
once, on first use (`.constants`).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from talkctl import artifacts
from talkctl.devices import to_device
from talkctl.rundir import RunDir
from talkctl.head.field import DeformField, apply_deform, build_condition, make_encoder, read_state_dict
from talkctl.gs.gaussians import GaussianModel
from talkctl.gs.splat import over, render, resolve_rasterizer


def _tensor(x, device):
    """float32 on `device` from numpy or a tensor on any device (np.asarray would fail on CUDA ones)."""
    return to_device(x, device, torch.float32)


def fit_eye_columns(eye: torch.Tensor, width: int) -> torch.Tensor:
    """Eye inputs (C,E) [blink, brow raise, ...] (face.brows) as (C,width): extra columns dropped
    (a blink-only head), missing ones 0 (neutral brows from a pose source without them)."""
    if eye.shape[1] >= width:
        return eye[:, :width]
    return torch.cat([eye, eye.new_zeros(len(eye), width - eye.shape[1])], 1)


def build_field(spec: dict, eye_dim: int = 1, hashgrid: str = "auto") -> DeformField:
    """eye_dim and pg_dim (per-Gaussian condition code) come from the spec when it records them."""
    enc = make_encoder(spec["encoding"], spec["bounds"], spec["grid"], hashgrid)
    return DeformField(enc, spec["cond_dim"], eye_dim=int(spec.get("eye_dim", eye_dim)), hidden=spec["hidden"],
                       n_layers=spec["layers"], pg_dim=int(spec.get("pg_dim", 0)))


class StaticModel:
    def __init__(self, gaussians: GaussianModel, rasterize):
        self.gaussians, self.rasterize = gaussians, rasterize

    @torch.no_grad()
    def render(self, world_to_cam, K, size: int):
        g = self.gaussians
        colors, deg = g.color_inputs()
        return render(self.rasterize, g.means, g.quats, g.scales, g.opacities, colors,
                      _tensor(world_to_cam, g.means.device), _tensor(K, g.means.device), int(size), deg)


class FrameConstants:
    """What a loaded model's frames share: the first layer's position features of the canonical
    Gaussians (hash grid + in_pos, otherwise the costliest step of a frame), the activated opacities
    and the colour inputs. Made once per loaded model, on first use (rendering only: a model being
    trained changes them every step)."""

    def __init__(self, gaussians: GaussianModel, field: DeformField):
        with torch.no_grad():
            self.pos = field.position_features(gaussians.means)
            self.opacities = gaussians.opacities
            self.colors, self.sh_degree = gaussians.color_inputs()


class _Constants:
    """`.constants` of a model with .gaussians and .field, made on first use."""
    _constants: FrameConstants | None = None

    @property
    def constants(self) -> FrameConstants:
        if self._constants is None:
            self._constants = FrameConstants(self.gaussians, self.field)
        return self._constants


class HeadModel(_Constants):
    """Canonical head Gaussians deformed by the condition (audio) and blink."""

    def __init__(self, gaussians, field, condition, rasterize, attrs: dict):
        self.gaussians, self.field, self.condition, self.rasterize = gaussians, field, condition, rasterize
        self.attrs = attrs
        self.device = gaussians.means.device
        gain = getattr(condition, "gain", None)
        self.trained_gain = None if gain is None else float(gain)  # a mouth-state head's calibrated gain
        # how much wider the states must be for the field to render the mouth they describe
        # (train-deform's measurement, head.mouth_render); 1 for runs made before it
        self.render_gain = float(attrs.get("mouth_render_gain", 1.0) or 1.0)
        self.set_mouth_gain(None)

    @property
    def condition_name(self) -> str:
        return self.condition.name

    def set_audio(self, features: np.ndarray, speech: np.ndarray | None = None) -> None:
        """Driving audio features (T,W,D) (audio.recipe) and their speech activity (T,) (pauses close
        a mouth-state head's mouth; None: every frame is speech)."""
        self.condition.set_source(features=features, speech=speech)

    def set_mouth_gain(self, gain: float | None, raw: bool = False) -> None:
        """A mouth-state head's gain for the driving audio (head.drive.drive_mouth_gain); None: the
        trained one. Times the field's render gain, unless raw (the states the audio path predicts)."""
        if self.trained_gain is not None:
            g = self.trained_gain if gain is None else float(gain)
            self.condition.gain.fill_(g if raw else g * self.render_gain)

    def set_landmarks(self, landmarks: np.ndarray) -> None:
        """Driving canonical landmarks (T,L,3) of a landmark-conditioned head (condition "landmarks")."""
        self.condition.set_source(landmarks=landmarks)

    @torch.no_grad()
    def codes(self, frames) -> torch.Tensor:
        """(C,Dc) condition codes of frames (C,) of the source given by set_audio / set_landmarks."""
        return self.condition.encode(torch.as_tensor(np.asarray(frames), dtype=torch.long, device=self.device))

    @torch.no_grad()
    def deformed(self, frames, blink=None, code=None):
        """Deformed (means, quats, scales) (C,N,·) of frames (C,), or of given codes (C,Dc)."""
        g = self.gaussians
        code = self.codes(frames) if code is None else code
        eye = None
        if self.field.eye_dim:  # a landmark-driven head has no blink input: its eyelid landmarks carry it
            eye = fit_eye_columns(torch.zeros(len(code), 1, device=self.device) if blink is None
                                  else _tensor(blink, self.device).float().reshape(len(code), -1), self.field.eye_dim)
        d = self.field(g.means, code, eye, pg=self.condition.per_gaussian(code, g.means), pos=self.constants.pos)
        return apply_deform(g.means, g.params["quats"], g.params["log_scales"], *d)

    @torch.no_grad()
    def deformed_arrays(self, frames, blink=None) -> list[dict[str, np.ndarray]]:
        """The deformed head of each frame as Gaussian parameter arrays (gs.gaussians.PARAM_NAMES),
        for exporting: positions, rotations and log scales moved, opacity and colour as trained."""
        means, quats, scales = self.deformed(frames, blink)
        fixed = {k: v.detach().cpu().numpy() for k, v in self.gaussians.params.items()
                 if k in ("opacity_logits", "sh_dc", "sh_rest")}
        return [{"means": m.cpu().numpy(), "quats": q.cpu().numpy(), "log_scales": torch.log(s).cpu().numpy(), **fixed}
                for m, q, s in zip(means, quats, scales)]

    @torch.no_grad()
    def render(self, frames, world_to_cam, K, size: int, blink=None, code=None):
        c = self.constants
        means, quats, scales = self.deformed(frames, blink, code)
        return render(self.rasterize, means, quats, scales, c.opacities, c.colors,
                      _tensor(world_to_cam, self.device), _tensor(K, self.device), int(size), c.sh_degree)


class TorsoModel(_Constants):
    """Torso Gaussians in the fixed camera's space, deformed by the head pose."""

    def __init__(self, gaussians, field, pose_condition, rasterize, attrs: dict):
        self.gaussians, self.field, self.pose, self.rasterize, self.attrs = gaussians, field, pose_condition, rasterize, attrs
        self.device = gaussians.means.device

    mode = "gaussian"

    @torch.no_grad()
    def deformed(self, world_to_cam):
        """(means, quats, scales) per head pose (C,·), in the fixed camera's space."""
        g = self.gaussians
        d = self.field(g.means, self.pose.encode_pose(_tensor(world_to_cam, self.device)), pos=self.constants.pos)
        return apply_deform(g.means, g.params["quats"], g.params["log_scales"], *d)

    @torch.no_grad()
    def render(self, world_to_cam, K, size: int, head_rgb=None, head_alpha=None):
        """head_rgb/head_alpha: accepted for the image torso's signature (unused here)."""
        c = self.constants
        w2c = _tensor(world_to_cam, self.device)
        means, quats, scales = self.deformed(w2c)
        eye = torch.eye(4, device=self.device).expand(len(w2c), 4, 4)
        return render(self.rasterize, means, quats, scales, c.opacities, c.colors, eye,
                      _tensor(K, self.device), int(size), c.sh_degree)


def composite(background, torso_out, head_out) -> torch.Tensor:
    """background plate (H,W,3) or (C,H,W,3), uint8 (numpy or torch) or float in [0,1]
    <- torso render <- head render; (C,H,W,3) in [0,1]. (Told apart by dtype: looking at the
    values, e.g. bg.max(), would wait for the GPU every render.)"""
    uint8 = str(background.dtype).endswith("uint8")  # numpy's "uint8" or torch's "torch.uint8"
    bg = _tensor(background, head_out.rgb.device)
    if uint8:
        bg = bg / 255.0
    under = bg.expand_as(head_out.rgb)
    if torso_out is not None:
        under = over(torso_out.rgb, torso_out.alpha, under)
    return over(head_out.rgb, head_out.alpha, under).clamp(0, 1)


def _rasterizer(name, device):
    return resolve_rasterizer(name, device)


def load_static(run, device: str = "cpu", rasterizer: str = "auto") -> dict:
    """{"head": StaticModel, "torso": StaticModel} from static.h5."""
    run = run if isinstance(run, RunDir) else RunDir(run, create=False)
    rast = _rasterizer(rasterizer, device)
    with artifacts.open_for_read(run, "static") as f:
        return {k: StaticModel(GaussianModel.load_h5(f[k], device), rast) for k in ("head", "torso")}


def load_head(run, device: str = "cpu", rasterizer: str = "auto", hashgrid: str = "auto") -> HeadModel:
    run = run if isinstance(run, RunDir) else RunDir(run, create=False)
    with artifacts.open_for_read(run, "deform") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        gaussians = GaussianModel.load_h5(f["head"], device)
        field = build_field(json.loads(attrs["field_spec"]), hashgrid=hashgrid)
        field.load_state_dict(read_state_dict(f["field"]))
        condition = build_condition(json.loads(attrs["condition_spec"]), read_state_dict(f["condition"]))
        attrs["K"] = f["intrinsics"][()]
    return HeadModel(gaussians, field.to(device).eval(), condition.to(device).eval(), _rasterizer(rasterizer, device), attrs)


def load_torso(run, device: str = "cpu", rasterizer: str = "auto", hashgrid: str = "auto"):
    """TorsoModel (mode gaussian) or torso_image.ImageTorsoModel (mode image: its render needs
    head_rgb/head_alpha, the head's render). Both have .mode and .attrs (K, background)."""
    run = run if isinstance(run, RunDir) else RunDir(run, create=False)
    with artifacts.open_for_read(run, "torso") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        if attrs.get("mode", "gaussian") == "image":
            from talkctl.head.torso_image import ImageTorsoModel, StyleUNet

            net = StyleUNet(**json.loads(attrs["net_spec"]))
            net.load_state_dict(read_state_dict(f["net"]))
            pose = build_condition(json.loads(attrs["condition_spec"]), read_state_dict(f["pose"]))
            attrs["K"] = f["intrinsics"][()]
            attrs["background"] = f["background"][()]
            for key in ("base", "torso_shift"):  # the static torso it corrects, and where each frame had it
                if key in f:
                    attrs[key] = f[key][()]
            return ImageTorsoModel(net.to(device).eval(), pose.to(device).eval(), attrs)
        gaussians = GaussianModel.load_h5(f["torso"], device)
        field = build_field(json.loads(attrs["field_spec"]), eye_dim=0, hashgrid=hashgrid)
        field.load_state_dict(read_state_dict(f["field"]))
        pose = build_condition(json.loads(attrs["condition_spec"]), read_state_dict(f["pose"]))
        attrs["K"] = f["intrinsics"][()]
        attrs["background"] = f["background"][()]
        if "torso_shift" in f:  # (T,2) fractions of the side: where each training frame had the torso
            attrs["torso_shift"] = f["torso_shift"][()]
    return TorsoModel(gaussians, field.to(device).eval(), pose.to(device).eval(), _rasterizer(rasterizer, device), attrs)
