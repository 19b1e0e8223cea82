"""frames.h5 as the source video itself, decoded through a cache of JPEG frames.

A clip's cropped frames as JPEG at 45 dB (jpeg_frames.py) are 8-22x a low-bitrate source video
(a 20 s, 470 kb/s clip: 25 MB of frames for a 1.2 MB mp4): intra-coded frames cannot match the
source's inter-frame coding. Track therefore stores in frames.h5 whichever is smaller (setting
`frame_store`): the JPEG frames, or the source file's bytes with the recipe that decodes them
(the ffmpeg crop filter). Readers then get the JPEG frames from a cache outside the run directory:
the same bytes track made (their SHA-256 is recorded and checked), so training reads exactly what
it would read from a JPEG frames.h5, as fast. A missing or damaged cache entry is rebuilt from
the stored source (decode + encode: ~7 ms a 512^2 frame on 2 cores); the cache keeps its most
recently used entries within TALKCTL_CACHE_GB (default 10), so a batch over many subjects holds
the frames of the ones in progress, not of all of them.

Layout of a source group NAME in frames.h5:
  source   (B,) uint8, contiguous: the video file's bytes (written and read 1 MiB at a time)
  attrs    codec="source", shape=[T, S, S, 3], filter (ffmpeg filter graph giving the S x S crop),
           suffix (the file's extension), digest (SHA-256 of the JPEG frames: cache key and check)
The cache entry CACHE/frames/<digest>.h5 holds a JPEG group "frames" (jpeg_frames.py), checksummed
like an artifact (h5files).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from talkctl import h5files
from talkctl.errors import StageError
from talkctl.jpeg_frames import JpegFrames, PipelinedJpegWriter

FRAME_STORES = ("auto", "jpeg", "source")
SOURCE_CHUNK = 1 << 20
DEFAULT_CACHE_GB = 10.0
log = logging.getLogger("talkctl.frames")


def cache_dir() -> Path:
    """TALKCTL_CACHE_DIR, else $XDG_CACHE_HOME/talkctl, else ~/.cache/talkctl; /frames below it."""
    root = os.environ.get("TALKCTL_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "talkctl"
    return Path(root) / "frames"


def cache_limit_bytes() -> int:
    raw = os.environ.get("TALKCTL_CACHE_GB", "")
    try:
        gb = float(raw) if raw else DEFAULT_CACHE_GB
    except ValueError:
        gb = DEFAULT_CACHE_GB
        log.warning("TALKCTL_CACHE_GB=%r is not a number; using %.0f GB", raw, gb)
    return int(max(gb, 0.0) * 1e9)


def describe() -> tuple[bool, str]:
    """(usable, one line) for `talkctl doctor`: where the cache is, its use and limit."""
    folder = cache_dir()
    used = sum(p.stat().st_size for p in folder.glob("*.h5")) if folder.is_dir() else 0
    probe = folder if folder.is_dir() else next((p for p in folder.parents if p.exists()), folder)
    usable = os.access(probe, os.W_OK)
    return usable, (f"{folder}: {used / 1e9:.2f} of {cache_limit_bytes() / 1e9:.0f} GB used (TALKCTL_CACHE_DIR, "
                    f"TALKCTL_CACHE_GB)" + ("" if usable else ": not writable; set TALKCTL_CACHE_DIR"))


def entry_path(digest: str) -> Path:
    return cache_dir() / f"{digest}.h5"


def _writable_dir() -> Path:
    """The cache folder, made if needed; StageError when it cannot be written."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(folder)
    except OSError as exc:
        raise StageError(f"the frame cache folder {folder} is not writable ({exc.__class__.__name__}): set "
                         f"TALKCTL_CACHE_DIR to a writable folder") from None
    return folder


def choose(store: str, jpeg_bytes: int, source_bytes: int) -> str:
    """"jpeg" or "source": what frames.h5 holds for setting `store` (auto: the smaller, and the
    JPEG frames when the cache cannot be written)."""
    if store != "auto":
        return store
    if source_bytes >= jpeg_bytes:
        return "jpeg"
    try:
        _writable_dir()
    except StageError as exc:
        log.warning("%s; frames.h5 keeps the JPEG frames (%.1f MB) instead of the source (%.1f MB)", exc.message,
                    jpeg_bytes / 1e6, source_bytes / 1e6)
        return "jpeg"
    return "source"


def write_source(f, name: str, video: Path, filter_graph: str, shape: tuple, digest: str) -> None:
    """Group `name` of open file f: the bytes of `video` and how they decode to frames `shape`."""
    video = Path(video)
    size = video.stat().st_size
    group = f.create_group(name)
    ds = group.create_dataset("source", shape=(size,), dtype=np.uint8)  # contiguous: chunks would pad the last
    with open(video, "rb") as src:
        for start in range(0, size, SOURCE_CHUNK):
            block = src.read(SOURCE_CHUNK)
            ds[start:start + len(block)] = np.frombuffer(block, np.uint8)
    group.attrs.update(codec="source", shape=np.asarray(shape, np.int64), filter=filter_graph,
                       suffix=video.suffix or ".mp4", digest=digest)


