"""What the batch driver needs from an engine (local processes, Ray, ...).

    start(setup, root)  get workers ready (and check they can see `root`); `setup` (a picklable function or None) runs once in
                        each worker before its first task (tests use it to install fake stages)
    submit(task)        queue a StageTask; the engine decides where it runs (resource class)
    poll(timeout)       finished tasks as Outcomes (waits up to `timeout` seconds for one)
    describe()          one line for the user
    shutdown()          stop workers (and anything the engine started)

An outcome's result is execute()'s dict; {"died": True} marks a worker that died mid-task
(killed, out of memory, node lost), which the driver may retry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from talkctl.batch.tasks import StageTask


@dataclass
class Outcome:
    task: StageTask
    result: dict


class Engine(Protocol):
    name: str

    def start(self, setup: Callable | None = None, root=None) -> None: ...

    def submit(self, task: StageTask) -> None: ...

    def poll(self, timeout: float) -> list[Outcome]: ...

    def describe(self) -> str: ...

    def shutdown(self) -> None: ...
