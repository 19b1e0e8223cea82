"""The `mel-formant` audio features: numpy only, no downloaded weights.

Per feature frame (25 ms window, 10 ms hop -> 100 frames/s; frame j is centred on
sample j*160, i.e. t = j/100 s; the signal is zero-padded at both ends):
  logmel_0..N-1  ln(mel power + 1e-9): Hann window, 1024-point FFT, power divided by the
                 window's energy (so white noise of variance s2 gives s2 per bin), HTK-mel
                 triangles from fmin to fmax
  F1, F2, F3     formant frequencies in kHz from LPC (pre-emphasis 0.97, Hamming window,
                 autocorrelation + Levinson-Durbin, roots of A(z)); lowest three roots
                 between 90 Hz and 7.9 kHz with bandwidth < 700 Hz, each below its ceiling
                 (1.5 / 3.5 / 5 kHz; a root above it means that formant was not found)
  B1, B2, B3     ln(formant bandwidth in Hz)
  voicing        periodicity in [0, 1] (peak of the window-corrected normalised
                 autocorrelation of a 40 ms frame, lags for 75-500 Hz; Boersma 1993);
                 0 in silent frames
  log_energy     ln(mean square of the frame + 1e-9)
Frames that are unvoiced (voicing < 0.45) or silent (more than 50 dB below the clip's
speech level, or below -80 dBFS) get the neutral-vowel formants F = 0.5/1.5/2.5 kHz and
B = ln(100 Hz), so formant channels are always defined; voicing/log_energy say why.

Gain: before analysis the waveform is scaled so that its speech level (95th percentile of
frame energies) sits at -20 dBFS. Features are then independent of recording gain, and
new audio at render time can be normalised with the training clip's statistics.
A clip whose speech level is below -80 dBFS is "silent" and is not scaled.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft  # float32 transforms: ~3x faster than numpy.fft here

from talkctl.timebase import SAMPLE_RATE

SR = SAMPLE_RATE
HOP = 160  # 10 ms
WIN = 400  # 25 ms
WIN_VOICING = 640  # 40 ms: three periods of a 75 Hz voice
NFFT = 1024
PITCH_RANGE = (75.0, 500.0)
EPS = 1e-9
SPEECH_LEVEL_DB = -20.0
SILENT_CLIP_DB = -80.0  # speech level below this: the clip is silence
SILENT_FRAME_DB = 50.0  # frames this far below the speech level are silence
VOICING_THRESHOLD = 0.45
NEUTRAL_F_KHZ = (0.5, 1.5, 2.5)
NEUTRAL_B_HZ = 100.0
FORMANT_MAX_HZ = (1500.0, 3500.0, 5000.0)  # beyond these a root is not that formant (e.g. F1 missing)
CHUNK_FRAMES = 2000  # feature frames analysed at once (20 s): ~40 MB of spectra


def frame_signal(x: np.ndarray, win: int, hop: int = HOP, start: int = 0, stop: int | None = None,
                 gain: float = 1.0) -> np.ndarray:
    """(stop - start, win) frames j = start..stop-1 of x (all len(x)//hop + 1 by default), times
    `gain`; frame j covers samples [j*hop - win//2, j*hop + win - win//2), zero outside x. Only
    the samples these frames cover are copied, so long audio can be framed a chunk at a time."""
    n = len(x) // hop + 1
    stop = n if stop is None else min(stop, n)
    left = win // 2
    a, b = start * hop - left, (stop - 1) * hop - left + win  # the samples covered
    seg = np.zeros(max(b - a, win) + hop, np.float32)
    lo, hi = max(a, 0), min(b, len(x))
    if hi > lo:
        np.multiply(x[lo:hi], np.float32(gain), out=seg[lo - a:hi - a], casting="unsafe")
    s = seg.strides[0]
    return np.lib.stride_tricks.as_strided(seg, shape=(max(stop - start, 0), win), strides=(hop * s, s),
                                           writeable=False)


def mel_filterbank(n_mels: int, fmin: float, fmax: float, n_fft: int = NFFT, sr: int = SR) -> np.ndarray:
    """(n_mels, n_fft//2+1) HTK-mel triangles with peak 1."""
    def hz2mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def mel2hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel2hz(np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0.0, np.minimum((bins - lo) / (centre - lo), (hi - bins) / (hi - centre)))
    return fb.astype(np.float32)


def frame_energy_db(x: np.ndarray, chunk: int = 4000) -> np.ndarray:
    """Mean-square energy in dBFS of each 25 ms frame (same framing as the features), `chunk`
    frames at a time (their samples, framed, are 6 MB)."""
    n = len(x) // HOP + 1
    out = np.empty(n, np.float64)
    for j in range(0, n, chunk):
        fr = frame_signal(x, WIN, start=j, stop=j + chunk)
        out[j:j + len(fr)] = 10.0 * np.log10(np.einsum("ij,ij->i", fr, fr) / WIN + 1e-12)
    return out


def speech_level_db(x: np.ndarray) -> float:
    """Robust loudness of the speech in a clip: the 95th percentile of 25 ms frame energies."""
    if len(x) == 0:
        return -120.0
    return float(np.percentile(frame_energy_db(x), 95))


def levinson(r: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Levinson-Durbin over a batch: r (F, order+1) autocorrelations -> a (F, order+1), a[:,0] = 1, and
    the prediction error power. A(z) = sum_k a_k z^-k is the whitening filter."""
    n = r.shape[0]
    a = np.zeros((n, order + 1), dtype=np.float64)
    a[:, 0] = 1.0
    err = r[:, 0].astype(np.float64).copy()
    for i in range(1, order + 1):
        acc = r[:, i] + np.einsum("ij,ij->i", a[:, 1:i], r[:, i - 1:0:-1])
        k = -acc / err
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1.0 - k * k)
    return a, err


def lpc_formants(frames: np.ndarray, order: int, n_formants: int = 3, sr: int = SR,
                 max_bw: float = 700.0) -> tuple[np.ndarray, np.ndarray]:
    """Formant frequencies and bandwidths (Hz), (F, n_formants) each, NaN where not found.

    frames: (F, N) raw samples. Pre-emphasis 0.97, Hamming window, autocorrelation with a
    tiny white-noise floor (keeps silent frames solvable), Levinson-Durbin, then the roots
    of A(z) via the eigenvalues of its companion matrix (batched)."""
    n_frames, n = frames.shape
    # float64 here: high-order LPC roots are ill-conditioned, float32 rounding moves bandwidths by ~5 %
    x = np.empty(frames.shape, dtype=np.float64)
    x[:, 0] = frames[:, 0]
    x[:, 1:] = frames[:, 1:] - 0.97 * frames[:, :-1]
    x *= np.hamming(n)
    nfft = sfft.next_fast_len(n + order + 1, real=True)  # no circular wrap for lags <= order
    spec = sfft.rfft(x, nfft, axis=1)
    r = sfft.irfft(spec.real ** 2 + spec.imag ** 2, nfft, axis=1)[:, :order + 1]
    r[:, 0] = r[:, 0] * (1.0 + 1e-9) + 1e-12
    a, _ = levinson(r, order)
    comp = np.zeros((n_frames, order, order))
    comp[:, 0, :] = -a[:, 1:]
    comp[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    roots = np.linalg.eigvals(comp)
    freq = np.angle(roots) * sr / (2 * np.pi)
    with np.errstate(divide="ignore"):
        bw = -np.log(np.abs(roots)) * sr / np.pi
    ok = (roots.imag > 0) & (freq > 90.0) & (freq < sr / 2 - 90.0) & (bw < max_bw)
    key = np.where(ok, freq, np.inf)
    order_idx = np.argsort(key, axis=1)[:, :n_formants]
    f_sel = np.take_along_axis(key, order_idx, axis=1)
    b_sel = np.take_along_axis(bw, order_idx, axis=1)
    found = np.isfinite(f_sel) & (f_sel < np.asarray(FORMANT_MAX_HZ[:n_formants]))
    return np.where(found, f_sel, np.nan), np.where(found, b_sel, np.nan)


def periodicity(frames: np.ndarray, sr: int = SR, fmin: float = PITCH_RANGE[0], fmax: float = PITCH_RANGE[1]) -> np.ndarray:
    """(F,) voicing strength in [0, 1]: max over pitch lags of r_x(tau)/r_x(0) / (r_w(tau)/r_w(0))."""
    n = frames.shape[1]
    w = np.hanning(n + 2)[1:-1]
    x = (frames - frames.mean(axis=1, keepdims=True)) * w.astype(np.float32)
    lo, hi = int(sr / fmax), int(np.ceil(sr / fmin))
    nfft = sfft.next_fast_len(n + hi + 1, real=True)  # no circular wrap for lags <= hi
    spec = sfft.rfft(x, nfft, axis=1)
    r = sfft.irfft(spec.real ** 2 + spec.imag ** 2, nfft, axis=1)
    ws = np.fft.rfft(w, nfft)
    rw = np.fft.irfft(ws.real ** 2 + ws.imag ** 2, nfft)
    norm = r[:, lo:hi + 1] / (r[:, :1] + 1e-12) / (rw[lo:hi + 1] / rw[0])
    return np.clip(norm.max(axis=1), 0.0, 1.0)


@dataclass
class Levelled:
    """A clip scaled so its speech sits at SPEECH_LEVEL_DB, cut into 25 ms frames, with the frames
    that are silence (shared by every extractor that has voicing/energy channels)."""
    wav: np.ndarray         # (S,) the waveform as given
    gain: float             # the scaling applied to it
    frames: np.ndarray      # (F, WIN) frames of the scaled waveform (frame_signal)
    mean_square: np.ndarray  # (F,) after scaling
    silent: np.ndarray      # (F,) bool: below -80 dBFS or SILENT_FRAME_DB under the speech level, before scaling
    voicing: np.ndarray     # (F,) periodicity, 0 where silent

    @property
    def x(self) -> np.ndarray:
        """(S,) the scaled waveform (made on demand: a whole-clip copy)."""
        return self.wav * np.float32(self.gain)


def gain_factor(level_db: float, enabled: bool = True) -> float:
    """Factor that brings a clip with this speech level to SPEECH_LEVEL_DB (1 for silence)."""
    if not enabled or level_db < SILENT_CLIP_DB:
        return 1.0
    return float(10.0 ** ((SPEECH_LEVEL_DB - level_db) / 20.0))


def levelled(wav: np.ndarray, gain_normalize: bool = True, level_db: float | None = None,
             start: int = 0, stop: int | None = None) -> Levelled:
    """level_db: the speech level to normalise to instead of this clip's own (live streams, or
    the whole clip's for a chunk); start/stop: only frames start..stop-1 (long audio in chunks)."""
    wav = np.asarray(wav, dtype=np.float32)
    level = speech_level_db(wav) if level_db is None else float(level_db)
    g = gain_factor(level, gain_normalize)
    fr = frame_signal(wav, WIN, start=start, stop=stop, gain=g)
    ms = np.einsum("ij,ij->i", fr, fr) / WIN
    raw_db = 10.0 * np.log10(ms / (g * g) + 1e-12)  # before the gain: same frames as speech_level_db
    silent = (raw_db < SILENT_CLIP_DB) | (raw_db < level - SILENT_FRAME_DB)
    voicing = np.zeros(len(fr))
    for j in range(0, len(fr), CHUNK_FRAMES):  # the autocorrelations of a whole long clip at once took GBs
        frv = frame_signal(wav, WIN_VOICING, start=start + j, stop=start + min(j + CHUNK_FRAMES, len(fr)), gain=g)
        voicing[j:j + len(frv)] = np.where(silent[j:j + len(frv)], 0.0, periodicity(frv))
    return Levelled(wav, g, fr, ms, silent, voicing)


@dataclass
class MelFormantExtractor:
    n_mels: int = 80
    fmin: float = 40.0
    fmax: float = 7600.0
    lpc_order: int = 18
    gain_normalize: bool = True

    rate = SR / HOP  # 100 feature frames per second
    offset = 0.0  # frame j is centred on t = j / rate

    @classmethod
    def from_config(cls, cfg: dict, device: str = "cpu") -> "MelFormantExtractor":
        from talkctl.errors import UsageError

        ex = cls(n_mels=int(cfg.get("n_mels", 80)), fmin=float(cfg.get("fmin", 40.0)),
                 fmax=float(cfg.get("fmax", 7600.0)), lpc_order=int(cfg.get("lpc_order", 18)),
                 gain_normalize=bool(cfg.get("gain_normalize", True)))
        if not 0.0 <= ex.fmin < ex.fmax <= SR / 2:
            raise UsageError(f"mel range fmin={ex.fmin} fmax={ex.fmax} must satisfy 0 <= fmin < fmax <= {SR // 2}")
        if not 8 <= ex.n_mels <= 256:
            raise UsageError(f"n_mels={ex.n_mels} is out of range; use 8..256 (default 80)")
        if not 6 <= ex.lpc_order <= 40:
            raise UsageError(f"lpc_order={ex.lpc_order} is out of range; use 6..40 (default 18)")
        return ex

    @property
    def names(self) -> list[str]:
        return ([f"logmel_{i}" for i in range(self.n_mels)] + ["F1", "F2", "F3", "B1", "B2", "B3"]
                + ["voicing", "log_energy"])

    @property
    def dim(self) -> int:
        return self.n_mels + 8

    @property
    def min_std(self) -> np.ndarray:
        """Floors for the normalisation std, in each channel's units (a silent training clip has
        zero spread; these keep new audio's normalised values bounded)."""
        return np.array([1.0] * self.n_mels + [0.1] * 3 + [0.2] * 3 + [0.1, 1.0], dtype=np.float32)

    def frames(self, wav: np.ndarray, level_db: float | None = None, chunk: int = CHUNK_FRAMES) -> np.ndarray:
        """(F, D) raw features. level_db: the speech level to normalise to instead of this clip's own
        (a live stream computes each frame once, from the level known when it arrives: audio.streaming).
        Every frame depends only on its own samples and the level, so the spectra are computed
        `chunk` frames at a time: memory stays ~ the waveform plus the output, whatever the
        audio's length (the whole-clip transforms of 10 minutes took over 1 GB)."""
        wav = np.asarray(wav, dtype=np.float32)
        level = speech_level_db(wav) if level_db is None else float(level_db)
        fb = mel_filterbank(self.n_mels, self.fmin, self.fmax)
        n = len(wav) // HOP + 1
        out = np.empty((n, self.dim), np.float32)
        for j in range(0, n, chunk):
            lv = levelled(wav, self.gain_normalize, level, start=j, stop=j + chunk)
            out[j:j + len(lv.frames)] = self._analyse(lv, fb)
        return out

    def _analyse(self, lv: Levelled, fb: np.ndarray) -> np.ndarray:
        fr = lv.frames
        # log-mel
        hann = np.hanning(WIN + 2)[1:-1].astype(np.float32)
        spec = sfft.rfft(fr * hann, NFFT, axis=1)
        power = (spec.real ** 2 + spec.imag ** 2) / np.float32(np.sum(hann ** 2))
        logmel = np.log(power.astype(np.float32) @ fb.T + EPS)
        log_energy = np.log(lv.mean_square + EPS)
        voicing = lv.voicing
        voiced = voicing >= VOICING_THRESHOLD
        # formants where voiced; neutral vowel elsewhere
        f_hz = np.tile(np.array(NEUTRAL_F_KHZ) * 1000.0, (len(fr), 1))
        b_hz = np.full((len(fr), 3), NEUTRAL_B_HZ)
        if voiced.any():
            fv, bv = lpc_formants(fr[voiced], self.lpc_order)
            f_hz[voiced] = np.where(np.isnan(fv), f_hz[voiced], fv)
            b_hz[voiced] = np.where(np.isnan(bv), b_hz[voiced], bv)
        return np.concatenate([logmel, f_hz / 1000.0, np.log(b_hz), voicing[:, None], log_energy[:, None]], axis=1)
