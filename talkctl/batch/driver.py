"""The engine-neutral batch driver: one run directory per subject, stages dispatched as
(subject, stage) tasks in chain order, failures kept to their subject, results in ROOT/batch.json.

Resuming needs nothing special: every task goes through pipeline.run_stage, which skips a
stage whose outputs carry the current fingerprint and removes `.partial` leftovers of a
killed writer first. So rerunning a batch after a crash, a kill or new subjects only does
the missing work.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from talkctl.errors import UsageError
from talkctl.pipeline import feeds
from talkctl.rundir import RunDir, exclusive_lock
from talkctl.batch.engine import Engine
from talkctl.batch.manifest import Manifest, Subject
from talkctl.batch.tasks import PROGRESS_FILE, StageTask, read_progress

BATCH_FILE = "batch.json"
LOCK_FILE = ".batch.lock"


def root_lock(root: Path, holder: str):
    """One batch per root (the run directories keep their own locks too)."""
    return exclusive_lock(root / LOCK_FILE, holder,
                          lambda who: f"batch root {root} is in use by {who}; wait for it to finish or use another --root")


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_batch_file(root: Path) -> dict:
    try:
        return json.loads((Path(root) / BATCH_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: a new batch rewrites it


@dataclass
class SubjectState:
    subject: Subject
    run: Path
    todo: list[str]
    status: str = "queued"         # queued | running | done | failed | interrupted
    stage: str | None = None       # the stage in flight (or the one that failed)
    error: str | None = None
    stages: dict[str, dict] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    submitted: float = 0.0
    attempt: int = 1
    progress: dict | None = None

    def record(self) -> dict:
        elapsed = ((self.finished or time.time()) - self.started) if self.started else 0.0
        return {"status": self.status, "run": str(self.run), "video": str(self.subject.video),
                "audios": [str(a) for a in self.subject.audios], "preset": self.subject.preset,
                "stage": self.stage, "error": self.error, "stages": self.stages,
                "started": self.started, "finished": self.finished, "elapsed": round(elapsed, 3)}


def _subject_states(manifest: Manifest, root: Path, names: list[str], previous: dict) -> list[SubjectState]:
    """One run directory per subject, its to-do list (the stages, then one render per audio)."""
    states = []
    for s in manifest.subjects:
        run = RunDir(root / s.name, create=True)
        run.set_video(s.video)
        for stale in [run.path / PROGRESS_FILE, *run.path.glob(PROGRESS_FILE + ".*.tmp")]:
            stale.unlink(missing_ok=True)  # left by a batch that was killed
        # keep what an earlier batch recorded for stages outside this --from/--to
        kept = {k: v for k, v in previous.get(s.name, {}).get("stages", {}).items() if k not in names}
        renders = [f"render:{a.stem}" for a in s.audios] if feeds(names, "render") else []
        states.append(SubjectState(s, run.path, list(names) + renders, stages=kept))
    return states


def _next_task(st: SubjectState, preset: str | None, force: bool) -> StageTask:
    """The task for the subject's next to-do entry (marked in flight)."""
    st.stage = st.todo[0]
    st.submitted = time.time()
    stage, audio = st.stage, None
    if stage.startswith("render:"):
        stage = "render"
        audio = next(str(a) for a in st.subject.audios if f"render:{a.stem}" == st.stage)
    return StageTask(subject=st.subject.name, stage=stage, run=str(st.run), preset=st.subject.preset or preset,
                     config=st.subject.config, force=force, attempt=st.attempt, audio=audio)


