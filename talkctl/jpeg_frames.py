"""Image sequences in an HDF5 artifact as JPEG: frames.h5's frames, parse.h5's torso targets.

Raw frames (even deflated) made a run directory ~170x its source video (a 50 s, 512^2 clip:
630 MB). Each frame is stored instead as a JPEG at the lowest quality in QUALITIES whose PSNR
against the raw frame is at least MIN_PSNR_DB (checked per frame by a binary search: the error,
~1.4 grey levels RMS, is below what training at 256^2 can see), about 10x smaller than deflate
and faster to decode (bench/bench_frame_store.py). Talking-head frames need 80-93.

Layout: a group NAME with
  data     (B,) uint8, 64 KiB chunks: every frame's JPEG bytes, one after another
  offsets  (T+1,) int64: frame t is data[offsets[t]:offsets[t+1]]
  quality  (T,) uint8: the JPEG quality each frame needed (its chroma subsampling is in the JPEG)
  attrs    codec="jpeg", shape=[T, H, W, 3], min_psnr_db, digest (SHA-256 of the frames' lengths and bytes)

`frame_images(f, NAME)` reads this, a source group (frame_cache.py: the source video, decoded
through a cache of these JPEG frames) or a plain (T, H, W, 3) uint8 dataset through the same
interface: .shape, len(), [t], [a:b], [list of t] -> uint8 arrays.
"""
from __future__ import annotations

import hashlib
import io
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

