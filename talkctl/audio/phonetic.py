"""The `phonetic` audio features: speaker-independent phone posteriors (pocketsphinx, model in the wheel).

pocketsphinx ships a US-English acoustic model trained on many speakers. Its all-phone search
scores every context-independent (CI) phone state in every 10 ms frame; we read those state
scores (the decoder's senone log) rather than the decoded phone string, so a frame carries a soft
distribution over phones instead of one hard guess, and speech in another language maps onto the
nearest English phones instead of failing to decode.

Per feature frame (100 frames/s; frame j centred on t = j/100 s, as mel-formant):
  ph_<PHONE>   posterior of each CI phone of the model (42: 39 phones, SIL, +NSN+ noise, +SPN+
               speech-like noise): softmax over phones of -(best state score) / temperature
               (nats), then Gaussian-smoothed over time (smooth_ms) so boundaries are soft.
               Silent frames (the mel-formant rule: 50 dB below the clip's speech level, or below
               -80 dBFS) are exactly ph_SIL = 1: silence means a closed mouth, whatever the model says.
  voicing      periodicity in [0, 1] (as mel-formant); 0 in silent frames
  log_energy   ln(mean square) of the 25 ms frame after scaling speech to -20 dBFS (gain-free),
               floored 50 dB below that level (digital silence stays a few std from the mean)

Audio is decoded in fixed chunks of CHUNK_FRAMES with MARGIN_FRAMES of context on each side
(the recogniser normalises its cepstra per chunk); chunk boundaries depend only on the length
of the audio, so the features are the same whether chunks run in one process or in `workers`.
Speed (bench/bench_audio.py): one chunk decodes at about 25x real time on one core; 60 s of
audio takes about 1.5 s on 2 cores.

Why phones: a ridge read-out from these features to the tracked mouth opening, fitted on one
speaker, transfers to other speakers and languages better than from mel-formant features
(bench/audio_calibration.py).
"""
from __future__ import annotations

import os
import struct
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkctl.audio.melformant import (CHUNK_FRAMES as LEVEL_CHUNK, HOP, SILENT_FRAME_DB, SPEECH_LEVEL_DB, SR, levelled,
                                      speech_level_db)
from talkctl.errors import MissingToolError, UsageError

SCORE_UNIT_NATS = 1024 * np.log(1.0001)  # senone scores: log base 1.0001, shifted right by 10 bits
PS_FRAME_CENTRE = 205  # pocketsphinx frame i covers samples [160 i, 160 i + 410): centre 160 i + 205
CHUNK_FRAMES = 4000  # at most 40 s per decode
MARGIN_FRAMES = 100  # 1 s of context on each side of a chunk
SIL = "SIL"
ENERGY_FLOOR = 10.0 ** ((SPEECH_LEVEL_DB - SILENT_FRAME_DB) / 10.0)


def model_dir() -> Path:
    import pocketsphinx

    return Path(pocketsphinx.get_model_path("en-us"))


def read_ci_phones(mdef: Path) -> tuple[list[str], int]:
    """CI phone names and the number of CI senones from a binary (BMDF) model definition."""
    b = mdef.read_bytes()
    if b[:4] != b"BMDF":
        raise MissingToolError(f"{mdef} is not a binary pocketsphinx model definition")
    off = 12 + struct.unpack("<i", b[8:12])[0]  # magic, version, length of the text header
    n_ci, _, n_emit, n_ci_sen = struct.unpack("<4i", b[off:off + 16])
    off += 40  # ten int32 counts
    names = []
    for _ in range(n_ci):
        end = b.index(b"\0", off)
        names.append(b[off:end].decode("ascii"))
        off = end + 1
    if n_emit != 3 or n_ci_sen != 3 * n_ci or SIL not in names:
        raise MissingToolError(f"{mdef}: expected 3-state CI phones with a SIL phone "
                               f"(got {n_ci} phones, {n_emit} states, {n_ci_sen} CI senones)")
    return names, n_ci_sen


def read_senone_log(path: Path, n_ci_sen: int) -> np.ndarray:
    """(F, n_ci_sen) CI senone scores from a pocketsphinx senone log (per frame: int16 n_active,
    then all scores if every senone is active, else n_active uint8 id deltas and n_active int16
    scores). Score 0 = best in the frame, larger = less likely; inactive = +inf."""
    b = path.read_bytes()
    i = b.index(b"endhdr\n") + 7 + 4  # text header, then the int32 byte-order mark
    n_sen = int(b[:i].split(b"n_sen ")[1].split(b"\n")[0])
    rows = []
    while i + 2 <= len(b):
        n_active = struct.unpack_from("<h", b, i)[0]
        i += 2
        row = np.full(n_ci_sen, np.inf, dtype=np.float32)
        if n_active == n_sen:
            row[:] = np.frombuffer(b, "<i2", n_ci_sen, i)
            i += 2 * n_active
        else:
            ids = np.cumsum(np.frombuffer(b, np.uint8, n_active, i).astype(np.int64))
            scores = np.frombuffer(b, "<i2", n_active, i + n_active)
            keep = ids < n_ci_sen
            row[ids[keep]] = scores[keep]
            i += 3 * n_active
        rows.append(row)
    return np.array(rows, dtype=np.float32).reshape(-1, n_ci_sen)


