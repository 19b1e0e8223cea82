"""Benchmark: `talkctl render` speed on a trained run, per output size.

For each size: render the same driving audio (default: 10 s of the unseen synthetic voice)
`--repeats` times through render_to_file (the real path: features, deformation, rasterisation,
compositing, H.264 encoding, metadata), and report the median model frames/s (deformation +
rasterisation + compositing) and end-to-end frames/s (everything, encoding included), with
the peak RSS of this process. Prints a table, writes bench/results/render_<device>.json.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_render.py --run RUN [--audio A] [--sizes 64,128,256]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import load_avg, machine, print_table, rss_mib, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a run trained through train-torso")
    ap.add_argument("--audio", type=Path, help="driving audio (default: 10 s synthetic voice)")
    ap.add_argument("--sizes", default="0", help="comma-separated output sides (0 = training resolution)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from talkctl.devices import resolve_device
    from talkctl.rundir import RunDir
    from talkctl.stages.render import DEFAULTS, render_to_file

    run = RunDir(args.run, create=False)
    device = resolve_device(args.device)
    info = machine()
    tmp = Path(tempfile.mkdtemp(prefix="talkctl-bench-render-"))
    audio = args.audio
    if audio is None:
        from talkctl.synthetic.audio import make_audio

        audio = make_audio(10.0, seed=2).write_wav(tmp / "voice.wav")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        model, e2e = [], []
        for _ in range(args.repeats):
            with run.lock("bench render"):
                s = render_to_file(run, tmp / "out.mp4", audio=audio, device=device,
                                   cfg={**DEFAULTS, "size": size, "batch": args.batch})
            model.append(s["model_fps"])
            e2e.append(s["end_to_end_fps"])
        rows.append({"size": s["render_size"], "frames": s["frames"], "model_fps": round(statistics.median(model), 1),
                     "end_to_end_fps": round(statistics.median(e2e), 1), "device": s["device"],
                     "peak_rss_mib": round(rss_mib()[1])})
    print_table(rows, [("size", "size"), ("frames", "frames"), ("model_fps", "model fps"),
                       ("end_to_end_fps", "end-to-end fps"), ("peak_rss_mib", "peak RSS MiB"), ("device", "device")])
    info["load_avg_after"] = load_avg()
    write_json(f"render_{'cuda' if device.startswith('cuda') else 'cpu'}.json",
               {"machine": info, "run": str(run), "audio": str(audio), "repeats": args.repeats,
                "batch": args.batch, "rows": rows,
                "note": "medians over repeats; model = deformation + rasterisation + compositing, "
                        "end to end = features + model + H.264 encoding + metadata remux"})


if __name__ == "__main__":
    main()
