"""The training data of one run, opened once: cameras, frames, masks, plate, split.

`Scene(ctx, cfg, audio=False)` opens frames.h5, track.h5, parse.h5 (and audio.h5) for the
stage's lifetime and exposes them at the training resolution `cfg["resolution"]`:
  w2c (T,4,4) head-to-camera per frame, K (3,3) at training resolution,
  blink (T,E) eye inputs [blink, brow raise] (face.brows), lip_box (T,4) in training pixels (lip_box_full, frames_full: at the crop's size), background (R,R,3),
  train_idx / held_idx, with audio: features (T,W,D) and speech (T,) activity (audio.recipe.speech_activity)
  of the sound realigned to the picture as cfg "av_offset" says (audio: audio.av_offset.AlignedAudio),
  head_targets(idx), torso_targets(idx), full_frames(idx).
Labels: 0 background, 1 head, 2 neck, 3 torso (parse.h5).
"""
from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import torch

from talkctl import artifacts
from talkctl.audio.av_offset import aligned_clip_audio
from talkctl.audio.recipe import speech_activity
from talkctl.errors import ArtifactError, command
from talkctl.face.brows import read_eye_inputs
from talkctl.gs.training import FrameStore, resize_images, scale_intrinsics, spread
from talkctl.jpeg_frames import frame_images
from talkctl.timebase import split_frames

HEAD, NECK, TORSO = 1, 2, 3
# Share of the GPU's memory the frame stores may fill (uint8): 25% of 80 GB holds a 5-minute
# clip at 512^2 (7600 frames x 2.6 MB); longer clips use the LRU cache of `cache_frames`.
GPU_FRAME_SHARE = 0.25


