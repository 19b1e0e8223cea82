"""The built-in demo: a generated subject taken through the same stages a user's video goes through.

Nothing here is demo-specific inside the stages: the demo makes a clip (talkctl.synthetic),
then calls pipeline.run_stage exactly as the CLI does, and reports honestly which stages
are not built yet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .pipeline import CHAIN, null_progress, run_stage, stage_spec
from .rundir import RunDir


def run_demo(out_dir: Path, preset: str = "tiny", seconds: float = 12.0, size: int = 256,
             device: str = "auto", progress: Callable = null_progress,
             on_stage: Callable[[dict], None] = lambda s: None) -> dict:
    from .synthetic import make_subject

    out_dir = Path(out_dir).absolute()
    subject = make_subject(out_dir / "subject", seconds=seconds, size=size, seed=0)
    run = RunDir(out_dir / "run")
    run.set_video(subject.video_path)
    done, not_built = [], []
    for name in CHAIN:
        if not stage_spec(name).built:
            not_built.append(name)
            continue
        if not_built:  # a later stage cannot run without the missing earlier one
            not_built.append(name)
            continue
        summary = run_stage(name, run, preset=preset, device=device, progress=progress)
        done.append(summary)
        on_stage(summary)
    for verb in ("render", "eval"):
        if not stage_spec(verb).built or not_built:
            not_built.append(verb)
    return {
        "video": str(subject.video_path),
        "run": str(run),
        "stages": [s["stage"] for s in done],
        "not_built": not_built,
        "status": "complete" if not not_built else "partial",
    }
