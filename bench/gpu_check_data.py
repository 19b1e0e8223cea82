"""The shared clip for bench/gpu_check.sh, small enough to carry to the device machine.

frames.h5 is most of a prepared run (~15 MB of JPEG frames for 20 s at 512^2) but follows from
the video: `slim` drops its frames (recording how they were stored and a few checksums) and keeps
the clip; on the device `fill` decodes the clip again with the same crop (talkctl.media.video_in),
then checks the checksums. Fingerprints are untouched, so the training stages see a finished parse.

    python bench/gpu_check_data.py slim PREPARED_RUN OUT_DIR     # CPU machine
    python bench/gpu_check_data.py fill OUT_DIR RUN_DIR          # device machine
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import h5py
import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)
from talkctl.jpeg_frames import JpegFrameWriter, frame_images  # noqa: E402

BIG = {"frames.h5": "frames"}
SMALL = ("audio.h5", "track.h5", "parse.h5", "run.json", "history.jsonl")


def _md5(a: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(a).tobytes()).hexdigest()


def _probe_frames(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


def slim(src: Path, out: Path) -> None:
    run = json.loads((src / "run.json").read_text())
    (out / "run").mkdir(parents=True, exist_ok=True)
    for name in SMALL:
        shutil.copy2(src / name, out / "run" / name)
    for name, big in BIG.items():
        with h5py.File(src / name, "r") as fi, h5py.File(out / "run" / name, "w") as fo:
            fo.attrs.update(fi.attrs)
            for key in fi:
                if key != big:
                    fi.copy(fi[key], fo, name=key)
            ds = frame_images(fi, big)  # JPEG frames (jpeg_frames.py): remade the same way on the device
            fo.attrs["gpu_check_removed"] = json.dumps({
                "name": big, "shape": ds.shape, "md5": {str(i): _md5(ds[i]) for i in _probe_frames(ds.shape[0])}})
    shutil.copy2(run["video"]["path"], out / "clip.mp4")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"slim run in {out}: {size / 2**20:.1f} MiB")


def _create(f: h5py.File) -> tuple[JpegFrameWriter, dict, tuple]:
    spec = json.loads(f.attrs["gpu_check_removed"])
    del f.attrs["gpu_check_removed"]
    shape = tuple(spec["shape"])
    return JpegFrameWriter(f, spec["name"], shape[1], shape[2]), spec["md5"], shape


def fill(slim_dir: Path, dest: Path) -> dict:
    """Rebuild the dropped datasets in a copy of the slim run; returns timings and checksum matches."""
    from talkctl import h5files
    from talkctl.jpeg_frames import ClipEncoder
    from talkctl.media.video_in import Crop, FrameStream, crop_filter
    from talkctl.rundir import RunDir

    t0 = time.perf_counter()
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(slim_dir / "run", dest)
    RunDir(dest).set_video(slim_dir / "clip.mp4")  # same content hash as on the CPU machine
    matches = {}
    with h5py.File(dest / "frames.h5", "a") as ff:
        frames, md5_frames, shape = _create(ff)
        T, S = shape[0], shape[1]
        (w, h), crop = (int(v) for v in ff.attrs["source_size"]), Crop(*(int(v) for v in ff.attrs["crop"]))
        n, encode = 0, ClipEncoder()  # as track encodes them
        with FrameStream(slim_dir / "clip.mp4", crop_filter(crop, w, h, S), S, S) as stream:
            for t, frame in enumerate(stream):
                if t >= T:
                    break
                frames.append(*encode(frame))
                n += 1
        frames.close()
        images = frame_images(ff, "frames")
        matches["frames"] = all(_md5(images[int(i)]) == m for i, m in md5_frames.items())
        h5files.stamp(ff)  # edited in place on purpose: its checksums follow
    return {"frames": n, "expected": T, "seconds": round(time.perf_counter() - t0, 1), "checksums_match": matches}


def main() -> None:
    cmd, a, b = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if cmd == "slim":
        slim(a, b)
    elif cmd == "fill":
        print(json.dumps(fill(a, b)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