def _settle(st: SubjectState, res: dict, retries: int) -> bool:
    """Record a finished task on its subject; True when the subject has a task to submit next
    (its next stage, or the same one again after a killed worker)."""
    if st.started is None:
        st.started = time.time() - (res.get("seconds") or 0.0)
    if res.get("ok"):
        summ = res["summary"]
        st.stages[st.stage] = {"status": summ.get("status"), "seconds": res.get("seconds"),
                               "attempts": st.attempt, "device": summ.get("device")}
        if summ.get("output") and st.stage.startswith("render:"):
            st.stages[st.stage]["output"] = summ["output"]
        st.todo.pop(0)
        st.attempt = 1
        if st.todo:
            return True
        st.status, st.stage, st.finished = "done", None, time.time()
    elif res.get("died") and st.attempt <= retries:
        st.attempt += 1  # the stage reruns; run_stage removes the killed writer's .partial
        return True
    else:
        st.stages[st.stage] = {"status": "failed", "seconds": res.get("seconds"),
                               "attempts": st.attempt, "error": res.get("error")}
        st.status, st.error, st.finished = "failed", f"{st.stage}: {res.get('error')}", time.time()
    (st.run / PROGRESS_FILE).unlink(missing_ok=True)
    st.progress = None
    return False


def run_batch(manifest: Manifest, root: str | Path, engine: Engine, names: list[str], *,
              preset: str | None = None, force: bool = False, retries: int = 1,
              setup: Callable | None = None, on_update: Callable[[list[dict]], None] | None = None,
              holder: str = "talkctl batch") -> dict:
    """Run every subject of `manifest` through the stages `names` under `root`.
    Returns the batch record (also written to ROOT/batch.json)."""
    root = Path(root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise UsageError(f"--root {root} is a file; give a directory")
    root.mkdir(parents=True, exist_ok=True)
    with root_lock(root, holder):
        previous = read_batch_file(root).get("subjects", {})
        states = _subject_states(manifest, root, names, previous)
        record = {"root": str(root), "manifest": str(manifest.path), "engine": engine.name,
                  "engine_detail": engine.describe(), "chain": names, "started": time.time(),
                  "finished": None, "state": "running",
                  "subjects": {k: v for k, v in previous.items() if k not in {s.subject.name for s in states}}}

        def save():
            record["subjects"].update({st.subject.name: st.record() for st in states})
            write_json_atomic(root / BATCH_FILE, record)

        by_name = {st.subject.name: st for st in states}
        try:
            engine.start(setup, root)
        except BaseException:
            engine.shutdown()
            raise
        try:
            for st in states:
                if st.todo:
                    engine.submit(_next_task(st, preset, force))
                else:
                    st.status = "done"
            save()
            in_flight = sum(1 for st in states if st.status in ("queued", "running"))
            while in_flight:
                outcomes = engine.poll(0.25)
                for o in outcomes:
                    st = by_name[o.task.subject]
                    if _settle(st, o.result, retries):
                        engine.submit(_next_task(st, preset, force))
                    else:
                        in_flight -= 1
                if outcomes:
                    save()
                _refresh_progress(states)
                if on_update:
                    on_update(snapshot(states))
        except BaseException:
            for st in states:
                if st.status in ("queued", "running"):
                    st.status, st.finished = "interrupted", time.time()
            record["state"], record["finished"] = "interrupted", time.time()
            save()
            raise
        finally:
            engine.shutdown()
        record["finished"] = time.time()
        record["state"] = "done" if all(st.status == "done" for st in states) else "failed"
        save()
        if on_update:
            on_update(snapshot(states))
        return record


def _refresh_progress(states: list[SubjectState]) -> None:
    for st in states:
        if st.status not in ("queued", "running") or st.stage is None:
            continue
        p = read_progress(st.run)
        if p and p.get("stage") == st.stage and p.get("attempt") == st.attempt and p.get("started", 0) >= st.submitted - 1:
            st.progress = p
            st.status = "running"
            if st.started is None:
                st.started = p["started"]
        else:
            st.progress = None


def snapshot(states: list[SubjectState]) -> list[dict]:
    """What the live table shows, one dict per subject."""
    rows = []
    for st in states:
        p = st.progress or {}
        n_done = len([k for k, v in st.stages.items() if v.get("status") in ("done", "up to date")])
        rows.append({"name": st.subject.name, "status": st.status, "stage": st.stage,
                     "stage_index": n_done + (1 if st.stage else 0), "n_stages": n_done + len(st.todo),
                     "completed": p.get("completed"), "total": p.get("total"), "fields": p.get("fields") or {},
                     "attempt": st.attempt, "error": st.error,
                     "elapsed": ((st.finished or time.time()) - st.started) if st.started else 0.0})
    return rows