def evict(keep: Path | None = None) -> None:
    """Remove the least recently used entries until the cache fits TALKCTL_CACHE_GB (never `keep`:
    the entry in use). An entry open elsewhere stays readable there until closed (POSIX unlink)."""
    folder = cache_dir()
    if not folder.is_dir():
        return
    entries, now = [], time.time()
    for p in [*folder.glob(".*.tmp"), *folder.glob(".source-*")]:  # left by a killed process
        try:
            if now - p.stat().st_mtime > 3600:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except FileNotFoundError:
            pass
    for p in folder.glob("[0-9a-f]*.h5"):
        try:
            st = p.stat()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        entries.append((st.st_atime, st.st_size, p))
    total, limit = sum(e[1] for e in entries), cache_limit_bytes()
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        p.unlink(missing_ok=True)
        total -= size
        log.info("frame cache: removed %s (%.1f MB) to stay within %.1f GB", p.name, size / 1e6, limit / 1e9)


def _touch(path: Path) -> None:
    """Mark an entry used (its access time, set explicitly: mounts may not update it)."""
    try:
        os.utime(path, (time.time(), path.stat().st_mtime))
    except OSError:
        pass


def _build(group, path: Path) -> None:
    """Decode group's source bytes through its filter into the JPEG cache entry `path`."""
    from talkctl.media.video_in import FrameStream

    shape = tuple(int(v) for v in group.attrs["shape"])
    T, S = shape[0], shape[1]
    _writable_dir()
    t0 = time.perf_counter()
    log.info("frame cache: decoding %d frames from the source stored in %s into %s", T,
             Path(group.file.filename).name, path.parent)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".source-") as tmp:
        video, built = Path(tmp) / f"source{group.attrs['suffix']}", Path(tmp) / "frames.h5"
        src = group["source"]
        with open(video, "wb") as out:
            for start in range(0, src.shape[0], SOURCE_CHUNK):
                out.write(src[start:start + SOURCE_CHUNK].tobytes())
        with h5files.atomic(built) as cf, FrameStream(video, str(group.attrs["filter"]), S, S) as stream:
            with PipelinedJpegWriter(cf, "frames", S, S) as writer:
                for frame in stream:
                    writer.put(frame)
            if len(writer) != T:
                raise RuntimeError(f"the stored source decoded to {len(writer)} frames, not {T}")
            made = writer.digest()
        _install(built, path)
    if made != group.attrs["digest"]:
        log.warning("frames decoded from the stored source differ from the ones track made (a different ffmpeg?); "
                    "they are used as decoded now: rerun track to make everything from this decoder")
    log.info("frame cache: %d frames in %.1f s", T, time.perf_counter() - t0)


def _install(built: Path, path: Path) -> None:
    """Move a finished entry into place in one step (through a private name in the cache folder:
    a move from another file system copies, and nobody may read a half-copied entry)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.move(str(built), str(tmp))
    os.replace(tmp, path)


def cached_frames(group) -> JpegFrames:
    """The frames of a source group, through the cache (built or rebuilt when missing or damaged)."""
    import h5py

    path = entry_path(str(group.attrs["digest"]))
    for attempt in (0, 1):
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError:  # not built yet, evicted, or removed by another process meanwhile
            _build(group, path)
            evict(keep=path)
            f = h5py.File(path, "r")
        problem = h5files.verify(f)
        if problem is None:
            _touch(path)
            return JpegFrames(f["frames"], keep_open=f)
        f.close()
        if attempt:
            raise RuntimeError(f"the frame cache entry {path} is damaged right after being built ({problem})")
        log.warning("frame cache entry %s is damaged (%s); rebuilding it from the stored source", path, problem)
        path.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def store_frames(f, name: str, staged: Path, video: Path, filter_graph: str, store: str, stage_log=None) -> str:
    """Put track's JPEG frames (the checksummed file `staged`, group "frames") into frames.h5 (open
    file f, group `name`): copied as they are, or as the source video with `staged` moved into the
    cache. Returns what was stored: "jpeg" or "source". stage_log: the stage's logger (its log file)."""
    import h5py

    with h5py.File(staged, "r") as sf:
        group = sf["frames"]
        jpeg_bytes, shape, digest = group["data"].shape[0], tuple(group.attrs["shape"]), str(group.attrs["digest"])
        source_bytes = Path(video).stat().st_size
        kind = choose(store, jpeg_bytes, source_bytes)
        (stage_log or log).info("frames.h5 holds the %s (JPEG frames %.1f MB, source video %.1f MB; frame_store=%s)",
                                "JPEG frames" if kind == "jpeg" else "source video", jpeg_bytes / 1e6,
                                source_bytes / 1e6, store)
        if kind == "jpeg":
            f.copy(group, name)
    if kind == "jpeg":
        staged.unlink()
        return kind
    write_source(f, name, video, filter_graph, shape, digest)
    path = _writable_dir() / f"{digest}.h5"
    _install(staged, path)
    evict(keep=path)
    return kind
