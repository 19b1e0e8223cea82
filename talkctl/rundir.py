"""The run directory: one subject's artifacts, its source video, its lock and logs.

Layout:
  RUN/run.json           which video this run was made from (path + content hash)
  RUN/<artifact>.h5      stage outputs (see artifacts.py); `.h5.partial` while being written
  RUN/history.jsonl      one line per finished stage: fingerprint, seconds, when
  RUN/logs/<stage>.log   a log per stage
  RUN/.lock              held (flock) by the process that is writing
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from talkctl.errors import InputError, LockedError, UsageError


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class RunDir:
    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path).expanduser().absolute()
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path} is a file, not a run directory; give a directory")
        if create:
            try:
                (self.path / "logs").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot create run directory {self.path}: {exc.strerror or exc}; choose a writable --run"
                ) from None
            if not os.access(self.path, os.W_OK):
                raise UsageError(f"run directory {self.path} is not writable; choose a writable --run")
        elif not self.path.is_dir():
            raise UsageError(f"run directory {self.path} does not exist; run `talkctl track VIDEO --run {self.path}` first")

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # ---- the source video -------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "run.json"

    def manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.manifest_path} is unreadable ({exc}); delete it and rerun with the video") from None

    def _write_manifest(self, data: dict) -> None:
        tmp = self.manifest_path.with_suffix(".json.partial")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.manifest_path)

    def set_video(self, video: str | os.PathLike) -> str:
        """Record the source video; returns its fingerprint (content hash, cached by size+mtime)."""
        video = Path(video).expanduser().absolute()
        check_input_file(video, "video")
        st = video.stat()
        data = self.manifest()
        cached = data.get("video", {})
        if cached.get("path") == str(video) and cached.get("size") == st.st_size and cached.get("mtime") == st.st_mtime:
            return cached["sha256"]
        digest = file_sha256(video)
        data["video"] = {"path": str(video), "size": st.st_size, "mtime": st.st_mtime, "sha256": digest}
        self._write_manifest(data)
        return digest

    def video(self) -> tuple[Path, str] | None:
        v = self.manifest().get("video")
        return (Path(v["path"]), v["sha256"]) if v else None

    def video_fingerprint(self) -> str | None:
        """The source video's current fingerprint: re-hashed if the file changed on disk."""
        v = self.video()
        if v is None:
            return None
        if v[0].is_file():
            try:
                return self.set_video(v[0])
            except (OSError, InputError):
                return None
        return v[1]  # the video moved away: trust what was recorded

    # ---- history ---------------------------------------------------------
    def record(self, entry: dict) -> None:
        with open(self.path / "history.jsonl", "a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def history(self) -> list[dict]:
        try:
            lines = (self.path / "history.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash; the rest is still good
        return out

    # ---- lock ------------------------------------------------------------
    def lock(self, holder: str):
        """Exclusive writer lock on the run directory."""
        return exclusive_lock(self.path / ".lock", holder,
                              lambda who: f"run directory {self.path} is in use by {who}; "
                                          "wait for it to finish or use another --run")


@contextmanager
def exclusive_lock(path: Path, holder: str, busy_message):
    """flock on `path` (released by the OS even if the process is killed), with the holder's
    name and pid written in it so a refused caller can say who has it: `busy_message(who)`."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                who = json.loads(Path(path).read_text() or "{}")
            except ValueError:
                who = {}
            what = f"`{who.get('holder', '?')}` (pid {who.get('pid', '?')})" if who else "another process"
            raise LockedError(busy_message(what)) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"holder": holder, "pid": os.getpid(), "since": time.time()}).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_input_file(path: Path, what: str = "input") -> Path:
    """Fail with one line for the common mistakes: missing, a directory, empty, unreadable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{what} file {path} does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file; give a media file")
    if path.stat().st_size == 0:
        raise InputError(f"{what} file {path} is empty (0 bytes); give a real media file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} file {path} is not readable; check its permissions")
    return path
