"""frames.h5 as JPEG (jpeg_frames.py) and as the source video (frame_cache.py, read through its
cache of those JPEG frames) against the raw deflated frames they replace: file size, fidelity
(PSNR against the decoded frames) and what training's data loading costs.

The frames are french_50s (../shared) at 512^2, 25 fps (1260 frames). "raw" is the previous
layout (one deflated frame per chunk, zlib level 1, as track wrote it); "jpeg" is track's JPEG
layout; "source" is frames.h5 holding the source video, its write time the cache's rebuild from
it (decode + JPEG encode: what a reader pays once when the cache lacks the clip). Loading is
timed through gs.training.FrameStore with no cache (every access decodes and downscales, as a
cache miss in training does): random frames in train-deform's batches of 2 at 256^2, and one
sequential pass.

    python bench/bench_frame_store.py [--size 512] [--res 256] [--draws 600] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from common import SHARED_HINT, describe, load_avg, machine, print_table, shared_file, write_json


def clip_path() -> Path:
    clip = shared_file("data", "video", "french_50s.mp4")
    if clip is None:
        raise SystemExit(f"needs data/video/french_50s.mp4 in the shared folder ({SHARED_HINT})")
    return clip


def decode_filter(size: int) -> str:
    return f"fps=25,scale={size}:{size}"


def decode_clip(size: int) -> list[np.ndarray]:
    from talkctl.media.video_in import FrameStream

    with FrameStream(clip_path(), decode_filter(size), size, size) as stream:
        return [f.copy() for f in stream]


def write_raw(path: Path, frames: list[np.ndarray]) -> float:
    import h5py

    from talkctl.artifacts import frame_chunks

    t0 = time.perf_counter()
    shape = (len(frames), *frames[0].shape)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("frames", shape=shape, dtype=np.uint8, **frame_chunks(shape))
        for i, fr in enumerate(frames):
            ds.id.write_direct_chunk((i, 0, 0, 0), zlib.compress(fr, 1))
    return time.perf_counter() - t0


def write_jpeg(path: Path, frames: list[np.ndarray]) -> tuple[float, list[int]]:
    import h5py

    from talkctl.jpeg_frames import ClipEncoder, JpegFrameWriter

    t0 = time.perf_counter()
    with h5py.File(path, "w") as f:
        out, encode = JpegFrameWriter(f, "frames", *frames[0].shape[:2]), ClipEncoder()  # as track encodes
        for fr in frames:
            out.append(*encode(fr))
        out.close()
        qualities = f["frames/quality"][()].tolist() if "quality" in f["frames"] else []
    return time.perf_counter() - t0, qualities


def write_source(path: Path, jpeg: Path, size: int) -> float:
    """frames.h5 holding the source video; returns the time the cache takes to rebuild from it."""
    import h5py

    from talkctl import frame_cache

    with h5py.File(jpeg, "r") as f:
        shape, digest = tuple(f["frames"].attrs["shape"]), str(f["frames"].attrs["digest"])
    with h5py.File(path, "w") as f:
        frame_cache.write_source(f, "frames", clip_path(), decode_filter(size), shape, digest)
    with h5py.File(path, "r") as f:
        t0 = time.perf_counter()
        frame_cache._build(f["frames"], frame_cache.entry_path(digest))
        return time.perf_counter() - t0


def load_times(path: Path, res: int, draws: int, seed: int) -> dict:
    import h5py

    from talkctl.gs.training import FrameStore
    from talkctl.jpeg_frames import frame_images

    with h5py.File(path, "r") as f:
        store = FrameStore(frame_images(f, "frames"), res, cache_frames=1)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        for _ in range(draws // 2):
            store.get(rng.choice(len(store), 2, replace=False))
        rand = (time.perf_counter() - t0) / draws
        t0 = time.perf_counter()
        for i in range(len(store)):
            store.get([i])
        seq = (time.perf_counter() - t0) / len(store)
    return {"random_ms": 1e3 * rand, "sequential_ms": 1e3 * seq}


def fidelity(path: Path, frames: list[np.ndarray]) -> list[float]:
    import h5py

    from talkctl.jpeg_frames import frame_images, psnr_db

    with h5py.File(path, "r") as f:
        images = frame_images(f, "frames")
        return [psnr_db(frames[i], images[i]) for i in range(len(frames))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--draws", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    info = machine()
    frames = decode_clip(args.size)
    work = Path(tempfile.mkdtemp(prefix="bench-frame-store-"))
    os.environ["TALKCTL_CACHE_DIR"] = str(work / "cache")
    raw, jpg, src = work / "raw.h5", work / "jpeg.h5", work / "source.h5"
    t_raw = write_raw(raw, frames)
    t_jpg, qualities = write_jpeg(jpg, frames)
    t_src = write_source(src, jpg, args.size)
    psnr = fidelity(jpg, frames)
    assert fidelity(src, frames) == psnr  # the cache holds the very same JPEG frames
    times = {"raw": [], "jpeg": [], "source": []}
    layouts = [("raw", raw), ("jpeg", jpg), ("source", src)]
    for r in range(args.repeats):  # interleaved, in a rotating order: drifting load and position hit all alike
        for name, path in layouts[r % 3:] + layouts[:r % 3]:
            times[name].append(load_times(path, args.res, args.draws, seed=r))
    rows = []
    for name, path, t_write in (("raw (deflate 1)", raw, t_raw), ("jpeg", jpg, t_jpg),
                                ("source (cached)", src, t_src)):
        key = name.split()[0]
        rows.append({"layout": name, "mb": round(path.stat().st_size / 1e6, 1),
                     "kb_frame": round(path.stat().st_size / len(frames) / 1e3, 1),
                     "write_ms": round(1e3 * t_write / len(frames), 2),
                     "random_ms": round(statistics.median(t["random_ms"] for t in times[key]), 2),
                     "seq_ms": round(statistics.median(t["sequential_ms"] for t in times[key]), 2)})
    shutil.rmtree(work, ignore_errors=True)
    print(f"french_50s: {len(frames)} frames {args.size}^2, loaded at {args.res}^2 without cache; JPEG PSNR "
          f"min {min(psnr):.2f} dB, median {statistics.median(psnr):.2f} dB; qualities used "
          f"{sorted(set(qualities))}")
    print_table(rows, [("layout", "layout"), ("mb", "MB"), ("kb_frame", "KB/frame"), ("write_ms", "write ms/frame"),
                       ("random_ms", "random load ms/frame"), ("seq_ms", "sequential ms/frame")])
    info["load_avg_after"] = load_avg()
    print(describe(info))
    write_json("frame_store_cpu.json", {"machine": info, "frames": len(frames), "size": args.size, "res": args.res,
                                        "psnr_min_db": min(psnr), "psnr_median_db": statistics.median(psnr),
                                        "qualities": sorted(set(qualities)), "rows": rows, "times": times})


if __name__ == "__main__":
    main()
