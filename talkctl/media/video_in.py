"""Video in: decoded frames from ffmpeg (the one video decoder), and the one crop of a clip.

`FrameStream` runs ffmpeg with a filter graph and yields raw RGB frames read by a
background thread (the pipe read releases the GIL, so decoding overlaps with the landmark
detector); only a few frames are ever held in memory, whatever the clip length.
`SourceFrames` (frames by index, for pasting renders back) is built on it.
`choose_crop` picks ONE square crop for a whole clip (fixed camera) from sampled face boxes.
"""
from __future__ import annotations

import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkctl.errors import InputError, StageError
from talkctl.media.ffmpeg import ffmpeg_exe, probe
from talkctl.timebase import FPS


def _ffmpeg_cmd(path: Path, filters: str | None, extra: list[str], seek: float = 0.0) -> list[str]:
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    if seek > 0:
        cmd += ["-ss", f"{seek:.4f}"]
    cmd += ["-i", str(path), "-an", "-sn", "-dn"]
    if filters:
        cmd += ["-vf", filters]
    return cmd + extra


def read_still(path: Path, at: float = 0.0) -> np.ndarray:
    """One decoded frame (as ffmpeg shows it: rotation metadata applied) as (H, W, 3) uint8 RGB."""
    seek = ["-ss", f"{at:.3f}"] if at > 0 else []
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *seek, "-i", str(path), "-an", "-sn",
           "-frames:v", "1", "-f", "image2pipe", "-vcodec", "ppm", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    data = proc.stdout
    if proc.returncode != 0 or not data.startswith(b"P6"):
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-2:]
        raise InputError(f"{path}: ffmpeg could not decode a video frame ({' | '.join(tail) or 'no video stream'}); "
                         "give a video file with a picture track")
    # PPM header: "P6\n<w> <h>\n<maxval>\n" then w*h*3 bytes
    fields, pos = [], 2
    while len(fields) < 3:
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(int(data[pos:end]))
        pos = end
    w, h = fields[0], fields[1]
    pos += 1
    return np.frombuffer(data, np.uint8, count=w * h * 3, offset=pos).reshape(h, w, 3)


