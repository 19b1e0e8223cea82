"""How far a video's picture is ahead of its sound, estimated without any downloaded model.

A clip whose sound is late or early against its picture is common (a re-encode, a capture card,
a corpus cut), and it matters twice: a head trained on it learns the offset, and a real speaker
used as the ground truth of lip sync (eval --drive-video) is only a ground truth up to it.

The estimate: every phone of the speaker-independent recogniser (audio.phonetic) gets how far it
opens the jaw and lips (OPENING: open vowels wide, close vowels narrow, bilabials shut; phonetics,
not fitted to any clip). The phone posteriors weighted by it, smoothed over 40 ms, give an opening
curve from the sound alone; it is correlated with the tracked mouth opening at shifts of 10 ms up
to MAX_SECONDS either way, and the best shift is the offset. This curve follows the real mouth at
0.2-0.6 (any language), enough to place its peak to a frame on a few seconds of speech.

    est = estimate_offset(wav, mouth_open, found)    # None when there is too little speech
    est.seconds   # > 0: the picture leads the sound (the mouth moves before its sound is heard)

Training (train-deform, train-a2l, setting av_offset): a clip whose estimate is at least
AUTO_MIN_SECONDS is realigned before the audio path learns from it (aligned_clip_audio), so the
head is in sync with any sound that is; smaller offsets are left as they are (within what speech
itself varies from clip to clip: french_50s 0 ms, german_20s +50 ms, grid_s1_180s -60 ms).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from talkctl.timebase import FPS

# jaw and lip opening of each phone of the en-us model, 0 (shut) .. 1 (wide open)
OPENING = {
    "AA": 1.0, "AE": 0.9, "AH": 0.7, "AO": 0.85, "AW": 0.85, "AY": 0.85, "EH": 0.65, "ER": 0.45, "EY": 0.55,
    "IH": 0.45, "IY": 0.3, "OW": 0.6, "OY": 0.7, "UH": 0.4, "UW": 0.3,
    "B": 0.0, "P": 0.0, "M": 0.0, "F": 0.1, "V": 0.1, "W": 0.2,
    "TH": 0.3, "DH": 0.3, "S": 0.2, "Z": 0.2, "SH": 0.3, "ZH": 0.3, "CH": 0.25, "JH": 0.25,
    "T": 0.3, "D": 0.3, "N": 0.3, "L": 0.4, "R": 0.35, "Y": 0.3, "K": 0.4, "G": 0.4, "NG": 0.35, "HH": 0.5,
    "+SPN+": 0.2,  # speech-like noise; SIL and +NSN+ (noise) are shut
}
SMOOTH_S = 0.04
MAX_SECONDS = 0.5
MIN_FRAMES = 125     # 5 s of video with a face: fewer cannot place a peak
MIN_CORR = 0.15      # a peak lower than this is not told apart from chance


@dataclass
class AvOffset:
    seconds: float       # > 0: the picture leads the sound
    corr: float          # the opening curve against the mouth at that offset
    corr_at_zero: float  # ... and as the file has them

    def frames(self, fps: int = FPS) -> int:
        return int(round(self.seconds * fps))

    def as_dict(self) -> dict:
        return {"av_offset_ms": round(1000.0 * self.seconds), "av_offset_corr": round(self.corr, 4),
                "av_offset_corr_at_zero": round(self.corr_at_zero, 4)}


def opening_curve(posteriors: np.ndarray, phones: list[str], rate: float) -> np.ndarray:
    """(F,) opening implied by (F, phones) phone posteriors, smoothed over SMOOTH_S."""
    from scipy.ndimage import gaussian_filter1d

    w = np.array([OPENING.get(p, 0.0) for p in phones], np.float64)
    return gaussian_filter1d(np.asarray(posteriors, np.float64) @ w, SMOOTH_S * rate, mode="nearest")


def offset_from_curve(curve: np.ndarray, rate: float, offset: float, mouth: np.ndarray,
                      found: np.ndarray | None = None, fps: int = FPS) -> AvOffset | None:
    """Best shift of `curve` (feature frame j centred on offset + j / rate s) against `mouth`
    (one value per video frame, frame i centred on (i + 0.5) / fps s); None when fewer than
    MIN_FRAMES frames have a face or the best correlation is under MIN_CORR."""
    from talkctl.metrics.lipsync import pearson

    mouth = np.asarray(mouth, np.float64)
    ok = np.isfinite(mouth) & (np.ones(len(mouth), bool) if found is None else np.asarray(found, bool)[:len(mouth)])
    if ok.sum() < MIN_FRAMES or np.ptp(mouth[ok]) == 0:
        return None
    centre = ((np.arange(len(mouth)) + 0.5) / fps - offset) * rate
    shifts = np.arange(-int(MAX_SECONDS * rate), int(MAX_SECONDS * rate) + 1)
    corr = []
    for k in shifts:  # the sound `k` feature frames later against the picture now
        at = np.clip(np.round(centre).astype(np.int64) + k, 0, len(curve) - 1)
        corr.append(pearson(curve[at][ok], mouth[ok]))
    corr = np.nan_to_num(np.array(corr), nan=-1.0)
    best = int(np.argmax(corr))
    if corr[best] < MIN_CORR:
        return None
    return AvOffset(float(shifts[best] / rate), float(corr[best]), float(corr[shifts == 0][0]))


def estimate_offset(wav: np.ndarray, mouth: np.ndarray, found: np.ndarray | None = None) -> AvOffset | None:
    """The picture-to-sound offset of a clip from its 16 kHz waveform and its mouth opening per
    video frame (audio.phonetic needs pocketsphinx: MissingToolError without it)."""
    from talkctl.audio.phonetic import PhoneticExtractor

    ex = PhoneticExtractor.from_config({})
    raw = ex.frames(np.asarray(wav, np.float32))
    curve = opening_curve(raw[:, :len(ex.phones)], ex.phones, ex.rate)
    return offset_from_curve(curve, ex.rate, ex.offset, mouth, found)


# ---- realigning a training clip -----------------------------------------------------------
AUTO_MIN_SECONDS = 0.1   # "auto" realigns from this offset on (smaller ones are within what speech itself varies)
AUTO_MIN_GAIN = 0.05     # ... when the curve follows the mouth this much better there than as the file has it


def shift_waveform(wav: np.ndarray, seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """The sound moved `seconds` earlier (> 0: it was late against the picture), same length:
    new[t] = old[t + seconds], silence where nothing is left."""
    n = int(round(seconds * sample_rate))
    wav = np.asarray(wav)
    out = np.zeros_like(wav)
    if n >= 0:
        out[:len(wav) - n] = wav[n:]
    else:
        out[-n:] = wav[:len(wav) + n]
    return out


def checked_setting(setting) -> float | None:
    """The setting `av_offset` as seconds, or None for auto; UsageError for anything else."""
    from talkctl.errors import UsageError

    if isinstance(setting, (int, float)) and not isinstance(setting, bool):
        return float(setting)
    if setting is None or setting == "auto":
        return None
    raise UsageError(f"av_offset={setting!r}: use auto or the seconds the picture leads the sound (e.g. 0.12)")


def resolve_setting(cfg: dict, device: str) -> dict:
    """A training stage's `resolve` (pipeline.prepare): av_offset checked before any work, auto as None."""
    return {**cfg, "av_offset": checked_setting(cfg.get("av_offset"))}


