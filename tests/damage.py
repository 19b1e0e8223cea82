"""Damaging run directories on purpose: random bytes at a dataset's stored offset, a copy of
a trained run to damage, the trained run's settings as a config file for `talkctl run`."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

import trained_run


def stored_extents(path: Path) -> dict[str, list[tuple[int, int]]]:
    """Dataset name -> [(file offset, size)] of its stored bytes (each chunk, or the contiguous block)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.chunks:
                ext = []
                obj.id.chunk_iter(lambda info: ext.append((info.byte_offset, info.size)))
                out[name] = ext
            elif obj.id.get_offset() is not None:
                out[name] = [(obj.id.get_offset(), obj.id.get_storage_size())]
        f.visititems(visit)
    return out


def largest_dataset(path: Path) -> str:
    return max(stored_extents(path).items(), key=lambda kv: sum(s for _, s in kv[1]))[0]


def scribble(path: Path, offset: int, n: int, seed: int = 0) -> None:
    """Overwrite n bytes at offset with random bytes that differ from what was there."""
    with open(path, "r+b") as f:
        f.seek(offset)
        old = np.frombuffer(f.read(n), np.uint8)
        new = (old + np.random.default_rng(seed).integers(1, 256, len(old))).astype(np.uint8)
        f.seek(offset)
        f.write(new.tobytes())


def corrupt_dataset(path: Path, name: str | None = None, nbytes: int = 4096, every_chunk: bool = False) -> str:
    """Random bytes in the middle of a dataset's stored bytes (the largest dataset by default);
    returns the dataset's name."""
    name = name or largest_dataset(path)
    extents = stored_extents(path)[name]
    for offset, size in (extents if every_chunk else [max(extents, key=lambda e: e[1])]):
        n = min(nbytes, size // 2)
        scribble(path, offset + (size - n) // 2, n)
    return name


def copy_run(run, dest: Path) -> Path:
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns(".lock", "*.mp4"))
    return dest


def config_file(dest: Path) -> Path:
    """The trained run's overrides as a TOML config, so `talkctl run --preset tiny --config` matches it."""
    lines = []
    for stage, values in trained_run.OVERRIDES.items():
        lines.append(f"[{stage}]")
        lines += [f"{k} = {v!r}" for k, v in values.items()]
    dest.write_text("\n".join(lines) + "\n")
    return dest
