"""The local engine: worker processes on this machine.

- CPU-class stages go to a pool of `workers` processes (CUDA hidden from them).
- GPU-class stages go to one process per GPU, each pinned with CUDA_VISIBLE_DEVICES; on a
  machine without GPUs they share the CPU pool, so everything runs on the CPU.

Why not concurrent.futures: when one of its workers dies, the whole pool is declared broken
and every task in flight is lost. Here each worker is a process with its own pipe, so a
worker that is killed costs only the task it was running (the driver retries it) and is
replaced. Workers are started with "spawn" (safe with CUDA and threads), import talkctl
once, and die with the driver (PR_SET_PDEATHSIG) so a killed batch leaves no orphans
holding run-directory locks.
"""
from __future__ import annotations

import collections
import ctypes
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import wait as mp_wait
from typing import Callable

from talkctl.batch.engine import Outcome
from talkctl.batch.tasks import StageTask, execute


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: workers still exit when their pipe closes


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _worker_main(conn, env: dict, setup: Callable | None) -> None:
    os.environ.update(env)
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the driver alone handles it and stops its
    # workers with terminate() -> KeyboardInterrupt in the stage, whose atomic writer
    # removes its .partial. (SIGINT is also ignored from birth: see _Worker.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if setup is not None:
            setup()
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            result = execute(task)
            try:
                conn.send(result)
            except (BrokenPipeError, OSError):
                return
    except KeyboardInterrupt:
        return  # stopped by the driver (SIGTERM): the stage has cleaned up


class _Worker:
    def __init__(self, ctx, pool: str, env: dict, setup):
        self.pool = pool
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, env, setup), daemon=True,
                                   name=f"talkctl-batch-{pool}")
        # A Ctrl-C while the child is still importing would print its traceback: start it
        # with SIGINT ignored (the disposition survives spawn's exec).
        ignore = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignore else None
        try:
            self.process.start()
        finally:
            if ignore:
                signal.signal(signal.SIGINT, previous)
        child.close()
        self.task: StageTask | None = None

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass


class LocalEngine:
    name = "local"

    def __init__(self, workers: int | None = None, gpus: int | None = None, threads: int | None = None):
        cores = os.cpu_count() or 1
        self.workers = max(1, workers or cores)
        self.gpus = _count_gpus() if gpus is None else max(0, gpus)
        # Threads per CPU worker: share the cores rather than oversubscribe them.
        self.threads = threads or max(1, cores // self.workers)
        self._ctx = mp.get_context("spawn")
        self._setup = None
        self._pools: dict[str, list[_Worker | None]] = {}
        self._queues: dict[str, collections.deque] = {}

    def describe(self) -> str:
        gpu = f"{self.gpus} GPU worker(s), one per GPU" if self.gpus else "no GPU: training on the CPU pool"
        return f"local engine: {self.workers} CPU worker(s) x {self.threads} thread(s), {gpu}"

    def start(self, setup: Callable | None = None, root=None) -> None:
        self._setup = setup
        self._pools = {"cpu": [None] * self.workers}
        self._queues = {"cpu": collections.deque()}
        for i in range(self.gpus):
            self._pools[f"gpu{i}"] = [None]
        self._queues["gpu"] = collections.deque()

    def _env(self, pool: str) -> dict:
        env = {"OMP_NUM_THREADS": str(self.threads), "OMP_WAIT_POLICY": "PASSIVE"}
        if pool == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        else:
            env["CUDA_VISIBLE_DEVICES"] = pool[3:]
            env["OMP_NUM_THREADS"] = "1"
        return env

    def _queue_for(self, task: StageTask) -> str:
        return "gpu" if task.resources == "gpu" and self.gpus else "cpu"

    def submit(self, task: StageTask) -> None:
        if task.resources == "gpu" and self.gpus:
            task = _with_device(task, "cuda")
        else:
            task = _with_device(task, "cpu")
        self._queues[self._queue_for(task)].append(task)

    def _dispatch(self) -> None:
        for pool, slots in self._pools.items():
            queue = self._queues["cpu" if pool == "cpu" else "gpu"]
            for i, w in enumerate(slots):
                if not queue:
                    break
                if w is not None and w.task is not None:
                    # Busy, or died busy: a dead worker's task is reported by poll() (its
                    # sentinel is ready) and retried; replacing the worker here would drop that
                    # task and leave the driver waiting forever for its outcome.
                    continue
                if w is None or not w.process.is_alive():
                    w = slots[i] = _Worker(self._ctx, pool, self._env(pool), self._setup)
                if w.task is None:
                    w.task = queue.popleft()
                    try:
                        w.conn.send(w.task)
                    except OSError:
                        pass  # the worker just died: poll() reports it (and its task) via its sentinel

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values()) + sum(
            1 for slots in self._pools.values() for w in slots if w is not None and w.task is not None)

    def poll(self, timeout: float) -> list[Outcome]:
        self._dispatch()
        busy = [w for slots in self._pools.values() for w in slots if w is not None and w.task is not None]
        if not busy:
            time.sleep(timeout)  # nothing to wait on: never let a caller's loop spin a core
            return []
        waitables = {}
        for w in busy:
            waitables[w.conn] = w
            waitables[w.process.sentinel] = w
        ready = mp_wait(list(waitables), timeout)
        out, seen = [], set()
        for r in ready:
            w = waitables[r]
            if id(w) in seen:
                continue
            seen.add(id(w))
            task, result = w.task, None
            try:
                if w.conn.poll():
                    result = w.conn.recv()
            except (EOFError, OSError):
                result = None
            w.task = None
            if result is not None:
                out.append(Outcome(task, result))
                continue
            w.process.join(timeout=1)
            code = w.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            out.append(Outcome(task, {"ok": False, "died": True, "code": 1,
                                      "error": f"worker process died ({how}) during {task.stage}"}))
            self._replace(w)
        self._dispatch()
        return out

    def _replace(self, dead: _Worker) -> None:
        for slots in self._pools.values():
            for i, w in enumerate(slots):
                if w is dead:
                    slots[i] = None  # restarted on the next dispatch
                    dead.conn.close()

    def shutdown(self) -> None:
        workers = [w for slots in self._pools.values() for w in slots if w is not None]
        for w in workers:
            w.stop()
        for w in workers:
            w.process.join(timeout=2 if w.task is None else 0.1)
            if w.process.is_alive():
                w.process.terminate()  # SIGTERM -> stage cleans its .partial on the way out
                w.process.join(timeout=5)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
        self._pools = {}


def _with_device(task: StageTask, device: str) -> StageTask:
    from dataclasses import replace

    return replace(task, device=device)


def _count_gpus() -> int:
    """Visible CUDA GPUs, without initialising CUDA in the driver (workers are spawned anyway)."""
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None and vis.strip() in ("", "-1"):
        return 0
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no torch or a broken driver: CPU only
        return 0
