"""HDF5 files written whole or not at all, with a checksum of every object's bytes.

`atomic(path)` yields an h5py.File on `path.partial`; when the block ends it records a
CRC-32 of every group's and dataset's stored bytes and attributes in the root attribute
`checksums` (JSON: object name -> hex), closes the file and renames it into place. On any
failure the partial file is discarded without another write reaching the disk (its
descriptor is pointed at /dev/null first: HDF5 flushes on close, and a close that fails on a
full disk leaves a half-closed file that crashes the interpreter at exit), and a full disk
becomes a `DiskFullError` naming the directory.

`verify(f)` recomputes the checksums of an open file: the stored bytes of chunked datasets
are read raw (no decompression), so verifying costs a sequential read of the file at
CRC-32 speed (several GB/s), small next to decompressing it (bench/bench_integrity.py).
A file verified once in a process is not verified again until it changes on disk.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from talkctl.errors import DiskFullError

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


def checksums(f) -> dict[str, str]:
    """Object name ("/" for the root) -> CRC-32 hex of its attributes and stored bytes."""
    h5py = _h5py()
    out = {"/": f"{_attrs_crc(f, 0, skip=CHECKSUM_ATTR):08x}"}
    with open(f.filename, "rb") as raw:
        def visit(name, obj):
            crc = _attrs_crc(obj, 0)
            if isinstance(obj, h5py.Dataset):
                crc = _data_crc(obj, raw, crc)
            out["/" + name] = f"{crc:08x}"
        f.visititems(visit)
    return out


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
def is_disk_full(exc: BaseException) -> bool:
    """A write refused for lack of space (HDF5 reports errno 28 inside its message)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def disk_full_error(directory: Path, needed: int | None = None, written: int = 0) -> DiskFullError:
    """One line: where the disk is full, what is free there and how much is needed."""
    free = shutil.disk_usage(directory).free if directory.exists() else 0
    if needed:
        need = f"about {_size(needed)}"
    else:
        need = f"more than the {_size(written)} written when it filled" if written else "more space"
    return DiskFullError(f"disk full in {directory} ({_size(free)} free): this needs {need}; "
                         "free some space and rerun the same command (nothing half-written was kept)")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def discard(f, partial: Path) -> None:
    """Close an h5py.File being written without another byte reaching the disk, and delete it."""
    try:
        if f.id.valid:
            fd = f.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, fd)  # HDF5's close-time flush now lands in /dev/null
            finally:
                os.close(null)
            f.close()
    except Exception:  # a file HDF5 cannot close is still deleted below
        pass
    partial.unlink(missing_ok=True)


@contextmanager
def atomic(path: Path, *, needed: int | None = None, finish=None) -> Iterator:
    """Write `path` as `path.partial`, checksummed, renamed into place when complete.
    `finish(f)` runs last before the checksums (e.g. the root attributes); `needed` is the
    expected size (bytes) for the disk-full message."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    written = 0
    try:
        f = _h5py().File(partial, "w")
    except OSError as exc:
        if is_disk_full(exc):
            partial.unlink(missing_ok=True)
            raise disk_full_error(path.parent, needed) from None
        raise
    try:
        yield f
        if finish is not None:
            finish(f)
        f.flush()  # chunks reach the file, so their stored bytes can be read back
        f.attrs[CHECKSUM_ATTR] = json.dumps(checksums(f), sort_keys=True, separators=(",", ":"))
        f.close()
        os.replace(partial, path)
    except BaseException as exc:
        written = partial.stat().st_size if partial.exists() else 0
        discard(f, partial)
        if is_disk_full(exc):
            raise disk_full_error(path.parent, needed, written) from None
        raise
