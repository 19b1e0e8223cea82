"""Where output goes: results on stdout, everything else (progress, logs, errors) on stderr.

Results are what a verb was asked for (status, doctor and eval tables, where the demo put its
files); with `--json` stdout holds only the JSON summary, so `talkctl ... --json | jq` works.
"""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from talkctl.errors import raise_if_swallowed

err = Console(stderr=True, highlight=False)

# Wide enough that no table column is cut when stdout is a file or a pipe (rich would assume 80).
# Tables are not padded to it: they take their natural width.
PIPE_WIDTH = 1000


def out() -> Console:
    """The results console: stdout at the terminal's width, or at full width into a file or pipe."""
    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, width=None if tty else PIPE_WIDTH)


class _Task:
    def __init__(self, progress: Progress, task_id):
        self._p, self._id = progress, task_id

    def advance(self, n: int = 1, **fields) -> None:
        raise_if_swallowed()
        if fields:
            self._p.update(self._id, advance=n, info=_fmt(fields))
        else:  # keep the last metrics shown (training reads them only every few steps)
            self._p.update(self._id, advance=n)

    def update(self, **fields) -> None:
        self._p.update(self._id, info=_fmt(fields))


def _fmt(fields: dict) -> str:
    parts = []
    for k, v in fields.items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return "  ".join(parts)


class RateColumn(TextColumn):
    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return f"{speed:.1f} it/s" if speed else ""


def make_progress(quiet: bool):
    """A progress factory for stages: `with progress(total, description) as task: task.advance()`."""

    @contextmanager
    def progress(total: int | None, description: str):
        if quiet:
            from talkctl.progress import NullTask

            yield NullTask()
            return
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                   MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        with Progress(*columns, console=err, transient=False) as p:
            yield _Task(p, p.add_task(description, total=total, info=""))

    return progress


def setup_logging(verbose: int, quiet: bool) -> None:
    from talkctl import native_log

    native_log.show(verbose > 0 and not quiet)  # native libraries' start-up chatter only with -v
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger("talkctl")
    root.handlers = [h for h in root.handlers if not isinstance(h, RichHandler)]
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False
