"""What verifying artifact checksums costs: reading a 5-minute clip's frames.h5 with and
without verification (talkctl.h5files), and the verification alone.

The frames are french_50s (../shared) at 512^2, 25 fps, repeated to 5 minutes (7500 frames),
written as track writes them (JPEG frames, jpeg_frames.py; --raw: the previous layout, one
deflated frame per chunk), then checksummed by artifacts.write. Without the shared clip,
synthetic noise-and-gradient frames stand in. Each read opens the file through
artifacts.open_for_read and reads every frame in order, as parse and the preview do; the
in-process record of verified files is cleared before each verified read, so every one pays
the full verification.

    python bench/bench_integrity.py [--minutes 5] [--size 512] [--repeats 3] [--keep DIR]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from common import describe, load_avg, machine, print_table, shared_file, write_json


def source_chunks(size: int, raw: bool) -> tuple[list, str]:
    """The source frames at size^2, 25 fps, each encoded as track stores it: JPEG (bytes,
    quality), or with `raw` deflated (level 1) as before."""
    from talkctl.jpeg_frames import encode

    def enc(f):
        return zlib.compress(f, 1) if raw else encode(f)

    clip = shared_file("data", "video", "french_50s.mp4")
    if clip is None:
        rng = np.random.default_rng(0)
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        frames = (np.clip(ramp[None, :, None] + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
                  for _ in range(125))
        return [enc(f) for f in frames], "synthetic"
    from talkctl.media.video_in import FrameStream

    with FrameStream(clip, f"fps=25,scale={size}:{size}", size, size) as stream:
        return [enc(f) for f in stream], str(clip.name)


def write_frames(run, chunks: list, n: int, size: int, raw: bool) -> None:
    from talkctl import artifacts
    from talkctl.jpeg_frames import JpegFrameWriter

    shape = (size, size, 3)
    with artifacts.write(run, "frames", producer="bench", fingerprint="bench", config={}, inputs={}) as f:
        if raw:
            ds = f.create_dataset("frames", shape=(n, *shape), dtype=np.uint8, **artifacts.frame_chunks((n, *shape)))
            for i in range(n):
                ds.id.write_direct_chunk((i, 0, 0, 0), chunks[i % len(chunks)])
        else:
            out = JpegFrameWriter(f, "frames", size, size)
            for i in range(n):
                out.append(*chunks[i % len(chunks)])
            out.close()
        f.attrs.update({"fps": 25, "size": size})


def read_all(run, verify: bool) -> float:
    from talkctl import artifacts, h5files

    h5files.forget_verified()
    t0 = time.perf_counter()
    from talkctl.jpeg_frames import frame_images

    with artifacts.open_for_read(run, "frames", verify=verify) as f:
        ds = frame_images(f, "frames")
        total = 0
        for i in range(ds.shape[0]):
            total += int(ds[i][0, 0, 0])
    return time.perf_counter() - t0


def verify_only(run) -> float:
    from talkctl import artifacts, h5files

    h5files.forget_verified()
    t0 = time.perf_counter()
    assert h5files.verify_path(artifacts.spec("frames").path(run)) is None
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="write the run directory here and keep it")
    ap.add_argument("--raw", action="store_true", help="the previous layout: deflated raw frames")
    args = ap.parse_args()
    from talkctl.rundir import RunDir

    info = machine()
    chunks, source = source_chunks(args.size, args.raw)
    n = int(round(args.minutes * 60 * 25))
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    run = RunDir(base / "run")
    t0 = time.perf_counter()
    write_frames(run, chunks, n, args.size, args.raw)
    write_s = time.perf_counter() - t0
    size_mb = run.file("frames.h5").stat().st_size / 1e6
    read_all(run, verify=False)  # page cache warm for both
    plain, checked, alone = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifting load hits both alike
        plain.append(read_all(run, verify=False))
        checked.append(read_all(run, verify=True))
        alone.append(verify_only(run))
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in (("plain", plain), ("checked", checked), ("alone", alone))}
    rows = [
        {"what": "read every frame, no verification", "s": f"{med['plain']:.2f}"},
        {"what": "read every frame, verified at open", "s": f"{med['checked']:.2f}",
         "extra": f"{100 * (med['checked'] / med['plain'] - 1):+.1f}%"},
        {"what": "verification alone (CRC-32 of the stored chunks)", "s": f"{med['alone']:.2f}",
         "extra": f"{size_mb / med['alone']:.0f} MB/s"},
    ]
    layout = "raw, deflated" if args.raw else "JPEG"
    print(f"frames.h5 ({layout}): {n} frames {args.size}^2 from {source}, {size_mb:.0f} MB (written in {write_s:.0f} s)")
    print_table(rows, [("what", "what"), ("s", "median s"), ("extra", "")])
    info["load_avg_after"] = load_avg()
    print(describe(info))
    write_json("integrity_raw_cpu.json" if args.raw else "integrity_cpu.json", {
        "machine": info, "source": source, "layout": layout, "frames": n, "size": args.size, "file_mb": round(size_mb, 1),
        "repeats": args.repeats, "read_plain_s": plain, "read_verified_s": checked, "verify_only_s": alone,
        "median_read_plain_s": round(med["plain"], 3), "median_read_verified_s": round(med["checked"], 3),
        "median_verify_only_s": round(med["alone"], 3),
        "slowdown_percent": round(100 * (med["checked"] / med["plain"] - 1), 2),
    })


if __name__ == "__main__":
    main()
