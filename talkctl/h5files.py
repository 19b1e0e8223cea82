"""HDF5 files written whole or not at all, with a checksum of every object's bytes.

`atomic(path)` yields an h5py.File on `path.partial`; when the block ends it records a
CRC-32 of every group's and dataset's stored bytes and attributes in the root attribute
`checksums` (JSON: object name -> hex), closes the file and renames it into place. HDF5
writes through `_SpaceGuard`, which keeps a full disk's ENOSPC away from HDF5 (it reports
write errors inside object destructors, a traceback each, and a file it cannot flush crashes
the interpreter at exit); the block then ends in a `DiskFullError` naming the directory. On
any failure the partial file is deleted.

`verify(f)` recomputes the checksums of an open file: the stored bytes of chunked datasets
are read raw (no decompression), so verifying costs a sequential read of the file at
CRC-32 speed (several GB/s), small next to decompressing it (bench/bench_integrity.py).
A file verified once in a process is not verified again until it changes on disk.
"""
from __future__ import annotations

import errno
import json
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from talkctl.errors import disk_full_error, is_disk_full

CHECKSUM_ATTR = "checksums"
_VERIFIED: dict[tuple, str | None] = {}  # (path, dev, ino, size, mtime_ns) -> problem or None


def _h5py():
    import h5py  # deferred: keeps `talkctl --help` fast

    return h5py


# ---- checksums ----------------------------------------------------------------------------
def _attrs_crc(obj, crc: int, skip: str | None = None) -> int:
    import numpy as np

    for key in sorted(obj.attrs.keys()):
        if key == skip:
            continue
        value = obj.attrs[key]
        if isinstance(value, str):
            raw = value.encode()
        elif isinstance(value, bytes):
            raw = value
        else:
            arr = np.asarray(value)
            raw = arr.dtype.str.encode() + (repr(arr.tolist()).encode() if arr.dtype.kind == "O" else arr.tobytes())
        crc = zlib.crc32(key.encode() + b"=" + raw, crc)
    return crc


def _data_crc(ds, raw_file, crc: int) -> int:
    """CRC of a dataset's bytes as stored: each chunk as written (compressed), contiguous data
    as laid out in the file, anything else (compact, variable length) through its values."""
    import numpy as np

    h5d = _h5py().h5d
    crc = zlib.crc32(f"{ds.shape}{ds.dtype.str}".encode(), crc)
    layout = ds.id.get_create_plist().get_layout()
    if layout == h5d.CHUNKED:
        chunks = []
        ds.id.chunk_iter(lambda info: chunks.append((info.chunk_offset, info.filter_mask, info.byte_offset, info.size)))
        for offset, mask, address, size in sorted(chunks):
            crc = zlib.crc32(f"{offset}{mask}".encode(), crc)
            crc = zlib.crc32(os.pread(raw_file.fileno(), size, address), crc)
        return crc
    if layout == h5d.CONTIGUOUS and ds.dtype.kind != "O":
        address = ds.id.get_offset()
        if address is None:  # never written: the fill value
            return crc
        return zlib.crc32(os.pread(raw_file.fileno(), ds.id.get_storage_size(), address), crc)
    values = np.asarray(ds[()])
    return zlib.crc32(repr(values.tolist()).encode() if values.dtype.kind == "O" else values.tobytes(), crc)


def checksums(f, path: Path | None = None) -> dict[str, str]:
    """Object name ("/" for the root) -> CRC-32 hex of its attributes and stored bytes
    (`path`: the file's path, when it was opened through a file object)."""
    h5py = _h5py()
    out = {"/": f"{_attrs_crc(f, 0, skip=CHECKSUM_ATTR):08x}"}
    with open(path or f.filename, "rb") as raw:
        def visit(name, obj):
            crc = _attrs_crc(obj, 0)
            if isinstance(obj, h5py.Dataset):
                crc = _data_crc(obj, raw, crc)
            out["/" + name] = f"{crc:08x}"
        f.visititems(visit)
    return out


