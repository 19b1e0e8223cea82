"""The Ray engine: the same StageTasks as the local engine, dispatched to a Ray cluster.

Each task asks Ray for the resources of its stage's class: CPU stages 1 CPU; GPU stages
1 CPU + 1 GPU when the cluster has GPUs (Ray then pins the task to its GPU through
CUDA_VISIBLE_DEVICES), else 1 CPU. Workers run tasks.execute, exactly what the local
engine's workers run; the root must be on storage every node sees (checked by one probe
task before work starts). Ray is an optional extra: `pip install 'talkctl[ray]'`.

Worker deaths (killed, out of memory, node lost) come back as {"died": True}; the driver
decides about retries, as for the local engine, so Ray's own retries are off.
"""
from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Callable

from talkctl.errors import MissingToolError, UsageError
from talkctl.batch.engine import Outcome
from talkctl.batch.tasks import StageTask, execute

_setup_done = False


def _ray_execute(task: StageTask, setup: Callable | None) -> dict:
    global _setup_done
    if setup is not None and not _setup_done:
        setup()
        _setup_done = True
    return execute(task)


def _probe(path: str) -> tuple[str, str | None]:
    try:
        return os.uname().nodename, Path(path).read_text()
    except OSError:
        return os.uname().nodename, None


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingToolError("--engine ray needs Ray, which is not installed here: pip install 'talkctl[ray]'") from None
    return ray


def init_local(num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Start a local Ray instance whose workers import the same talkctl (and test helpers)
    as this process: they get this process's sys.path as PYTHONPATH."""
    ray = _ray()
    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    env = {"PYTHONPATH": path, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, runtime_env={"env_vars": env})


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        _ray()  # not installed: say so before anything is written
        self.address = address
        self.workers = workers
        self.gpus = 0
        self._started = False
        self._refs: dict = {}

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else "local Ray instance"
        return f"ray engine: {where}, {self.gpus:g} GPU(s)"

    def start(self, setup: Callable | None = None, root: Path | None = None) -> None:
        ray = _ray()
        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR)
                except (ConnectionError, RuntimeError) as exc:
                    raise UsageError(f"cannot connect to the Ray cluster at {self.address}: {exc}; "
                                     "check --address (e.g. ray://head:10001 or head:6379)") from None
            else:
                init_local(num_cpus=self.workers)
            self._started = True
        self.gpus = ray.cluster_resources().get("GPU", 0)
        self._setup = setup
        self._fn = ray.remote(_ray_execute)
        if root is not None:
            self._check_shared(ray, Path(root))

    def _check_shared(self, ray, root: Path) -> None:
        token = secrets.token_hex(8)
        probe = root / f".batch-probe-{token}"
        probe.write_text(token)
        try:
            host, seen = ray.get(ray.remote(_probe).options(num_cpus=0).remote(str(probe)))
        finally:
            probe.unlink(missing_ok=True)
        if seen != token:
            raise UsageError(f"--root {root} is not visible to Ray workers (checked on {host}); "
                             "put the root on storage every node mounts at the same path")

    def submit(self, task: StageTask) -> None:
        from dataclasses import replace

        gpu = task.resources == "gpu" and self.gpus >= 1
        task = replace(task, device="cuda" if gpu else "cpu")
        opts = {}
        if self._setup is not None:
            # Ray reuses worker processes: workers that ran a set-up hook get a runtime env
            # of their own, so they never serve plain tasks (and vice versa).
            tag = f"{getattr(self._setup, '__module__', '?')}.{getattr(self._setup, '__qualname__', '?')}"
            opts["runtime_env"] = {"env_vars": {"TALKCTL_BATCH_SETUP": tag}}
        ref = self._fn.options(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=0,
                               name=f"{task.subject}:{task.stage}", **opts).remote(task, self._setup)
        self._refs[ref] = task

    def poll(self, timeout: float) -> list[Outcome]:
        ray = _ray()
        if not self._refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            task = self._refs.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                    ray.exceptions.OutOfMemoryError, ray.exceptions.LocalRayletDiedError) as exc:
                result = {"ok": False, "died": True, "code": 1,
                          "error": f"Ray worker died during {task.stage} ({type(exc).__name__})"}
            except ray.exceptions.RayError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                result = {"ok": False, "code": 1, "error": f"Ray task {task.stage} failed: {first}"}
            out.append(Outcome(task, result))
        return out

    def shutdown(self) -> None:
        ray = _ray()
        for ref in list(self._refs):
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        self._refs = {}
        if self._started:
            ray.shutdown()
            self._started = False
