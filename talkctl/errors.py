"""Known failures and their exit codes: the one place that maps errors to messages.

Every error a user can cause or fix is a `TalkctlError` subclass. The CLI prints
`error: <message>` (one line, with what to do) and exits with the class's code;
tracebacks only appear with `--debug`.

Exit codes (documented in the README):
  0  success
  1  unexpected internal error (a bug: rerun with --debug and report it)
  2  usage: bad option, bad config, bad input file
  3  missing tool or backend (ffmpeg, a model's weights, a CUDA-only backend on CPU)
  4  missing or stale artifact: an earlier stage must be (re)run
  5  stage failure: the input is valid but the stage could not produce its result (a full
     disk too: the message names the directory and the space needed)
  6  run directory locked by another talkctl process
  130 interrupted (Ctrl-C); nothing half-written is left, rerun to resume
  143 terminated (SIGTERM), cleaned up as for Ctrl-C
"""
from __future__ import annotations

import contextlib
import errno
import shlex
import shutil
import signal
import sys


class TalkctlError(Exception):
    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(TalkctlError):
    """Bad option, config value or input file."""
    exit_code = 2


class InputError(UsageError):
    """An input file that cannot be used (missing, empty, wrong kind)."""


class MissingToolError(TalkctlError):
    """A program, backend or model weight file that is not available here."""
    exit_code = 3


class ArtifactError(TalkctlError):
    """An artifact that is missing, stale or of the wrong schema."""
    exit_code = 4


class StageError(TalkctlError):
    """The stage could not produce its result from valid input."""
    exit_code = 5


class DiskFullError(StageError):
    """No space left where the stage writes; nothing half-written was kept."""


class LockedError(TalkctlError):
    """Another process holds the run directory."""
    exit_code = 6


EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM: cleaned up like an interrupt, the conventional 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so it unwinds like Ctrl-C: partial files removed,
    child processes (ffmpeg) ended, the lock released."""


_SWALLOWED: list[type] = []  # interrupts raised where Python could only print them (raise_if_swallowed)


def raise_if_swallowed() -> None:
    """Raise a Ctrl-C or SIGTERM again when it came while a finalizer (`__del__`, a weakref
    callback) was running: Python prints "Exception ignored" there and goes on, and the work would
    run to its end. Progress steps call this (progress.NullTask, console._Task), so every loop
    unwinds soon."""
    if _SWALLOWED:
        kind = _SWALLOWED[0]
        _SWALLOWED.clear()
        raise kind()


def interrupt_behind(exc: BaseException) -> bool:
    """True when a Ctrl-C or SIGTERM is the cause of `exc`: a native call (a numba kernel, a C
    extension) that was running when the signal handler raised turns the pending interrupt into
    a SystemError chained to it, which must still end the command as an interrupt, not as a bug."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):  # Terminated is one too
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def sigterm_unwinds():
    """SIGTERM raises Terminated while the block runs; yields a list, non-empty once it arrived
    (the CLI then exits 143 instead of Ctrl-C's 130)."""
    received: list[int] = []

    def on_term(signum, frame):
        received.append(signum)
        raise Terminated()

    def unraisable(u):
        if isinstance(u.exc_value, KeyboardInterrupt):  # Terminated is one too
            _SWALLOWED.append(type(u.exc_value))
        else:
            previous_hook(u)

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield received
        return
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
        _SWALLOWED.clear()


def command(*words) -> str:
    """A talkctl command to suggest in a message, each word shell-quoted (paths may hold
    spaces or `$(...)`): command("track", "--run", run) -> "`talkctl track --run '/a b'`"."""
    return "`" + " ".join(["talkctl", *(shlex.quote(str(w)) for w in words)]) + "`"


def is_disk_full(exc: BaseException) -> bool:
    """A write refused for lack of space (HDF5 reports errno 28 inside its message)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def disk_full_error(directory, written: int = 0) -> DiskFullError:
    """One line: where the disk is full, what is free there and how much is needed (at least
    what the abandoned file had reached)."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        free = 0
    need = f"more than the {_size(written)} it had written when the disk filled" if written else "more space"
    return DiskFullError(f"disk full in {directory} ({_size(free)} free): this needs {need}; "
                         "free some space and rerun the same command (nothing half-written was kept)")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