MIN_PSNR_DB = 45.0
QUALITIES = tuple(range(70, 100))  # JPEG qualities tried
CHUNK_BYTES = 1 << 16


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    import cv2  # its norm: ~0.02 ms at 512^2 where numpy's float arithmetic took ~5; encode runs it ~5 times a frame

    mse = cv2.norm(np.ascontiguousarray(a), np.ascontiguousarray(b), cv2.NORM_L2SQR) / a.size
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def _encode(frame: np.ndarray, quality: int, subsampling: int = 0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def decode(data) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.array(im.convert("RGB"))  # writable: torch.from_numpy takes it as is


def _lowest_quality(frame: np.ndarray, subsampling: int) -> tuple[bytes, int]:
    """(JPEG bytes, quality): the lowest quality of QUALITIES reaching MIN_PSNR_DB (the last one
    otherwise), found by binary search (PSNR grows with the quality)."""
    lo, hi = 0, len(QUALITIES) - 1  # the answer lies in [lo, hi]; hi passes or is the last
    best = None
    while lo < hi:
        mid = (lo + hi) // 2
        data = _encode(frame, QUALITIES[mid], subsampling)
        if psnr_db(frame, decode(data)) >= MIN_PSNR_DB:
            hi, best = mid, data
        else:
            lo = mid + 1
    return (best if best is not None else _encode(frame, QUALITIES[hi], subsampling)), QUALITIES[hi]


def encode(frame: np.ndarray, subsampling: int | None = None) -> tuple[bytes, int]:
    """(JPEG bytes, quality) at the lowest quality reaching MIN_PSNR_DB, with chroma `subsampling`
    (2: halved, 4:2:0; 0: full, 4:4:4) or, with None, whichever of the two is smaller. Smooth
    frames are ~9% smaller with 4:2:0; detailed ones (suits, hair, a low-bitrate source's grain)
    need quality 97+ with it where 4:4:4 gets there at ~92, 28% smaller. A function of the frame
    (and subsampling), so reruns are bit-equal. Thread-safe: PIL and OpenCV release the GIL."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if subsampling is not None:
        return _lowest_quality(frame, subsampling)
    return min((_lowest_quality(frame, sub) for sub in (2, 0)), key=lambda dq: len(dq[0]))


class ClipEncoder:
    """encode() for the frames of one clip, in order: its first frame picks the chroma subsampling
    (trying both), the others use it (a clip's frames are alike; half the work per frame)."""

    def __init__(self):
        self.subsampling: int | None = None
        self._lock = threading.Lock()

    def __call__(self, frame: np.ndarray) -> tuple[bytes, int]:
        with self._lock:
            if self.subsampling is None:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                self.subsampling = min((2, 0), key=lambda sub: len(_lowest_quality(frame, sub)[0]))
        return encode(frame, self.subsampling)


class JpegFrameWriter:
    """Append frames (already encoded with `encode`, in order) to group `name` of an open file."""

    def __init__(self, f, name: str, height: int, width: int):
        self.group = f.create_group(name)
        self.data = self.group.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.uint8,
                                              chunks=(CHUNK_BYTES,))
        self.hw = (int(height), int(width))
        self.offsets, self.qualities = [0], []
        self._sha = hashlib.sha256()

    def append(self, data: bytes, quality: int) -> None:
        self._sha.update(len(data).to_bytes(8, "little"))
        self._sha.update(data)
        n = self.offsets[-1]
        self.data.resize((n + len(data),))
        self.data[n:] = np.frombuffer(data, np.uint8)
        self.offsets.append(n + len(data))
        self.qualities.append(quality)

    def close(self) -> None:
        self.group.create_dataset("offsets", data=np.asarray(self.offsets, np.int64))
        self.group.create_dataset("quality", data=np.asarray(self.qualities, np.uint8))
        self.group.attrs.update(codec="jpeg", shape=np.array([len(self.qualities), *self.hw, 3], np.int64),
                                min_psnr_db=MIN_PSNR_DB, digest=self.digest())

    def digest(self) -> str:
        return self._sha.hexdigest()

    def __len__(self) -> int:
        return len(self.qualities)


class PipelinedJpegWriter(JpegFrameWriter):
    """A JpegFrameWriter fed raw frames in order (`put`): a worker thread encodes them (ClipEncoder)
    while the caller goes on decoding or detecting. Use as a context manager: leaving the block
    waits for every frame and stores the index, or, on an error, drops what is queued."""

    def __init__(self, f, name: str, height: int, width: int, ahead: int = 6):
        super().__init__(f, name, height, width)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-jpeg")  # one: frames stay in order
        self._encode, self._pending, self._ahead = ClipEncoder(), deque(), ahead

    def _flush(self, keep: int) -> None:
        while len(self._pending) > keep or (self._pending and self._pending[0].done()):
            self.append(*self._pending.popleft().result())

    def put(self, frame: np.ndarray) -> None:
        self._pending.append(self._pool.submit(self._encode, frame))
        self._flush(keep=self._ahead)

    def close(self) -> None:
        """Every frame written and the group's index stored."""
        try:
            self._flush(keep=0)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
        super().close()

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "PipelinedJpegWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Finished on success (close), abandoned on an error or an interrupt (abort)."""
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __len__(self) -> int:
        return len(self.qualities) + len(self._pending)


class JpegFrames:
    """Read side of a JPEG frame group: indexing like a (T, H, W, 3) uint8 dataset."""
    dtype = np.dtype(np.uint8)

    def __init__(self, group, keep_open=None):
        self._file = keep_open  # the file the group lives in, when this reader alone holds it open
        self.data = group["data"]
        self.offsets = group["offsets"][()]
        self.shape = tuple(int(v) for v in group.attrs["shape"])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _one(self, t: int) -> np.ndarray:
        t = int(t)
        if t < 0:
            t += len(self)
        if not 0 <= t < len(self):
            raise IndexError(f"frame {t} of {len(self)}")
        return decode(self.data[self.offsets[t]:self.offsets[t + 1]])

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self._one(key)
        if isinstance(key, tuple):  # (frame, rows, cols): a window of one frame (decoded whole)
            return self[key[0]][key[1:]]
        idx = range(len(self))[key] if isinstance(key, slice) else np.asarray(key).reshape(-1)
        if len(idx) == 0:
            return np.zeros((0, *self.shape[1:]), np.uint8)
        return np.stack([self._one(t) for t in idx])


def frame_images(f, name: str):
    """The image sequence `name` of an open artifact: a JPEG group, or a plain uint8 dataset."""
    obj = f[name]
    codec = obj.attrs.get("codec") if hasattr(obj, "attrs") else None
    if codec == "jpeg":
        return JpegFrames(obj)
    if codec == "source":
        from talkctl.frame_cache import cached_frames  # it builds on this module

        return cached_frames(obj)
    return obj
