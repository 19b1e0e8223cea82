"""What a batch worker runs, whatever engine dispatched it.

The unit of dispatch is one stage of one subject (`StageTask`). A subject's stages run in
order, but different subjects' stages overlap: while one subject trains on a GPU, the next
is being tracked on the CPUs. Each stage declares a resource class (`cpu` or `gpu`), which
the engines turn into a worker pool (local) or a resource request (Ray).

`execute(task)` is the whole of a worker's job: call pipeline.run_stage exactly as
`talkctl run` does, report progress into a small file in the run directory (the root is on
storage every worker sees, so this works for every engine), and turn any failure into one
line. The stages themselves never learn which engine runs them.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Stages that need a GPU when one exists; everything else is CPU work (video decode,
# landmarks, parsing, audio features).
GPU_STAGES = frozenset({"init-static", "train-deform", "train-torso", "train-a2l", "render", "eval"})
PROGRESS_FILE = ".batch-progress.json"


def resource_class(stage: str) -> str:
    return "gpu" if stage in GPU_STAGES else "cpu"


@dataclass(frozen=True)
class StageTask:
    subject: str
    stage: str
    run: str                      # run directory (absolute; on storage every worker sees)
    preset: str | None = None
    config: dict = field(default_factory=dict)   # stage -> {key: value}
    force: bool = False
    device: str = "auto"          # "cpu" for CPU-class tasks, so they never touch a GPU
    attempt: int = 1
    audio: str | None = None      # render: the driving audio

    @property
    def label(self) -> str:
        """The stage, or `render:<audio name>` for one render of a subject."""
        return f"render:{Path(self.audio).stem}" if self.audio else self.stage

    @property
    def resources(self) -> str:
        return resource_class(self.stage)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)


class _FileTask:
    """A progress task that writes its state to the run's progress file, at most ~4 times a second."""

    def __init__(self, path: Path, base: dict, total, description: str):
        self.path, self.base = path, base
        self.state = {"description": description, "total": total, "completed": 0, "fields": {}}
        self.last = 0.0
        self._flush(force=True)

    def advance(self, n: int = 1, **fields) -> None:
        self.state["completed"] += n
        self.update(**fields)

    def update(self, **fields) -> None:
        if fields:
            self.state["fields"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fields.items()}
        self._flush()

    def _flush(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last >= 0.25:
            self.last = now
            try:
                _write_json(self.path, {**self.base, **self.state, "time": now})
            except OSError:
                pass  # progress is a nicety: never fail a stage over it


def file_progress(path: Path, base: dict):
    @contextmanager
    def progress(total, description: str):
        task = _FileTask(path, base, total, description)
        try:
            yield task
        finally:
            task._flush(force=True)

    return progress


def read_progress(run: str | Path) -> dict | None:
    try:
        return json.loads((Path(run) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def execute(task: StageTask) -> dict:
    """Run one stage of one subject. Returns {"ok": True, "summary": ...} or
    {"ok": False, "error": one line, "code": exit code}. Never raises for stage failures."""
    from talkctl.errors import TalkctlError
    from talkctl.pipeline import run_stage
    from talkctl.rundir import RunDir

    started = time.time()
    base = {"subject": task.subject, "stage": task.label, "attempt": task.attempt, "pid": os.getpid(),
            "host": os.uname().nodename, "started": started}
    path = Path(task.run) / PROGRESS_FILE
    try:
        _write_json(path, {**base, "description": task.stage, "total": None, "completed": 0, "fields": {}, "time": started})
    except OSError:
        pass
    try:
        run = RunDir(task.run, create=True)
        if task.audio:
            summary = _render(task, run, file_progress(path, base))
            return {"ok": True, "summary": summary, "seconds": round(time.time() - started, 3), "pid": os.getpid()}
        summary = run_stage(task.stage, run, preset=task.preset, toml=task.config, device=task.device,
                            force=task.force, progress=file_progress(path, base))
        return {"ok": True, "summary": summary, "seconds": round(time.time() - started, 3), "pid": os.getpid()}
    except TalkctlError as exc:
        return {"ok": False, "error": exc.message, "code": exc.exit_code, "seconds": round(time.time() - started, 3)}
    except Exception as exc:  # a bug in a stage: keep the traceback in the run's logs, one line here
        try:
            log = Path(task.run) / "logs" / f"{task.stage}.log"
            with open(log, "a") as f:
                f.write(traceback.format_exc())
            where = f" (traceback in {log})"
        except OSError:
            where = ""
        return {"ok": False, "error": f"internal error in {task.stage}: {type(exc).__name__}: {exc}{where}",
                "code": 1, "seconds": round(time.time() - started, 3)}


def _render(task: StageTask, run, progress) -> dict:
    """One audio of a subject -> RUN/renders/<audio name>.mp4, skipped when a stamp next to it
    says the same audio, models and settings made it."""
    from talkctl.artifacts import current_fingerprint
    from talkctl.pipeline import run_stage, stage_config, stage_spec
    from talkctl.rundir import file_sha256

    spec = stage_spec("render")
    toml = {"render": task.config.get("render", {})}
    _, cfg = stage_config(spec, task.preset, toml)
    audio = Path(task.audio)
    out = run.file("renders") / f"{audio.stem}.mp4"
    stamp_path = out.with_name(out.name + ".json")
    stamp = {"audio": file_sha256(audio), "config": {k: v for k, v in cfg.items() if k != "preset"},
             "models": {n: current_fingerprint(run, n) for n in spec.inputs}}
    try:
        same = json.loads(stamp_path.read_text()) == json.loads(json.dumps(stamp, default=str))
    except (OSError, ValueError):
        same = False
    if same and out.exists() and not task.force:
        return {"stage": task.label, "status": "up to date", "output": str(out)}
    out.parent.mkdir(exist_ok=True)
    summary = run_stage("render", run, preset=task.preset, toml=toml, device=task.device, progress=progress,
                        overrides={"audio": audio, "output": out})
    _write_json(stamp_path, stamp)
    small = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {**small, "stage": task.label, "status": "done", "output": str(out)}
