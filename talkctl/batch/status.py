"""`talkctl batch status ROOT`: every subject's stage states, times and eval figures.

Reads ROOT/batch.json (what the last batch recorded: status, one-line error, attempts)
and each run directory itself (pipeline.status: done / stale / missing), so it also tells
the truth after a crash or after someone reran a stage by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

from talkctl.errors import UsageError, command
from talkctl.rundir import RunDir
from talkctl.batch.driver import BATCH_FILE, read_batch_file
from talkctl.batch.tasks import read_progress


def _eval_figures(run: Path) -> dict:
    """Numeric figures from RUN/eval.json (top level or under "figures"/"metrics"), if any."""
    try:
        data = json.loads((run / "eval.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    for key in ("figures", "metrics"):
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _batch_running(root: Path) -> bool:
    """Whether a batch holds the root's lock now (a crashed batch leaves "running" in batch.json)."""
    import fcntl
    import os

    from talkctl.batch.driver import LOCK_FILE

    path = root / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def batch_status(root: str | Path) -> dict:
    from talkctl.pipeline import status as run_status

    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise UsageError(f"batch root {root} does not exist; run {command('batch', 'MANIFEST', '--root', root)} first")
    record = read_batch_file(root)
    if record.get("state") == "running" and not _batch_running(root):
        record["state"] = "interrupted"
    recorded = record.get("subjects", {})
    names = list(recorded)
    for d in sorted(root.iterdir()):
        if d.is_dir() and (d / "run.json").exists() and d.name not in recorded:
            names.append(d.name)
    if not names:
        raise UsageError(f"{root} holds no batch ({BATCH_FILE} missing and no run directories); check the path")
    subjects = []
    for name in names:
        rec = recorded.get(name, {})
        run_path = Path(rec.get("run") or root / name)
        stages = []
        if run_path.is_dir():
            run = RunDir(run_path, create=False)
            for row in run_status(run):
                done = rec.get("stages", {}).get(row["stage"], {})
                stages.append({"stage": row["stage"], "artifact": row["artifact"], "state": row["state"],
                               "why": row["why"], "seconds": row["seconds"], "created": row["created"],
                               "attempts": done.get("attempts")})
        status = rec.get("status", "unknown")
        if status in ("running", "queued") and record.get("state") != "running":
            status = "interrupted"
        progress = read_progress(run_path) if status == "running" else None
        subjects.append({"name": name, "status": status, "run": str(run_path), "video": rec.get("video"),
                         "error": rec.get("error"), "elapsed": rec.get("elapsed"), "stages": stages,
                         "eval": _eval_figures(run_path), "progress": progress})
    return {"root": str(root), "state": record.get("state"), "engine": record.get("engine"),
            "chain": record.get("chain"), "started": record.get("started"), "finished": record.get("finished"),
            "subjects": subjects}