class PhoneScorer:
    """One pocketsphinx all-phone decoder that hands back the CI senone scores of an utterance."""

    def __init__(self):
        import pocketsphinx

        model = model_dir()
        try:
            self.phones, self.n_ci_sen = read_ci_phones(model / "en-us" / "mdef")
        except OSError as exc:
            raise MissingToolError(f"pocketsphinx's en-us model is not readable ({exc}); reinstall pocketsphinx") from None
        self._logdir = tempfile.TemporaryDirectory(prefix="talkctl-senlog-")
        weakref.finalize(self, self._logdir.cleanup)
        cfg = pocketsphinx.Config()
        cfg["lm"] = None  # the default word LM and the all-phone search exclude each other
        cfg["hmm"] = str(model / "en-us")
        cfg["allphone"] = str(model / "en-us-phone.lm.bin")
        cfg["loglevel"] = "ERROR"
        cfg["senlogdir"] = self._logdir.name
        try:
            self.decoder = pocketsphinx.Decoder(cfg)
        except RuntimeError as exc:
            raise MissingToolError(f"pocketsphinx could not load its all-phone decoder from {model} ({exc}); "
                                   f"reinstall pocketsphinx") from None

    def __call__(self, pcm: bytes) -> np.ndarray:
        """16 kHz int16 little-endian -> (frames, n_ci_sen) scores in nats (0 = best)."""
        logdir = Path(self._logdir.name)
        for old in logdir.glob("*.sen"):
            old.unlink()
        d = self.decoder
        d.reinit_feat()  # resets the noise-removal estimate, which would otherwise carry over between calls
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        logs = sorted(logdir.glob("*.sen"))
        if not logs:
            raise MissingToolError("pocketsphinx wrote no senone log; this pocketsphinx build cannot give phone scores")
        scores = read_senone_log(logs[-1], self.n_ci_sen)
        logs[-1].unlink()
        return scores * np.float32(SCORE_UNIT_NATS)


_WORKER: PhoneScorer | None = None


def _worker_init() -> None:
    global _WORKER
    _WORKER = PhoneScorer()


def _worker_score(pcm: bytes) -> np.ndarray:
    return _WORKER(pcm)