def stamp(f, path: Path | None = None) -> None:
    """Record the checksums of a file open for writing (atomic does; so must anything that
    deliberately edits an artifact in place, or the edit reads as corruption)."""
    f.flush()  # chunks reach the file, so their stored bytes can be read back
    f.attrs[CHECKSUM_ATTR] = json.dumps(checksums(f, path), sort_keys=True, separators=(",", ":"))


def verify(f) -> str | None:
    """None when an open file matches its recorded checksums (or records none: made before
    talkctl kept them); else what differs. Read errors are what differs too."""
    path = Path(f.filename)
    st = path.stat()
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    recorded = f.attrs.get(CHECKSUM_ATTR)
    problem = None
    if recorded is not None:
        try:
            expected = json.loads(recorded)
            got = checksums(f)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            problem = f"unreadable ({str(exc).splitlines()[0][:120]})"
        else:
            bad = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
            if bad:
                problem = f"checksum mismatch in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
    _VERIFIED[key] = problem
    return problem


def verify_path(path: Path) -> str | None:
    """verify() for a file on disk; an unopenable file is a problem too."""
    try:
        with _h5py().File(path, "r") as f:
            return verify(f)
    except OSError as exc:
        return f"unreadable ({str(exc).splitlines()[0][:120]})"


def damage(path: Path) -> str | None:
    """What is wrong with a file, searched for after a read failed: its checksums when it has
    them, else every stored chunk decompressed (slow; only on that failure path)."""
    path = Path(path)
    if not path.exists():
        return None
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get(CHECKSUM_ATTR) is not None:
                return verify(f)

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    for sel in (obj.iter_chunks() if obj.chunks else [()]):
                        obj[sel]
            f.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        return f"unreadable ({str(exc).splitlines()[0][:120]})"
    return None


def forget_verified() -> None:
    """Drop the in-process record of verified files (benchmarks, tests)."""
    _VERIFIED.clear()


# ---- writing ------------------------------------------------------------------------------
class _SpaceGuard:
    """The file HDF5 writes through (h5py's file-object driver), unbuffered. A write refused
    for lack of space is remembered and every later write is dropped, so HDF5 itself never
    sees the error: it reports write errors from inside object destructors, prints a
    traceback for each and can crash the interpreter at exit; `atomic` raises it instead."""

    def __init__(self, path: Path):
        self.raw = open(path, "w+b", buffering=0)
        self.failed: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n, done = len(view), 0
        if self.failed is None:
            try:
                while done < n:  # an unbuffered write may be short
                    done += self.raw.write(view[done:])
                return n
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self.failed = exc
        self.raw.seek(n - done, os.SEEK_CUR)  # dropped: the file is discarded anyway
        return n

    def truncate(self, size: int | None = None) -> int:
        try:
            return self.raw.truncate(size)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.failed = self.failed or exc
            return self.raw.tell() if size is None else size

    def flush(self) -> None:
        pass  # unbuffered: every write has reached the OS

    def readinto(self, buf) -> int:
        return self.raw.readinto(buf)

    def read(self, n: int = -1) -> bytes:
        return self.raw.read(n)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()


@contextmanager
def atomic(path: Path, *, finish=None) -> Iterator:
    """Write `path` as `path.partial`, checksummed, renamed into place when complete.
    `finish(f)` runs last before the checksums (e.g. the root attributes). A full disk is a
    DiskFullError naming the directory; on any failure the partial file is deleted."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        guard = _SpaceGuard(partial)
        f = _h5py().File(guard, "w")
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path.parent) from None
        raise
    ok = False
    try:
        yield f
        if finish is not None:
            finish(f)
        if guard.failed is None:
            stamp(f, partial)
        f.close()
        guard.close()
        if guard.failed is None:
            os.replace(partial, path)
            ok = True
    finally:
        if not ok:
            full, written = guard.failed is not None, partial.stat().st_size if partial.exists() else 0
            _close_quietly(f, guard)
            partial.unlink(missing_ok=True)
            if full:
                raise disk_full_error(path.parent, written) from None


def _close_quietly(f, guard: _SpaceGuard) -> None:
    guard.failed = guard.failed or OSError(errno.ENOSPC, "discarding")  # nothing more reaches the disk
    try:
        if f.id.valid:
            f.close()
    except Exception:  # a file HDF5 cannot close is still deleted
        pass
    guard.close()
