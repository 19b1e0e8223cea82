"""Video out through an ffmpeg pipe: stream rendered frames to an .mp4 with sound, paste a
square render back into a full frame, tag the finished file.

Memory stays flat: frames go to ffmpeg's stdin through a small bounded queue drained by a
writer thread (so rendering and encoding overlap), never collected in a list. The output
is written as `<stem>.partial<suffix>` and renamed when ffmpeg has finished; on any error
or Ctrl-C ffmpeg is killed and the partial file removed, so nothing half-written is left.

Duration rule: with audio, the video has exactly round(audio_seconds * fps) frames and the
audio is padded/trimmed to exactly that many frame periods; extra frames are dropped and
missing ones are filled by repeating the last frame. The counts are reported in `stats()`.
"""
from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from talkctl.errors import InputError, StageError
from talkctl.media.audio import decode_audio
from talkctl.media.ffmpeg import ffmpeg_exe, run_ffmpeg, write_wav
from talkctl.timebase import SAMPLE_RATE as AUDIO_SR


def _as_uint8(frame) -> np.ndarray:
    if hasattr(frame, "detach"):  # torch tensor: (H,W,3) on any device
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frame


class VideoWriter:
    """Stream uint8 RGB frames (H,W,3) into an H.264 yuv420p .mp4, with AAC audio muxed in.

    with VideoWriter("out.mp4", fps=25, size=(512, 512), audio=wav16k) as vw:
        for frame in frames: vw.write(frame)
    print(vw.stats())

    audio: None, a path (any format ffmpeg reads) or a float array (16 kHz mono, [-1,1]).
    metadata: mp4 tags (title, comment, ...) such as the render's pose source and run.
    Float frames in [0,1] and torch tensors are accepted too. Odd sizes are padded by one
    edge-replicated row/column (yuv420p needs even dimensions).
    """

    def __init__(self, path: str | os.PathLike, fps: int = 25, size: tuple[int, int] = (512, 512),
                 audio: None | str | os.PathLike | np.ndarray = None, crf: int = 18,
                 preset: str = "medium", audio_rate: int = AUDIO_SR, queue_frames: int = 8,
                 metadata: dict[str, str] | None = None):
        self.path = Path(path).expanduser().absolute()
        self.partial = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix or '.mp4'}")
        self.fps = int(fps)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"video size {size} is not positive; give (width, height)")
        self.enc_width, self.enc_height = self.width + self.width % 2, self.height + self.height % 2
        self.crf, self.preset = int(crf), preset
        self.audio_rate = audio_rate
        self._audio_src = audio
        self.metadata = dict(metadata or {})  # mp4 tags, e.g. {"comment": "talkctl render: poses ..."}
        self.target_frames: int | None = None
        self.frames_written = 0  # frames accepted from the caller (excludes padding)
        self.frames_dropped = 0  # frames beyond the audio's length
        self.frames_padded = 0  # last frame repeated to reach the audio's length
        self.encode_seconds = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=queue_frames)
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last: np.ndarray | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._stderr = None
        self._t0 = 0.0

    # ---- lifecycle --------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _check_output(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.partial, "wb"):
                pass
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}; choose a writable output path") from None
        if self.path.is_dir():
            self.partial.unlink(missing_ok=True)
            raise InputError(f"output {self.path} is a directory; give a file name such as {self.path / 'out.mp4'}")

    def open(self) -> None:
        self._check_output()
        try:
            self._start()
        except BaseException:  # bad audio, ffmpeg missing, Ctrl-C: leave nothing behind
            self.abort()
            raise

    def _start(self) -> None:
        self._tmpdir = tempfile.TemporaryDirectory(prefix="talkctl-vw-")
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.enc_width}x{self.enc_height}",
                "-r", str(self.fps), "-i", "pipe:0"]
        if self._audio_src is not None:
            wav = self._audio_src
            if not isinstance(wav, np.ndarray):
                wav = decode_audio(wav, self.audio_rate)
            wav = np.asarray(wav, dtype=np.float32).reshape(-1)
            self.target_frames = int(round(len(wav) / self.audio_rate * self.fps))
            # exactly target_frames frame periods of sound: pad with silence or trim
            n = int(round(self.target_frames * self.audio_rate / self.fps))
            wav = np.pad(wav[:n], (0, max(0, n - len(wav))))
            wav_path = Path(self._tmpdir.name) / "audio.wav"
            write_wav(wav_path, wav, self.audio_rate)
            args += ["-i", str(wav_path), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        for k, v in self.metadata.items():
            args += ["-metadata", f"{k}={v}"]
        args += ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-pix_fmt", "yuv420p",
                 "-movflags", "+faststart", "-f", "mp4", str(self.partial)]
        self._stderr = open(Path(self._tmpdir.name) / "ffmpeg.log", "w+b")
        self._t0 = time.perf_counter()
        # own session: a terminal Ctrl-C reaches only us, and abort() decides ffmpeg's fate
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                      start_new_session=True)
        self._thread = threading.Thread(target=self._pump, name="talkctl-video-writer", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while True:
                buf = self._queue.get()
                if buf is None:
                    break
                self._proc.stdin.write(buf)
        except BaseException as exc:  # broken pipe: ffmpeg died; reported on the next write/close
            self._error = exc
            # keep draining so the producer never blocks on a full queue
            while self._queue.get() is not None:
                pass

    def _ffmpeg_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:])
        except Exception:
            return ""

    def write(self, frame) -> None:
        """Queue one frame (H,W,3) uint8 RGB (or float in [0,1]); blocks when the encoder lags."""
        if self._proc is None:
            raise RuntimeError("VideoWriter.write before open() / outside `with`")
        if self._error is not None:
            raise StageError(f"ffmpeg stopped while encoding {self.path}: {self._ffmpeg_tail() or self._error}")
        if self.target_frames is not None and self.frames_written >= self.target_frames:
            self.frames_dropped += 1
            return
        frame = _as_uint8(frame)
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame shape {frame.shape} != ({self.height}, {self.width}, 3)")
        if (self.enc_width, self.enc_height) != (self.width, self.height):
            frame = np.pad(frame, ((0, self.enc_height - self.height), (0, self.enc_width - self.width), (0, 0)),
                           mode="edge")
        frame = np.ascontiguousarray(frame)
        self._last = frame
        self._queue.put(frame.tobytes())
        self.frames_written += 1

    def close(self) -> dict:
        """Pad to the audio's length, finish encoding, rename the partial file; returns stats()."""
        if self._proc is None:
            return self.stats()
        try:
            if self.target_frames is not None and self.frames_written < self.target_frames:
                fill = self._last if self._last is not None else np.zeros((self.enc_height, self.enc_width, 3), np.uint8)
                buf = fill.tobytes()
                for _ in range(self.target_frames - self.frames_written):
                    self._queue.put(buf)
                    self.frames_padded += 1
            self._queue.put(None)
            self._thread.join()
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = self._proc.wait()
            if self._error is not None or rc != 0:
                raise StageError(f"ffmpeg failed to encode {self.path}: {self._ffmpeg_tail() or self._error or f'exit {rc}'}")
            if self.frames_written + self.frames_padded == 0:
                raise StageError(f"no frames were written to {self.path}; nothing to encode")
            os.replace(self.partial, self.path)
            self.encode_seconds = time.perf_counter() - self._t0
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        return self.stats()

    def abort(self) -> None:
        """Kill ffmpeg and remove the partial file (error or Ctrl-C path)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        deadline = time.monotonic() + 5
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < deadline:
            try:  # unblock the writer thread; ffmpeg is dead so its writes fail fast
                self._queue.put(None, timeout=0.05)
            except queue.Full:
                pass
            self._thread.join(timeout=0.05)
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except Exception:
                pass
            self._proc.wait()
        self.partial.unlink(missing_ok=True)
        self._cleanup()

    def _cleanup(self) -> None:
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def stats(self) -> dict:
        n = self.frames_written + self.frames_padded
        return {"path": str(self.path), "frames": n, "frames_written": self.frames_written,
                "frames_padded": self.frames_padded, "frames_dropped": self.frames_dropped,
                "encode_seconds": round(self.encode_seconds, 3),
                "encode_fps": round(n / self.encode_seconds, 1) if self.encode_seconds > 0 else None}


def paste_full_frame(render_rgb: np.ndarray, source_frame: np.ndarray, crop, mask: np.ndarray | None = None) -> np.ndarray:
    """Put a square render (S,S,3) back into the source frame (H,W,3) at crop [x0, y0, side].

    The crop may reach outside the frame (padded crop): only the overlapping part is pasted.
    The render is resized to side x side when S != side. `mask` (S,S) in [0,1], optional,
    blends render over source (e.g. a feathered head+torso alpha) instead of replacing it.
    Returns a new uint8 frame.
    """
    x0, y0, side = (int(round(v)) for v in crop)
    out = np.array(source_frame, dtype=np.uint8, copy=True)
    render = _as_uint8(render_rgb)
    H, W = out.shape[:2]
    if render.shape[0] != side or render.shape[1] != side:
        import cv2  # comes with mediapipe

        interp = cv2.INTER_AREA if render.shape[0] > side else cv2.INTER_LINEAR
        render = cv2.resize(render, (side, side), interpolation=interp)
        if mask is not None:
            mask = cv2.resize(np.asarray(mask, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    fx0, fy0 = max(x0, 0), max(y0, 0)  # overlap in frame coordinates
    fx1, fy1 = min(x0 + side, W), min(y0 + side, H)
    if fx1 <= fx0 or fy1 <= fy0:
        return out
    rx0, ry0 = fx0 - x0, fy0 - y0  # the same region in render coordinates
    patch = render[ry0:ry0 + (fy1 - fy0), rx0:rx0 + (fx1 - fx0)]
    if mask is None:
        out[fy0:fy1, fx0:fx1] = patch
    else:
        a = np.clip(np.asarray(mask, np.float32)[ry0:ry0 + (fy1 - fy0), rx0:rx0 + (fx1 - fx0), None], 0, 1)
        base = out[fy0:fy1, fx0:fx1].astype(np.float32)
        out[fy0:fy1, fx0:fx1] = (a * patch + (1 - a) * base + 0.5).astype(np.uint8)
    return out


def tag_mp4(path: Path, tags: dict) -> None:
    """Write the metadata (known only once rendering is done) by a stream-copy remux, atomically."""
    tmp = path.with_name(f"{path.stem}.tagging{path.suffix}")
    args = ["-y", "-i", str(path), "-map", "0", "-c", "copy"]
    for k, v in tags.items():
        args += ["-metadata", f"{k}={v}"]
    args += ["-movflags", "+faststart+use_metadata_tags", str(tmp)]
    try:
        run_ffmpeg(args, f"write the metadata of {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

