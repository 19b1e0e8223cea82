"""Disk use of a run directory against its source video (issue 19 item 13: target <= 20x), per
artifact and, inside each HDF5 artifact, per dataset (stored bytes, codec), largest first.

    python bench/bench_run_disk.py --run RUN [--top 4] [--out run_disk_cpu.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import describe, machine, print_table, write_json


def _size(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _datasets(path: Path, top: int) -> list[dict]:
    import h5py

    rows = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                rows.append({"dataset": name, "mb": round(obj.id.get_storage_size() / 1e6, 2),
                             "dtype": str(obj.dtype), "shape": list(obj.shape), "codec": obj.compression or "none"})
        f.visititems(visit)
    return sorted(rows, key=lambda r: -r["mb"])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--top", type=int, default=4, help="datasets listed per HDF5 artifact")
    ap.add_argument("--out", default="run_disk_cpu.json")
    args = ap.parse_args()
    video = json.loads((args.run / "run.json").read_text())["video"]
    src = int(video["size"])
    rows = [{"artifact": p.name, "mb": round(_size(p) / 1e6, 2), "x_source": round(_size(p) / src, 2),
             "datasets": _datasets(p, args.top) if p.suffix == ".h5" else []}
            for p in sorted(args.run.iterdir(), key=_size, reverse=True) if not p.name.startswith(".")]
    total = sum(_size(p) for p in args.run.iterdir())
    print(f"run {args.run}: source {Path(video['path']).name} {src / 1e6:.2f} MB")
    print_table(rows + [{"artifact": "TOTAL", "mb": round(total / 1e6, 2), "x_source": round(total / src, 2)}],
                [("artifact", "artifact"), ("mb", "MB"), ("x_source", "x source")])
    for r in rows:
        for d in r["datasets"]:
            print(f"  {r['artifact']}:{d['dataset']}  {d['mb']} MB  {d['dtype']} {d['shape']} {d['codec']}")
    info = machine()
    print(describe(info))
    write_json(args.out, {"machine": info, "run": str(args.run), "source": video["path"], "source_mb": src / 1e6,
                          "total_mb": total / 1e6, "x_source": total / src, "rows": rows})


if __name__ == "__main__":
    main()
