"""The progress interface stages report through: `with progress(total, description) as task: task.advance()`.

The CLI passes a rich progress bar (console.make_progress); everything else gets `null_progress`.
"""
from __future__ import annotations

from contextlib import contextmanager

from talkctl.errors import raise_if_swallowed

# Training loops read a step's metrics (device tensors) on the host, and show them, every N
# steps: reading a loss waits for the GPU to finish everything queued so far.
METRICS_EVERY = 25


class NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        raise_if_swallowed()

    def update(self, **fields) -> None:
        pass


@contextmanager
def null_progress(total: int | None, description: str):
    yield NullTask()
