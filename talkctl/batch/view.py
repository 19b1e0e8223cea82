"""The live table of a batch on stderr: one row per subject (rich)."""
from __future__ import annotations

from rich.live import Live
from rich.markup import escape
from rich.table import Table

COLOURS = {"queued": "dim", "running": "cyan", "done": "green", "failed": "red", "interrupted": "yellow"}


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _bar(completed, total, width: int = 12) -> str:
    if not total:
        return f"{completed}" if completed else "[dim]…[/]"
    frac = max(0.0, min(1.0, completed / total))
    filled = int(round(frac * width))
    return f"[cyan]{'━' * filled}[/][dim]{'━' * (width - filled)}[/] {completed}/{total}"


def table(rows: list[dict], title: str = "") -> Table:
    t = Table(title=title or None, expand=False)
    widths = {"status": 11, "progress": 22}  # steadier columns while rows change; fits 80 columns
    for col in ("subject", "status", "stage", "progress", "", "elapsed"):
        t.add_column(col, min_width=widths.get(col))
    for r in rows:
        c = COLOURS.get(r["status"], "white")
        stage = ""
        if r["stage"]:
            stage = f"{r['stage']} ({r['stage_index']}/{r['n_stages']})"
            if r.get("attempt", 1) > 1:
                stage += f" try {r['attempt']}"
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["fields"].items())
        if r["status"] == "failed":
            info = f"[red]{escape(r['error'] or '')}[/]"
        progress = _bar(r["completed"], r["total"]) if r["status"] == "running" else ""
        t.add_row(escape(r["name"]), f"[{c}]{r['status']}[/]", stage, progress, info, _clock(r["elapsed"]))
    return t


class LiveTable:
    """on_update callback for run_batch: redraws at most ~4 times a second."""

    def __init__(self, console, title: str):
        self.title = title
        self.live = Live(table([], title), console=console, refresh_per_second=4, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        out = self.live.__exit__(*exc)
        if not self.live.console.is_terminal:
            self.live.console.line()  # a piped log: the summary starts on its own line
        return out

    def __call__(self, rows: list[dict]) -> None:
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in counts.items())
        self.live.update(table(rows, f"{self.title} ({tally})" if tally else self.title))
