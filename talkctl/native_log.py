"""Native libraries' stderr chatter (mediapipe's TFLite / absl start-up warnings), kept off the terminal.

mediapipe 0.10.21 logs through absl before absl::InitializeLog() is called, which writes straight
to file descriptor 2 and ignores GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL (measured: the
warnings print with either set). So the only lever is fd 2 itself: while a graph starts or
handles its first frame, fd 2 points at a temporary file; the text goes to the stage log
(`sink`) or is dropped. With `-v` nothing is caught (`show(True)`, set by the CLI).
"""
from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager

_SHOW = False


def show(flag: bool) -> None:
    """Let native stderr through (the CLI's -v)."""
    global _SHOW
    _SHOW = bool(flag)


@contextmanager
def native_stderr(sink: list | None = None):
    """Catch what native code writes on fd 2 inside the block; its text is appended to `sink`."""
    if _SHOW:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to catch
        yield
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace").strip()
            if text and sink is not None:
                sink.append(text)
