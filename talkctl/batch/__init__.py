"""`talkctl batch`: many subjects through the stage chain, on local workers or a Ray cluster.

Public API:
    prepare(manifest_path, start, stop) -> (Manifest, stage names)   all checks, no work
    make_engine("local" | "ray", workers=, gpus=, address=)
    run_batch(manifest, root, engine, names, ...) -> batch record      (driver.py)
    batch_status(root) -> dict                                          (status.py)
"""
from __future__ import annotations

from pathlib import Path

from talkctl.errors import UsageError
from talkctl.batch.driver import run_batch
from talkctl.batch.manifest import Manifest, ManifestError, Subject, check_configs, load_manifest
from talkctl.batch.status import batch_status

__all__ = ["prepare", "make_engine", "run_batch", "batch_status", "load_manifest", "Manifest",
           "ManifestError", "Subject"]


def prepare(manifest_path: str | Path, start: str | None = None, stop: str | None = None) -> tuple[Manifest, list[str]]:
    """Read the manifest and check everything that can be checked before work starts."""
    from talkctl.pipeline import chain

    manifest = load_manifest(manifest_path)
    names = chain(start, stop)
    check_configs(manifest, names)
    return manifest, names


def make_engine(name: str, *, workers: int | None = None, gpus: int | None = None, address: str | None = None):
    if name == "local":
        if address:
            raise UsageError("--address is for --engine ray")
        from talkctl.batch.local import LocalEngine

        return LocalEngine(workers=workers, gpus=gpus)
    if name == "ray":
        from talkctl.batch.ray_engine import RayEngine

        return RayEngine(address=address, workers=workers)
    raise UsageError(f"unknown engine {name!r}; use local or ray")