def training_shift(setting, wav: np.ndarray, mouth: np.ndarray | None, found: np.ndarray | None,
                   log) -> tuple[float, AvOffset | None]:
    """(seconds to realign the training clip's sound by, the estimate) for the setting `av_offset`:
    None or "auto": the estimate when it is at least AUTO_MIN_SECONDS and AUTO_MIN_GAIN clear,
    else 0; a number: that many seconds (0: the clip as it is). The estimate is logged."""
    from talkctl.errors import MissingToolError

    log = log or logging.getLogger(__name__)
    setting = checked_setting(setting)
    if setting is not None:
        return setting, None
    if mouth is None:
        log.info("the track has no mouth opening to estimate the clip's picture-to-sound offset; its sound is used as it is")
        return 0.0, None
    try:
        est = estimate_offset(wav, mouth, found)
    except MissingToolError as exc:
        log.info("the clip's picture-to-sound offset is not estimated (%s); its sound is used as it is", exc)
        return 0.0, None
    if est is None:
        log.info("the clip's picture-to-sound offset could not be placed (too little speech); its sound is used as it is")
        return 0.0, None
    if abs(est.seconds) >= AUTO_MIN_SECONDS and est.corr - est.corr_at_zero >= AUTO_MIN_GAIN:
        log.warning("the clip's picture is %+.0f ms ahead of its sound (estimated from its phones and mouth): the sound "
                    "is realigned for training (set av_offset=0 to keep it as it is)", 1000 * est.seconds)
        return est.seconds, est
    log.info("the clip's picture is %+.0f ms ahead of its sound (estimated): used as it is", 1000 * est.seconds)
    return 0.0, est


@dataclass
class AlignedAudio:
    features: np.ndarray         # (T, W, D) windows of the (realigned) sound
    wav: np.ndarray | None       # the (realigned) waveform, None when audio.h5 has none
    shift: float                 # seconds the sound was moved earlier (0: as the file has it)
    estimate: AvOffset | None

    def attrs(self) -> dict:
        """What a trained artifact records of it."""
        return {"av_offset_applied_s": self.shift,
                **({} if self.estimate is None else {"av_offset_estimate_s": self.estimate.seconds})}


def aligned_clip_audio(audio, mouth: np.ndarray | None, found: np.ndarray | None, setting, log) -> AlignedAudio:
    """The training clip's feature windows and waveform from an open audio.h5, realigned to its
    picture as the setting `av_offset` says (training_shift); the windows are cut again from its
    feature frames, so the realignment is exact to a feature frame."""
    from talkctl.audio.recipe import window_indices

    log = log or logging.getLogger(__name__)
    feats = audio["features"]
    wav = audio["waveform"][()] if "waveform" in audio else None
    shift, est = (0.0, None) if wav is None else training_shift(setting, wav, mouth, found, log)
    if shift and "feature_frames" not in audio:
        log.warning("audio.h5 has no feature frames to realign (made by an older talkctl): its sound is used as it is; "
                    "rerun extract-audio --force to realign it")
        shift = 0.0
    if not shift:
        return AlignedAudio(np.asarray(feats[()], np.float32), wav, 0.0, est)
    frames = audio["feature_frames"]
    idx = window_indices(feats.shape[0], frames.shape[0], float(audio.attrs["feature_rate"]),
                         float(audio.attrs["feature_offset"]) - shift, int(feats.shape[1]))
    return AlignedAudio(np.asarray(frames[()], np.float32)[idx], shift_waveform(wav, shift), shift, est)