class Scene:
    def __init__(self, ctx, cfg: dict, audio: bool = False):
        self._stack = ExitStack()
        self.device = ctx.device
        dev = self.device
        res = self.res = int(cfg["resolution"])
        frames = self._stack.enter_context(ctx.read("frames"))
        track = artifacts.read_track(ctx.run, ("world_to_cam", "intrinsics", "lip_box"))
        parse = self._stack.enter_context(ctx.read("parse"))
        images = frame_images(frames, "frames")
        self.T, self.S = int(images.shape[0]), int(images.shape[1])
        if track.n_frames != self.T or parse["labels"].shape[0] != self.T:
            raise ArtifactError("frames.h5, track.h5 and parse.h5 disagree on the frame count: rerun "
                                f"{command('track', '--run', ctx.run, '--force')} and {command('parse', '--run', ctx.run)}")
        cache = int(cfg.get("cache_frames", 512))
        if dev.startswith("cuda"):  # every frame stays on the GPU (uint8) when the stores fit the share
            per = res * res * (3 + 4)  # frame, 4 label masks
            total = torch.cuda.get_device_properties(torch.device(dev)).total_memory
            cache = self.T if self.T * per < GPU_FRAME_SHARE * total else cache
        self.frames = FrameStore(images, res, "rgb", cache_frames=cache, device=dev)
        self.labels = FrameStore(parse["labels"], res, "labels", n_classes=4, cache_frames=cache, device=dev)
        # the torso target is the frame itself under the neck and torso labels (parsing/torso_target.py)
        self.neck_to_plate = parse.attrs["neck_fill"] == "background"
        bg = torch.from_numpy(parse["background"][()]).float()[None] / 255.0
        self.background = resize_images(bg, res)[0].to(dev)
        self.w2c = torch.as_tensor(track.world_to_cam, dtype=torch.float32, device=dev)
        self.K_crop = np.asarray(track.intrinsics, dtype=np.float32)
        self.K = torch.as_tensor(scale_intrinsics(self.K_crop, self.S, res), device=dev)
        eye = read_eye_inputs(ctx.run, brows=bool(cfg.get("brows", False)))  # (T,E) [blink, brow raise]
        self.blink = torch.as_tensor(eye, dtype=torch.float32, device=dev)
        self.lip_box_full = np.asarray(track.lip_box)  # at the crop's full size S
        self.lip_box = torch.as_tensor(np.round(self.lip_box_full.astype(np.float64) * res / self.S).astype(np.int64))
        self.frames_full = images  # (T,S,S,3) uint8 in frames.h5, read by the full-resolution lip patch
        self.train_idx, self.held_idx = split_frames(self.T)
        self.features = self.speech = self.audio = None
        if audio:
            a = self._stack.enter_context(ctx.read("audio"))
            mouth = artifacts.read_track(ctx.run, ("mouth_open", "valid"))
            self.audio = aligned_clip_audio(a, mouth.mouth_open, mouth.valid, cfg.get("av_offset"), ctx.log)
            self.features = self.audio.features
            if self.audio.wav is not None:  # (T,) 0 in pauses
                self.speech = speech_activity(self.audio.wav, len(self.features))
            self.limit_to_audio(len(self.features), ctx.log, ctx.run)
            self.audio_extractor = str(a.attrs.get("extractor", ""))
        self.head_depth = float(torch.median(self.w2c[:, 2, 3]))
        self.torso_shift = None  # (T,2) fractions of the side (gs.torso_track), set by the torso stages

    def track_torso(self) -> np.ndarray:
        """Track the torso's 2D shift per frame (gs.torso_track) and use it from now on."""
        from talkctl.gs.torso_track import track_torso

        self.torso_shift = track_torso(self.frames.ds, self.labels.ds, self.train_idx, self.res)
        return self.torso_shift

    def torso_K(self, idx) -> torch.Tensor:
        """(B,3,3) torso cameras of frames idx: drawn at each frame's tracked torso shift (if any)."""
        idx = np.asarray(idx).reshape(-1)
        if self.torso_shift is None:
            return self.K.expand(len(idx), 3, 3)
        from talkctl.gs.torso_track import shifted_intrinsics

        return torch.as_tensor(shifted_intrinsics(self.K.cpu().numpy(), self.torso_shift[idx] * self.res),
                               device=self.K.device)

    def limit_to_audio(self, n_audio: int, log, run) -> None:
        """Audio that ends before the video (common in joined or trimmed clips): frames without
        audio are neither trained on nor evaluated; the held-out split stays that of the video."""
        if n_audio >= self.T:
            return
        self.train_idx = self.train_idx[self.train_idx < n_audio]
        self.held_idx = self.held_idx[self.held_idx < n_audio]
        if len(self.held_idx) == 0 or len(self.train_idx) < 0.5 * self.T:
            raise ArtifactError(
                f"audio.h5 covers {n_audio} of {self.T} video frames ({n_audio / 25:.1f} of {self.T / 25:.1f} s), "
                "too little to train and evaluate: check the video's audio track, then rerun "
                f"{command('extract-audio', '--run', run, '--force')}")
        log.warning("the audio ends %.2f s before the video: the last %d frames are not used",
                    (self.T - n_audio) / 25, self.T - n_audio)

    def close(self):
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def held_subset(self, n: int) -> np.ndarray:
        """n evenly spaced held-out frames (all when n <= 0 or n >= their count)."""
        return spread(self.held_idx, n)

    def masks(self, idx) -> torch.Tensor:
        return self.labels.get(idx)  # (B,R,R,4)

    def head_targets(self, idx):
        """(frame × head mask over black, head mask (B,R,R,1))."""
        m = self.masks(idx)[..., HEAD:HEAD + 1]
        return self.frames.get(idx) * m, m

    def torso_targets(self, idx):
        """(the torso target × torso_mask over black, torso_mask): the frame under the neck and
        torso labels; with neck_fill=background the neck shows the background plate instead."""
        frames = self.frames.get(idx)
        lab = self.masks(idx)
        neck, torso = lab[..., NECK:NECK + 1], lab[..., TORSO:TORSO + 1]
        if self.neck_to_plate:
            return frames * torso + self.background * neck, neck + torso
        return frames * (neck + torso), neck + torso

    def torso_mask(self, idx):
        """(B,R,R,1): neck | torso. (parse's neck continuation under the chin stays out: learnt by
        the torso it showed as skin on the collar wherever the rendered jaw did not cover it.)"""
        lab = self.masks(idx)
        return lab[..., NECK:NECK + 1] + lab[..., TORSO:TORSO + 1]

    def full_frames(self, idx):
        return self.frames.get(idx)