def chunk_spans(n: int) -> list[tuple[int, int, int, int]]:
    """(decode start, decode end, keep start, keep end) feature frames of each chunk."""
    k = -(-n // CHUNK_FRAMES)
    edges = [n * i // k for i in range(k + 1)]  # equal chunks: no 10 ms tail decoded on its own
    return [(max(0, a - MARGIN_FRAMES), min(n, b + MARGIN_FRAMES), a, b) for a, b in zip(edges[:-1], edges[1:])]


def chunk_pcm(x: np.ndarray, start: int, end: int, gain: float = 1.0) -> bytes:
    """int16 samples of x * gain whose pocketsphinx frames i are centred on feature frames start + i
    (the gain applied to this chunk only: no whole-clip scaled copy)."""
    s0 = start * HOP - PS_FRAME_CENTRE
    s1 = (end - 1) * HOP + PS_FRAME_CENTRE + 1
    seg = x[max(0, s0):min(len(x), s1)] * np.float32(gain)
    seg = np.pad(seg, (max(0, -s0), max(0, s1 - len(x))))
    return (np.clip(seg, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


@dataclass
class PhoneticExtractor:
    temperature: float = 5.0   # nats: larger = flatter posteriors
    smooth_ms: float = 20.0    # Gaussian sigma of the temporal smoothing (0 = none)
    workers: int = 0           # processes for long audio (0 = up to 2, as the machine allows)
    gain_normalize: bool = True

    rate = SR / HOP  # 100 feature frames per second
    offset = 0.0
    scorer: PhoneScorer | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, cfg: dict, device: str = "cpu") -> "PhoneticExtractor":
        ex = cls(temperature=float(cfg.get("phone_temperature", 5.0)), smooth_ms=float(cfg.get("phone_smooth_ms", 20.0)),
                 workers=int(cfg.get("phone_workers", 0)), gain_normalize=bool(cfg.get("gain_normalize", True)))
        if not 0.1 <= ex.temperature <= 100.0:
            raise UsageError(f"phone_temperature={ex.temperature} is out of range; use 0.1..100 nats (default 5)")
        if not 0.0 <= ex.smooth_ms <= 200.0:
            raise UsageError(f"phone_smooth_ms={ex.smooth_ms} is out of range; use 0..200 ms (default 20)")
        if not 0 <= ex.workers <= 64:
            raise UsageError(f"phone_workers={ex.workers} is out of range; use 0 (auto) .. 64")
        ex.scorer = PhoneScorer()  # fails here, before any audio is read, if the model is unusable
        return ex

    @property
    def phones(self) -> list[str]:
        return self.scorer.phones

    @property
    def names(self) -> list[str]:
        return [f"ph_{p}" for p in self.phones] + ["voicing", "log_energy"]

    @property
    def dim(self) -> int:
        return len(self.phones) + 2

    @property
    def min_std(self) -> np.ndarray:
        return np.array([0.05] * len(self.phones) + [0.1, 1.0], dtype=np.float32)

    def phone_scores(self, x: np.ndarray, n: int, gain: float = 1.0) -> np.ndarray:
        """(n, phones) score of each phone's best state (of its 3 CI senones) for x * gain, row j
        centred on sample 160 j. Each chunk's scores go into the output as they come, reduced to
        phones first (a third of the senone scores: 10 minutes of audio kept 33 MB of them)."""
        spans = chunk_spans(n)
        workers = min(len(spans), self.workers or min(2, os.cpu_count() or 1))
        out = np.empty((n, self.scorer.n_ci_sen // 3), dtype=np.float32)

        def put(span, part):
            s, e, a, b = span
            rows = np.minimum(np.arange(a - s, b - s), len(part) - 1)  # the decoder may give a frame less at the end
            out[a:b] = part[rows].reshape(b - a, -1, 3).min(axis=2)

        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # forkserver: workers start from a clean process, not a copy of one that may hold torch threads
            with ProcessPoolExecutor(workers, multiprocessing.get_context("forkserver"), _worker_init) as pool:
                pcms = (chunk_pcm(x, s, e, gain) for s, e, _, _ in spans)
                for span, part in zip(spans, pool.map(_worker_score, pcms)):
                    put(span, part)
        else:
            for span in spans:
                put(span, self.scorer(chunk_pcm(x, span[0], span[1], gain)))
        return out

    def posteriors(self, best: np.ndarray) -> np.ndarray:
        """Phone posteriors (n, phones) from phone_scores, in place of them."""
        p = best
        p /= -self.temperature  # = -best / temperature, bit for bit
        p -= p.max(axis=1, keepdims=True)
        np.exp(p, out=p)
        p /= p.sum(axis=1, keepdims=True)
        if self.smooth_ms > 0 and len(p) > 1:
            from scipy.ndimage import gaussian_filter1d

            p = gaussian_filter1d(p, self.smooth_ms / 1000.0 * self.rate, axis=0, mode="nearest")
        return p

    def frames(self, wav: np.ndarray) -> np.ndarray:
        """(F, D) raw features. The level, silence and voicing are taken LEVEL_CHUNK frames at a
        time at the whole clip's speech level (as mel-formant does) and the senone scores chunk by
        chunk at its gain: memory stays ~ the waveform plus the output, whatever the audio's length."""
        wav = np.asarray(wav, dtype=np.float32)
        level = speech_level_db(wav)
        n = len(wav) // HOP + 1
        mean_square, silent, voicing, gain = [], [], [], 1.0
        for j in range(0, n, LEVEL_CHUNK):  # each chunk's frames (a copy of its samples) dropped at once
            lv = levelled(wav, self.gain_normalize, level, start=j, stop=j + LEVEL_CHUNK)
            mean_square.append(lv.mean_square)
            silent.append(lv.silent)
            voicing.append(lv.voicing)
            gain = lv.gain
        mean_square, silent, voicing = (np.concatenate(v) for v in (mean_square, silent, voicing))
        out = np.empty((n, len(self.phones) + 2), dtype=np.float32)  # filled in place: no copies of it
        post = out[:, :len(self.phones)]
        if silent.all():
            post[:] = 0.0
        else:
            post[:] = self.posteriors(self.phone_scores(wav, n, gain))
        post[silent] = 0.0
        post[silent, self.phones.index(SIL)] = 1.0
        out[:, -2] = voicing
        out[:, -1] = np.log(np.maximum(mean_square, ENERGY_FLOOR))
        return out
