"""Video decoding: ffmpeg in a pipe (talkctl.media.video_in.FrameStream, what talkctl uses), the same
pipe built with ffmpeg-python, and PyAV (ffmpeg's libraries in-process): speed and memory.

Each decoder runs in a fresh interpreter (a clean peak-memory counter), decodes the whole clip
to (H, W, 3) uint8 RGB frames, at the source size and scaled to 256 px (as track's crop+scale does),
and touches every frame. Wall time, the CPU of this process plus its ffmpeg children, the peak RSS
of this process and of the ffmpeg child are medians over --repeats runs.
Usage: python bench/decode_backends.py [--video CLIP] [--repeats 3]
Default clip: ../shared/data/video/french_50s.mp4 (512x512, 25 fps, 50 s).
ffmpeg-python and PyAV are not talkctl dependencies: `pip install ffmpeg-python av` to measure them
(a decoder that is not installed is skipped). Prints a table and writes bench/results/decode_backends.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import SHARED_HINT, describe, load_avg, machine, rss_mib, run_child, shared_file, write_json

DECODERS = ("talkctl-pipe", "ffmpeg-python", "pyav")


def _pipe_frames(path: Path, size: int, w: int, h: int):
    from talkctl.media.video_in import FrameStream

    filters = None if size == w else f"scale={size}:{size}:flags=area"
    out = size if filters else w
    with FrameStream(path, filters, out, out if filters else h) as fs:
        yield from fs


def _ffmpeg_python_frames(path: Path, size: int, w: int, h: int):
    import ffmpeg

    from talkctl.media.ffmpeg import ffmpeg_exe

    stream = ffmpeg.input(str(path))
    if size != w:
        stream = stream.filter("scale", size, size, flags="area")
        w = h = size
    proc = stream.output("pipe:", format="rawvideo", pix_fmt="rgb24", an=None).global_args(
        "-hide_banner", "-nostdin", "-loglevel", "error").run_async(cmd=ffmpeg_exe(), pipe_stdout=True)
    n = w * h * 3
    while True:
        buf = proc.stdout.read(n)
        if len(buf) < n:
            break
        yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    proc.wait()


def _pyav_frames(path: Path, size: int, w: int, h: int):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads, as the ffmpeg binary uses by default
        for frame in container.decode(stream):
            if size != w:
                frame = frame.reformat(width=size, height=size, interpolation="AREA")
            yield frame.to_ndarray(format="rgb24")


def child(decoder: str, video: str, size: int) -> dict:
    from talkctl.media.ffmpeg import probe

    path = Path(video)
    info = probe(path)["video"]
    w, h = int(info["width"]), int(info["height"])
    frames = {"talkctl-pipe": _pipe_frames, "ffmpeg-python": _ffmpeg_python_frames, "pyav": _pyav_frames}[decoder]
    before = rss_mib()[0]
    c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    n, check = 0, 0
    for f in frames(path, size, w, h):
        n += 1
        check += int(f[::64, ::64].sum())  # touch every frame
    wall = time.perf_counter() - t0
    c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum((b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime) for a, b in zip(c0, c1))
    return {"frames": n, "shape": list(f.shape), "wall_s": wall, "cpu_s": cpu, "rss_before_mib": before,
            "peak_rss_mib": rss_mib()[1], "child_peak_rss_mib": c1[1].ru_maxrss / 1024, "checksum": check}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="source,256")
    ap.add_argument("--child", nargs=3, metavar=("DECODER", "VIDEO", "SIZE"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], int(a.child[2]))))
        return
    video = Path(a.video) if a.video else shared_file("data", "video", "french_50s.mp4")
    if video is None:
        sys.exit(f"no clip: give --video, or put the shared data at {SHARED_HINT}")
    from talkctl.media.ffmpeg import probe

    width = int(probe(video)["video"]["width"])
    info = machine(video=str(video), libraries=_versions())
    rows = []
    for size in (width if s == "source" else int(s) for s in a.sizes.split(",")):
        for dec in DECODERS:
            try:
                runs = [run_child(__file__, [dec, str(video), str(size)]) for _ in range(a.repeats)]
            except SystemExit as exc:  # e.g. the library is not installed
                print(f"skipped {dec}: {str(exc).splitlines()[-1]}", file=sys.stderr)
                continue
            med = {k: statistics.median(r[k] for r in runs)
                   for k in ("wall_s", "cpu_s", "peak_rss_mib", "child_peak_rss_mib", "rss_before_mib")}
            rows.append({"decoder": dec, "size": size, "frames": runs[0]["frames"],
                         "fps": round(runs[0]["frames"] / med["wall_s"], 1), "wall_s": round(med["wall_s"], 2),
                         "cpu_s": round(med["cpu_s"], 2), "peak_rss_mib": round(med["peak_rss_mib"]),
                         "rss_before_mib": round(med["rss_before_mib"]),
                         "ffmpeg_child_peak_rss_mib": round(med["child_peak_rss_mib"]),
                         "same_frames": len({r["checksum"] for r in runs}) == 1, "repeats": a.repeats})
    info["load_avg_after"] = load_avg()
    from common import print_table

    print_table(rows, [("decoder", "decoder"), ("size", "px"), ("frames", "frames"), ("fps", "frames/s"),
                       ("wall_s", "wall s"), ("cpu_s", "CPU s (incl. ffmpeg)"), ("peak_rss_mib", "peak RSS MiB"),
                       ("ffmpeg_child_peak_rss_mib", "ffmpeg child MiB")])
    print(describe(info))
    write_json("decode_backends.json", {"machine": info, "rows": rows})


def _versions() -> dict:
    out = {}
    for mod in ("av", "ffmpeg", "imageio_ffmpeg"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except ImportError:
            out[mod] = None
    return out


if __name__ == "__main__":
    main()