class FrameStream:
    """Iterate (H, W, 3) uint8 frames of `path` after ffmpeg filter graph `filters`.

    `width`/`height` must be the size the filter graph outputs; `seek` starts that many seconds
    in. Use as a context manager: leaving early kills ffmpeg and the reader thread.
    """

    def __init__(self, path: Path, filters: str | None, width: int, height: int, what: str = "decode the video",
                 buffered: int = 8, seek: float = 0.0):
        self.path, self.width, self.height, self.what = Path(path), width, height, what
        self.frame_bytes = width * height * 3
        self._err = tempfile.TemporaryFile()
        cmd = _ffmpeg_cmd(self.path, filters, ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"], seek)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err, bufsize=0)
        self._q: queue.Queue = queue.Queue(maxsize=buffered)
        self._stop = False
        self._partial = 0
        self._thread = threading.Thread(target=self._pump, name="ffmpeg-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        out = self.proc.stdout
        try:
            while not self._stop:
                buf = bytearray(self.frame_bytes)
                view, got = memoryview(buf), 0
                while got < self.frame_bytes:
                    n = out.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < self.frame_bytes:
                    self._partial = got
                    break
                self._q.put(np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3))
        except (OSError, ValueError):  # pipe closed by close()
            pass
        finally:
            self._q.put(None)

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is None:
                break
            yield item
        rc = self.proc.wait()
        if rc != 0 and not self._stop:
            self._err.seek(0)
            tail = self._err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise StageError(f"ffmpeg failed to {self.what} {self.path.name}: {' | '.join(tail) or 'exit ' + str(rc)}")

    def close(self) -> None:
        self._stop = True
        if self.proc.poll() is None:
            self.proc.kill()
        while self._thread.is_alive():  # unblock a reader waiting on a full queue
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

def video_size(path: Path, what: str = "a video file") -> tuple[int, int]:
    """(width, height) of the first video stream; InputError for a missing file or one without video."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"video {path} does not exist; give an existing video file")
    info = probe(path)
    if not info["video"]:
        raise InputError(f"{path} has no video stream; give {what}")
    return info["video"]["width"], info["video"]["height"]


class SourceFrames:
    """Frames of a video at 25 fps, fetched by index in batches: read forward while the
    indices move forward (one ffmpeg stream), reopened at a seek when they jump back (ping-pong)."""

    def __init__(self, video: Path):
        self.video = Path(video)
        self.w, self.h = video_size(self.video, "the run's source video (--full-frame needs it)")
        self._stream: FrameStream | None = None
        self._iter = None
        self._next = 0
        self._last: tuple[int, np.ndarray] | None = None

    def _open(self, start: int) -> None:
        self.close()
        self._stream = FrameStream(self.video, f"fps={FPS}", self.w, self.h, what="read", seek=start / FPS)
        self._iter = iter(self._stream)
        self._next = start

    def _read(self) -> np.ndarray | None:
        fr = next(self._iter, None)
        if fr is not None:
            self._next += 1
        return fr

    def get(self, indices) -> list[np.ndarray]:
        indices = [int(i) for i in indices]
        lo, hi = min(indices), max(indices)
        if self._stream is None or lo < self._next - 1 or lo > self._next + 50:
            self._open(lo)
        got: dict[int, np.ndarray] = {}
        if self._last is not None and self._last[0] >= lo:
            got[self._last[0]] = self._last[1]
        while self._next <= hi:
            i = self._next
            fr = self._read()
            if fr is None:
                break
            if i >= lo:
                got[i] = fr
                self._last = (i, fr)
        fallback = got.get(max(got)) if got else (self._last[1] if self._last else np.zeros((self.h, self.w, 3), np.uint8))
        return [got.get(i, fallback) for i in indices]

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream, self._iter = None, None


# ---- the crop -------------------------------------------------------------------------
@dataclass(frozen=True)
class Crop:
    """A square in source pixels; may reach outside the image (that part is padded black)."""
    x0: int
    y0: int
    side: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.side]

    def is_whole(self, width: int, height: int) -> bool:
        return self.x0 == 0 and self.y0 == 0 and self.side == width == height


def _even(v: float) -> int:
    return int(round(v / 2.0)) * 2


def choose_crop(boxes: np.ndarray, width: int, height: int, size: int, scale: float = 2.4,
                shift_down: float = 0.15, margin: float = 1.15) -> Crop:
    """One square crop holding head and shoulders in every sampled frame.

    boxes: (N, 4) face boxes x0, y0, x1, y1 in source pixels (the subject, one per sample).
    side = max(scale x median face size, margin x the union of the boxes), centred below the
    face centre by shift_down face sizes, kept inside the image when it fits, else padded.
    A square source of exactly `size` pixels (an already prepared crop) is kept whole.
    """
    if width == height == size:
        return Crop(0, 0, size)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    face = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    ux0, uy0 = boxes[:, 0].min(), boxes[:, 1].min()
    ux1, uy1 = boxes[:, 2].max(), boxes[:, 3].max()
    needed = margin * max(ux1 - ux0, uy1 - uy0)          # every face position must fit
    side = max(scale * face, needed)
    side = min(side, max(needed, min(width, height)))    # shrink to the image before padding
    if width == height and side >= width:
        return Crop(0, 0, width)
    side = _even(max(side, 16))
    cx = (ux0 + ux1) / 2.0
    cy = (uy0 + uy1) / 2.0 + shift_down * face

    def place(c: float, dim: int) -> int:
        lo = c - side / 2.0
        if side <= dim:  # inside the image
            return int(min(max(_even(lo), 0), dim - side))
        return int(round(lo))  # larger than the image: centred on the face, padded

    x0, y0 = place(cx, width), place(cy, height)
    return Crop(x0, y0, side)


def crop_filter(crop: Crop, width: int, height: int, size: int, fps: int = FPS) -> str:
    """ffmpeg filter graph: resample to `fps`, pad if the crop leaves the image, crop, resize."""
    parts = [f"fps={fps}"]
    if not (crop.is_whole(width, height) and width == size):
        left, top = max(0, -crop.x0), max(0, -crop.y0)
        right, bottom = max(0, crop.x0 + crop.side - width), max(0, crop.y0 + crop.side - height)
        padded = bool(left or top or right or bottom)
        if padded or (crop.x0 | crop.y0 | crop.side) & 1:
            parts.append("format=rgb24")  # exact odd offsets and padding (no chroma rounding)
        if padded:
            parts.append(f"pad={width + left + right}:{height + top + bottom}:{left}:{top}:black")
        if not crop.is_whole(width, height):
            parts.append(f"crop={crop.side}:{crop.side}:{crop.x0 + left}:{crop.y0 + top}")
        if crop.side != size:
            parts.append(f"scale={size}:{size}:flags={'area' if crop.side > size else 'bicubic'}")
    parts.append("format=rgb24")
    return ",".join(parts)


def sample_filter(width: int, height: int, every: int, max_side: int = 480,
                  fps: int = FPS) -> tuple[str, int, int, tuple[float, float]]:
    """Filter for the crop pass: every `every`-th frame at `fps`, at reduced resolution.

    Returns (filters, out_w, out_h, (sx, sy)) with sx, sy = source pixels per sample pixel.
    """
    factor = max(1.0, max(width, height) / max_side)
    ow, oh = max(2, _even(width / factor)), max(2, _even(height / factor))
    return f"fps={fps / every:.6g},scale={ow}:{oh},format=rgb24", ow, oh, (width / ow, height / oh)
