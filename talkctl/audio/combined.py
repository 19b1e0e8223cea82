"""The `phonetic-mel` audio features: the phonetic extractor's phone posteriors, voicing and energy
beside the mel-formant extractor's log-mel and formants, frame by frame (both 100 frames/s, frame j
centred on t = j/100 s).

Why both: phones describe what is said in a way that carries across speakers; the log-mel and
formants keep the detail phones lose (how open a vowel is, how loud). An audio head's read-out
of the tracked mouth, fitted on one speaker and applied to the other shared clips, followed the
real mouths better with both than with either alone (bench/lipsync.py, bench/results).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkctl.audio.melformant import MelFormantExtractor
from talkctl.audio.phonetic import PhoneticExtractor

SHARED = ("voicing", "log_energy")  # in both: taken from the phonetic part only


@dataclass
class PhoneticMelExtractor:
    phonetic: PhoneticExtractor
    mel: MelFormantExtractor

    rate = 100.0
    offset = 0.0

    @classmethod
    def from_config(cls, cfg: dict, device: str = "cpu") -> "PhoneticMelExtractor":
        return cls(PhoneticExtractor.from_config(cfg, device), MelFormantExtractor.from_config(cfg, device))

    def _mel_columns(self) -> list[int]:
        return [i for i, n in enumerate(self.mel.names) if n not in SHARED]

    @property
    def names(self) -> list[str]:
        return self.phonetic.names + [self.mel.names[i] for i in self._mel_columns()]

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def min_std(self) -> np.ndarray:
        return np.concatenate([self.phonetic.min_std, self.mel.min_std[self._mel_columns()]]).astype(np.float32)

    def frames(self, wav: np.ndarray) -> np.ndarray:
        a, b = self.phonetic.frames(wav), self.mel.frames(wav)[:, self._mel_columns()]
        n = min(len(a), len(b))  # the same framing; guard a decoder's frame less at the very end
        return np.concatenate([a[:n], b[:n]], axis=1).astype(np.float32)
