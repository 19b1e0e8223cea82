"""Training-only supervision of an audio condition by the tracked mouth and jaw landmarks
(train-deform audio_landmark_loss): the free audio code through a linear read-out, or the
mouth state (head.mouth_state) as it is."""
from __future__ import annotations

import numpy as np
import torch

from talkctl.devices import to_device


class LandmarkReadout(torch.nn.Module):
    """Training-only supervision of the audio condition (audio_landmark_loss): its output, through a
    linear read-out (the free code: targets = per-coordinate standardised mouth/jaw offsets) or as
    it is (mouth-state mode: targets = the tracked states), against the tracked targets."""

    def __init__(self, code_dim: int, targets: np.ndarray, linear: bool = True):
        super().__init__()
        t = torch.as_tensor(targets, dtype=torch.float32)
        self.register_buffer("targets", (t - t.mean(0)) / (t.std(0) + 1e-6) if linear else t)
        self.linear = torch.nn.Linear(code_dim, t.shape[1]) if linear else None

    def loss(self, condition, frames: np.ndarray) -> torch.Tensor:
        """frames: host indices (the condition finds shared windows there without a GPU sync)."""
        target = self.targets[to_device(frames, self.targets.device, torch.long)]
        if self.linear is None:  # mouth state: every ensemble member fitted on its own
            out = condition.member_states(frames)
            return torch.nn.functional.mse_loss(out, target.expand_as(out))
        return torch.nn.functional.mse_loss(self.linear(condition.encode(frames)), target)
