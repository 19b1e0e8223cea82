"""The comparison table of `talkctl eval RUN1 RUN2 ...` (rich, for the terminal) and its Markdown
twin; the state table of `talkctl status`."""
from __future__ import annotations

import math

from talkctl.report.figures import _FIG, STAGE_NAMES, format_figure, interval_text

COMPARE_KEYS = ("method", "psnr", "ssim", "lpips", "lmd", "mouth_corr", "mouth_amp", "sync_corr", "xsync_corr",
                "xsync_amp", "syncnet_confidence",
                "render_fps", "train_seconds", "train_peak_memory_mb", "model_mb", "gaussians")


STAGE_KEYS = tuple(f"seconds:{st}" for st in STAGE_NAMES)  # the second table: training time per stage
STAGE_MEMORY_KEYS = tuple(f"peak_rss_mb:{st}" for st in STAGE_NAMES)  # the third: peak memory per stage


def _best(rows: list[dict], key: str) -> float | None:
    better = _FIG[key][2]
    vals = [r.get(key) for r in rows if isinstance(r.get(key), (int, float)) and not (isinstance(r.get(key), float) and math.isnan(r[key]))]
    if not better or len(vals) < 2:
        return None
    return max(vals) if better == "high" else min(vals)


def _columns(rows: list[dict], keys=COMPARE_KEYS) -> list[str]:
    return [k for k in keys if any(r.get(k) is not None for r in rows)]


def _cell(r: dict, k: str) -> str:
    if r.get(k) is None:
        return "n/a"
    s = format_figure(k, r[k])
    if k == "sync_corr" and r.get("sync_lag") is not None:
        s += f" ({int(r['sync_lag']):+d})"
    s += interval_text(r, k)
    if k == "xsync_corr" and r.get("xsync_lag") is not None:
        s += f" (best {format_figure('xsync_best', r.get('xsync_best'))} at {r['xsync_lag']:+.0f})"
    return s


def comparison_table(rows: list[dict], keys=COMPARE_KEYS, title: str = "talkctl eval"):
    """A rich Table: one row per run ({"run": name, <figure keys>...}); best value in bold green."""
    from rich.table import Table

    cols = _columns(rows, keys)
    t = Table(title=title, header_style="bold")
    t.add_column("run", style="cyan", no_wrap=True)
    for k in cols:
        arrow = {"high": " ↑", "low": " ↓"}.get(_FIG[k][2], "")
        t.add_column(_FIG[k][0] + arrow, justify="right")
    best = {k: _best(rows, k) for k in cols}
    for r in rows:
        cells = []
        for k in cols:
            s = _cell(r, k)
            if best[k] is not None and r.get(k) == best[k]:
                s = f"[bold green]{s}[/]"
            cells.append(s)
        t.add_row(str(r.get("run", "?")), *cells)
    return t


def comparison_markdown(rows: list[dict], keys=COMPARE_KEYS) -> str:
    """The same table as GitHub markdown (plain text: readable in a terminal or a CI log);
    the best value of each column is in **bold**."""
    cols = _columns(rows, keys)
    head = ["run"] + [_FIG[k][0] + {"high": " ↑", "low": " ↓"}.get(_FIG[k][2], "") for k in cols]
    best = {k: _best(rows, k) for k in cols}
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * len(cols)) + "|"]
    for r in rows:
        cells = [str(r.get("run", "?")).replace("|", "\\|")]
        for k in cols:
            s = _cell(r, k)
            cells.append(f"**{s}**" if best[k] is not None and r.get(k) == best[k] else s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_table(console, table) -> None:
    """Print a comparison table at its natural width, wider than the console when it must: a
    narrow terminal (or a captured stream, 80 columns) would otherwise squeeze every header to "PS…"."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update(max_width=1000), table).maximum
    if need <= console.width:
        console.print(table)
        return
    saved = console._width  # None: the terminal's own width, looked up again afterwards
    console.width = need
    try:
        console.print(table, crop=False)
    finally:
        console._width = saved


def status_table(rows: list[dict]):
    """`talkctl status`: each artifact's state (and why), size, creation time and stage time."""
    from rich.markup import escape
    from rich.table import Table

    colours = {"done": "green", "stale": "yellow", "missing": "dim", "invalid": "red"}
    table = Table()
    for col in ("stage", "artifact", "state", "size", "created", "time"):
        table.add_column(col)
    for r in rows:
        c = colours[r["state"]]
        state = f"[{c}]{r['state']}[/]" + (f" ({escape(r['why'])})" if r["why"] else "")
        size = f"{r['bytes'] / 1e6:.1f} MB" if r["bytes"] else ""
        secs = f"{r['seconds']:.1f} s" if r["seconds"] is not None else ""
        table.add_row(r["stage"], r["artifact"], state, size, r["created"] or "", secs)
    return table
