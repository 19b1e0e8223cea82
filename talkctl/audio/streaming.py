"""A run's audio features computed incrementally, as a live stream's chunks arrive.

    feats = StreamingFeatures(recipe, level_db=None)    # recipe: FeatureRecipe.from_artifact(run)
    w = feats.push(samples)     # (k, W, D) windows of the video frames that became computable
    w = feats.finish()          # the stream ended: the remaining frames (edges as the offline path)

Concatenated, the windows are the offline recipe's (FeatureRecipe(wav)) for the same audio: each
feature frame is computed once from the samples around it (the extractor is frame-local except
for the clip's speech level), and the video-frame windows are cut by the same window_indices.

The speech level (mel-formant's gain normalisation and silence test use the whole clip's 95th
percentile of frame energies) cannot be known before the audio has ended. With level_db given
(the client knows its audio), the features equal the offline ones exactly. Without it, each batch
of frames uses the level of the frames received so far; that level equals the offline one once
the stream has ended, and the features converge to the offline ones as speech accumulates.

Only extractors whose frames depend on a bounded neighbourhood of samples can stream; the others
(hubert / wav2vec2: 1 s of context per chunk; phonetic: per-chunk cepstral normalisation) are
refused with the reason.
"""
from __future__ import annotations

import math

import numpy as np

from talkctl.audio.recipe import FeatureRecipe, window_indices
from talkctl.errors import UsageError
from talkctl.timebase import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

# samples each side of a feature frame's centre that decide it (mel-formant: the 40 ms voicing frame)
FRAME_CONTEXT = {"mel-formant": 320}
LEVEL_PERCENTILE = 95.0  # as melformant.speech_level_db


def check_streamable(recipe: FeatureRecipe) -> None:
    if recipe.name not in FRAME_CONTEXT:
        raise UsageError(f"this run was trained with {recipe.name} audio features, which cannot be computed "
                         f"incrementally (each frame depends on seconds of audio around it); live serving needs "
                         f"{' or '.join(FRAME_CONTEXT)} features: retrain from `talkctl extract-audio --features "
                         f"mel-formant --force`")
    if recipe.norm != "clip":
        raise UsageError(f"this run normalises each audio by its own speech statistics (norm={recipe.norm}), which a "
                         "live stream cannot know before it has ended; live serving needs the training clip's: "
                         "retrain from `talkctl extract-audio --features mel-formant --set norm=clip --force`")
    if recipe.extractor.offset != 0.0 or SAMPLE_RATE % recipe.extractor.rate:
        raise UsageError(f"{recipe.name} frames at {recipe.extractor.rate}/s offset {recipe.extractor.offset} s "
                         "do not fall on whole samples; they cannot stream")


def lookahead_samples(recipe: FeatureRecipe, context_after: int) -> int:
    """Audio past the end of a video frame needed before it can be rendered: the feature window
    of the frame `context_after` frames later (the condition's attention) and its samples."""
    check_streamable(recipe)
    hop = int(SAMPLE_RATE // recipe.extractor.rate)
    i = np.arange(200)
    last = window_indices(len(i) + context_after, 1 << 30, recipe.extractor.rate, 0.0, recipe.window)[:, -1]
    need = hop * last[i + context_after] + FRAME_CONTEXT[recipe.name]
    return int(max(0, (need - SAMPLES_PER_FRAME * (i + 1)).max()))


class Tail:
    """The last part of a growing array along axis 0, addressed by global index."""

    def __init__(self, trailing: tuple = (), dtype=np.float32):
        self.start = 0
        self.data = np.zeros((0, *trailing), dtype=dtype)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, x: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(x, dtype=self.data.dtype)])

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.data[np.asarray(idx) - self.start]

    def span(self, lo: int, hi: int) -> np.ndarray:
        """Items lo..hi-1; zeros before 0 and after the end (the offline path's padding)."""
        out = np.zeros((hi - lo, *self.data.shape[1:]), dtype=self.data.dtype)
        a, b = max(lo, 0), min(hi, self.end)
        if a < self.start:
            raise ValueError(f"items before {self.start} were dropped")
        if b > a:
            out[a - lo:b - lo] = self.data[a - self.start:b - self.start]
        return out

    def drop_before(self, k: int) -> None:
        k = min(max(k, self.start), self.end)
        self.data = self.data[k - self.start:].copy()
        self.start = k


class StreamingFeatures:
    """One utterance's feature windows, made as its audio arrives (see the module doc)."""

    def __init__(self, recipe: FeatureRecipe, level_db: float | None = None):
        check_streamable(recipe)
        self.recipe, self.fixed_level = recipe, level_db
        ex = recipe.extractor
        self.hop = int(SAMPLE_RATE // ex.rate)
        self.ctx = FRAME_CONTEXT[recipe.name]
        self.margin = math.ceil(self.ctx / self.hop)  # whole hops of context: slices start on a frame centre
        self.samples = Tail()
        self.feats = Tail((ex.dim,))
        self.energies: list[np.ndarray] = []
        self.n_windows = 0
        self.finished = False
        self.level = level_db

    @property
    def n_samples(self) -> int:
        return self.samples.end

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self.finished:
            raise ValueError("the stream has finished")
        self.samples.append(np.asarray(samples, dtype=np.float32).reshape(-1))
        n = self.n_samples
        self._features((n - self.ctx) // self.hop + 1 if n >= self.ctx else 0)
        return self._windows(final=False)

    def finish(self) -> np.ndarray:
        """The last frames, with the zero padding the offline extractor applies at the end."""
        self.finished = True
        self._features(self.n_samples // self.hop + 1)
        return self._windows(final=True)

    def _features(self, j1: int) -> None:
        j0 = self.feats.end
        if j1 <= j0:
            return
        c = self.margin
        seg = self.samples.span(self.hop * (j0 - c), self.hop * (j1 - 1) + self.ctx)
        from talkctl.audio.melformant import frame_energy_db

        if self.fixed_level is None:
            self.energies.append(frame_energy_db(seg)[c:c + j1 - j0])
            self.level = float(np.percentile(np.concatenate(self.energies), LEVEL_PERCENTILE))
        raw = self.recipe.extractor.frames(seg, level_db=self.level)[c:c + j1 - j0]
        self.feats.append((raw - self.recipe.mean) / self.recipe.std)
        self.samples.drop_before(self.hop * (j1 - c))

    def _windows(self, final: bool) -> np.ndarray:
        r, ex = self.recipe, self.recipe.extractor
        n_frames = self.n_samples // SAMPLES_PER_FRAME
        if final:
            idx = window_indices(n_frames, self.feats.end, ex.rate, ex.offset, r.window, FPS)[self.n_windows:]
        else:
            idx = window_indices(n_frames, 1 << 30, ex.rate, ex.offset, r.window, FPS)[self.n_windows:]
            idx = idx[:int(np.sum(idx.max(axis=1) < self.feats.end))]  # rows grow with i: a prefix is ready
        idx = np.maximum(idx, 0)
        out = self.feats.take(idx) if len(idx) else np.zeros((0, r.window, ex.dim), np.float32)
        self.n_windows += len(idx)
        if not final:  # the next frame's window starts here; earlier feature frames are done with
            nxt = window_indices(self.n_windows + 1, 1 << 30, ex.rate, ex.offset, r.window, FPS)[-1, 0]
            self.feats.drop_before(int(max(nxt, 0)))
        return out.astype(np.float32, copy=False)
