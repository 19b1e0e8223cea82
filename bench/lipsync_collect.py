"""Collect `talkctl eval --json` results (with --drive-video) of trained runs into bench/lipsync.py's
table and medians, for runs trained outside bench/lipsync.py (e.g. one at a time in the background
on a shared machine): LABEL=SUBJECT:METHOD:EVAL_JSON ...

    python bench/lipsync_collect.py --out lipsync_x.json before=german_20s:gstalker:/w/a.eval.json after=...
"""
from __future__ import annotations

import argparse
import json

from common import load_avg, machine, print_table, write_json
from lipsync import _fmt, medians, rows_of


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("items", nargs="+", help="LABEL=SUBJECT:METHOD:EVAL_JSON (LABEL names the variant)")
    ap.add_argument("--out", required=True, help="file name under bench/results/")
    ap.add_argument("--note", default="", help="how the runs were made")
    args = ap.parse_args(argv)
    rows = []
    for item in args.items:
        label, rest = item.split("=", 1)
        subject, method, path = rest.split(":", 2)
        with open(path) as f:
            rows += rows_of(json.load(f), subject, method, label)
    summary = medians(rows)
    cols = [(k, k) for k in ("subject", "method", "extractor", "driver", "corr", "best_lag", "best_corr",
                             "drive_av_offset_ms", "offset_lag", "offset_corr", "amp", "head_psnr")]
    print_table(_fmt(rows), cols)
    print()
    print_table(_fmt(summary), [(k, k) for k in summary[0]])
    write_json(args.out, {"benchmark": "lip sync against real speakers (eval --drive-video), collected",
                          "note": args.note, "machine": {**machine(), "load_avg_at_collection": load_avg()},
                          "rows": rows, "medians": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
