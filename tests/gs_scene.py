"""A tiny generated talking-head scene for the Gaussian stages' tests.

Ground truth: a few hundred coloured Gaussians in the canonical head cube plus a dark
"mouth" blob whose vertical position follows a synthetic audio feature; cameras that turn
a little around the head; a torso of Gaussians in camera space that shifts with the head
pose. Everything is rendered with the project's rasteriser and written as frames.h5,
track.h5, parse.h5 and audio.h5 (the agreed layouts) into a run directory.
"""
from __future__ import annotations

import math

import h5py
import numpy as np
import torch

from talkctl import artifacts
from talkctl.rundir import RunDir
from talkctl.gs.gaussians import GaussianModel


def look_camera(yaw: float, pitch: float, dist: float) -> np.ndarray:
    """world_to_cam of a camera at distance `dist` looking at the origin (head turned by yaw/pitch)."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    m = np.eye(4)
    m[:3, :3] = Rx @ Ry
    m[:3, 3] = [0, 0, dist]
    return m.astype(np.float32)


def mouth_signal(T: int) -> np.ndarray:
    t = np.arange(T)
    return (0.5 + 0.5 * np.sin(t * 0.9) * np.sin(t * 0.23)).astype(np.float32)  # in [0,1]


def gt_head(n: int = 300, seed: int = 0) -> GaussianModel:
    g = torch.Generator().manual_seed(seed)
    # a ball of coloured Gaussians
    d = torch.randn(n, 3, generator=g)
    d = d / d.norm(dim=1, keepdim=True) * (0.55 + 0.1 * torch.rand(n, 1, generator=g))
    colors = torch.stack([0.8 + 0.1 * d[:, 0], 0.6 + 0.2 * d[:, 1], 0.5 + 0.3 * d[:, 2]], -1).clamp(0, 1)
    m = GaussianModel.random(n, (-1, -1, -1), (1, 1, 1), 0, opacity=0.9, generator=g, colors=colors)
    m.params["means"].data.copy_(d)
    m.params["log_scales"].data.fill_(math.log(0.09))
    return m


def render_layer(model_means, model, w2c, K, size, rasterize):
    w = torch.as_tensor(w2c)[None]
    out = rasterize(model_means, model.quats, model.scales, model.opacities, model.colors(), w,
                    torch.as_tensor(K)[None], size, size)
    return out.rgb[0], out.alpha[0]


def make_scene(run_path, T: int = 24, size: int = 48, seed: int = 0, mouth_amp: float = 0.25):
    from talkctl.kernels.raster import rasterize

    torch.manual_seed(seed)
    run = RunDir(run_path)
    head = gt_head(seed=seed)
    # the mouth: a dark blob at the front (z<0 faces the camera) moving down as the mouth opens
    mouth = GaussianModel.random(1, (0, 0, 0), (0, 0, 0), 0, opacity=0.99, colors=torch.tensor([[0.05, 0.05, 0.1]]))
    mouth.params["log_scales"].data.copy_(torch.log(torch.tensor([[0.22, 0.12, 0.05]])))
    torso = GaussianModel.random(200, (-1.6, 0.7, 3.6), (1.6, 1.8, 4.2), 0, opacity=0.9,
                                 generator=torch.Generator().manual_seed(seed + 1),
                                 colors=torch.tensor([[0.2, 0.3, 0.7]]).expand(200, 3))
    torso.params["log_scales"].data.fill_(math.log(0.18))
    K = np.array([[size * 1.4, 0, size / 2], [0, size * 1.4, size / 2], [0, 0, 1]], np.float32)
    sig = mouth_signal(T)
    bg_color = torch.tensor([0.9, 0.9, 0.85])
    frames = np.zeros((T, size, size, 3), np.uint8)
    labels = np.zeros((T, size, size), np.uint8)
    torso_frames = np.zeros_like(frames)
    w2cs = np.zeros((T, 4, 4), np.float32)
    with torch.no_grad():
        for t in range(T):
            w2c = look_camera(0.25 * math.sin(t * 0.4), 0.1 * math.sin(t * 0.3 + 1), 3.0)
            w2cs[t] = w2c
            mouth_pos = torch.tensor([[0.0, 0.2 + mouth_amp * float(sig[t]), -0.62]], dtype=torch.float32)
            hm = torch.cat([head.means, mouth_pos])
            comb = GaussianModel(hm, torch.cat([head.params["quats"], mouth.params["quats"]]),
                                 torch.cat([head.params["log_scales"], mouth.params["log_scales"]]),
                                 torch.cat([head.params["opacity_logits"], mouth.params["opacity_logits"]]),
                                 torch.cat([head.params["sh_dc"], mouth.params["sh_dc"]]),
                                 torch.zeros(len(hm), 0, 3), 0)
            h_rgb, h_a = render_layer(comb.means, comb, w2c, K, size, rasterize)
            shift = torch.tensor([[0.3 * float(w2c[0, 2]), 0.0, 0.0]])  # torso follows the head turn
            t_rgb, t_a = render_layer(torso.means + shift, torso, np.eye(4, dtype=np.float32), K, size, rasterize)
            plate = bg_color.expand(size, size, 3)
            torso_img = t_rgb + (1 - t_a) * plate
            img = h_rgb + (1 - h_a) * torso_img
            frames[t] = (img.clamp(0, 1) * 255).round().numpy().astype(np.uint8)
            torso_frames[t] = (torso_img.clamp(0, 1) * 255).round().numpy().astype(np.uint8)
            lab = np.zeros((size, size), np.uint8)
            lab[t_a[..., 0].numpy() > 0.5] = 3
            lab[h_a[..., 0].numpy() > 0.5] = 1
            labels[t] = lab
    # lip box: project the mouth region
    lip_box = np.tile(np.array([[size * 0.3, size * 0.5, size * 0.7, size * 0.85]], np.int32), (T, 1))
    W, D = 4, 3
    feats = np.zeros((T, W, D), np.float32)
    for t in range(T):
        for w in range(W):
            s = sig[min(max(t + w - W // 2, 0), T - 1)]
            feats[t, w] = [s, 1 - s, 0.5 * s * s]
    fp = {"fingerprint": "test", "config": {}, "inputs": {}}
    with artifacts.write(run, "frames", producer="test", **fp) as f:
        f.create_dataset("frames", data=frames, **artifacts.frame_chunks(frames.shape))
        f.attrs.update({"fps": 25, "size": size, "crop": [0, 0, size], "source_size": [size, size]})
    with artifacts.write(run, "track", producer="test", **fp) as f:
        f["world_to_cam"] = w2cs
        f["intrinsics"] = K
        f["blink"] = np.zeros(T, np.float32)
        f["mouth_open"] = sig
        f["lip_box"] = lip_box
        f["face_box"] = np.tile(np.array([[0, 0, size, size]], np.int32), (T, 1))
        f["valid"] = np.ones(T, bool)
    with artifacts.write(run, "parse", producer="test", **fp) as f:
        f.create_dataset("labels", data=labels, **artifacts.frame_chunks(labels.shape))
        f.create_dataset("torso_frames", data=torso_frames, **artifacts.frame_chunks(torso_frames.shape))
        f["background"] = (bg_color.expand(size, size, 3).numpy() * 255).round().astype(np.uint8)
    with artifacts.write(run, "audio", producer="test", **fp) as f:
        f["features"] = feats
        f["waveform"] = np.zeros(T * 640, np.float32)
        f.attrs.update({"sample_rate": 16000, "fps": 25, "n_frames": T, "window": W, "feature_dim": D,
                        "extractor": "test", "feature_rate": 25})
    return run, sig


def run_frames(run: RunDir, idx):
    """(frames (B,H,W,3) float, head masks (B,H,W,1), world_to_cam (B,4,4), K) of frames idx of a run."""
    with h5py.File(run.path / "frames.h5") as f:
        fr = torch.tensor(f["frames"][()][idx]).float() / 255
    with h5py.File(run.path / "parse.h5") as f:
        head = torch.tensor(f["labels"][()][idx] == 1).float()[..., None]
    with h5py.File(run.path / "track.h5") as f:
        return fr, head, f["world_to_cam"][()][idx], f["intrinsics"][()]
