"""The `facexlib` parsing backend: BiSeNet (or ParseNet) face parsing, 19 CelebAMask-HQ classes,
mapped to background / head / neck / torso. Weights are looked up by parsing.facexlib_weights."""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from talkctl.errors import MissingToolError
from talkctl.parsing import regions as hr
from talkctl.parsing.facexlib_weights import FACEXLIB_WEIGHTS, find_weights, probe as _facexlib_probe

# class id -> our label, per model (the two models order the classes differently)
_CLASSES = {
    # 0 bg, 1 skin, 2-3 brows, 4-5 eyes, 6 glasses, 7-8 ears, 9 earring, 10 nose, 11 mouth,
    # 12-13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat
    "bisenet": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 1, 1],
    # 0 bg, 1 skin, 2 nose, 3 glasses, 4-5 eyes, 6-7 brows, 8-9 ears, 10 mouth, 11-12 lips,
    # 13 hair, 14 hat, 15 earring, 16 necklace, 17 neck, 18 cloth
    "parsenet": [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3],
}
_NORM = {"bisenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "parsenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


def load_facexlib_model(name: str, device: str):
    """facexlib's own loader, pointed at the folder where the weight file was found."""
    reason = _facexlib_probe(device)
    weights = find_weights(FACEXLIB_WEIGHTS[name])
    if reason is None and weights is None:
        reason = f"weight file {FACEXLIB_WEIGHTS[name]} for facexlib_model={name} not found"
    if reason:
        raise MissingToolError(f"parsing backend 'facexlib' is unusable: {reason}")
    from facexlib.parsing import init_parsing_model

    try:
        return init_parsing_model(model_name=name, half=False, device=device, model_rootpath=str(weights.parent))
    except TypeError:  # facexlib < 0.3 has no model_rootpath: it only reads its own weights folder
        return init_parsing_model(model_name=name, half=False, device=device)


def labels_from_logits(logits, model: str) -> np.ndarray:
    """(N,19,H,W) class scores -> (N,H,W) uint8 labels 0..3."""
    lut = np.array(_CLASSES[model], np.uint8)
    return lut[logits.argmax(1).cpu().numpy()]


class FacexlibParser:
    def __init__(self, config: dict, device: str, n_landmarks: int, model=None):
        self.name = config["facexlib_model"]
        if self.name not in _CLASSES:
            raise MissingToolError(f"facexlib_model {self.name!r} unknown; use bisenet or parsenet")
        self.device = device
        self.net = model if model is not None else load_facexlib_model(self.name, device)
        self.batch = int(config["batch"])

    def _run(self, frames: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        size = x.shape[-2:]
        if tuple(size) != (512, 512):  # the models are trained on 512x512 faces
            x = F.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
        mean, std = (torch.tensor(v, device=self.device).view(1, 3, 1, 1) for v in _NORM[self.name])
        with torch.no_grad():
            out = self.net((x - mean) / std)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            if tuple(logits.shape[-2:]) != tuple(size):
                logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        return labels_from_logits(logits, self.name)

    def person(self, frame: np.ndarray) -> np.ndarray:
        return self._run(frame[None])[0] != hr.BACKGROUND

    def stream(self, items: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        batch = []
        for item in items:
            batch.append(item)
            if len(batch) == self.batch:
                yield from self._flush(batch)
                batch = []
        if batch:
            yield from self._flush(batch)

    def _flush(self, batch):
        labels = self._run(np.stack([f for _, f, _ in batch]))
        for (t, frame, _), lab in zip(batch, labels):
            yield t, frame, lab

    def close(self) -> None:
        pass
