"""One tiny trained run (synthetic subject, every stage at the tiny preset with minimal
iterations), built once per test session and shared by test_render.py and test_eval.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from talkctl.media.ffmpeg import write_wav  # noqa: F401  (re-exported: tests call trained_run.write_wav)

# config overrides a user could pass with --set: small crop, few iterations
OVERRIDES = {
    "track": {"size": 64},
    "init-static": {"resolution": 48, "head_iterations": 60, "torso_iterations": 20, "val_every": 30},
    "train-deform": {"resolution": 48, "iterations": 40, "val_every": 20},
    "train-torso": {"resolution": 48, "iterations": 20, "val_every": 10},
}
STAGES = ("extract-audio", "track", "parse", "init-static", "train-deform", "train-torso")
_CACHE: dict = {}


def render_cli(capsys, run, *args) -> tuple[int, dict | None, str]:
    """`talkctl render --run RUN --json` on the CPU: (exit code, its JSON summary or None, stderr)."""
    import json

    from talkctl.cli import main

    capsys.readouterr()
    rc = main(["render", "--run", str(run.path), "--json", "--device", "cpu", "-q", *args])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if rc == 0 else None), cap.err


def build(base: Path, seconds: float = 3.6, size: int = 128):
    """(RunDir, subject) trained through train-torso; cached per process."""
    if "run" in _CACHE:
        return _CACHE["run"]
    import torch

    from talkctl.pipeline import run_stage
    from talkctl.rundir import RunDir
    from talkctl.synthetic import make_subject

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subject = make_subject(base / "subject", seconds=seconds, size=size, seed=0)
        run = RunDir(base / "run")
        run.set_video(subject.video_path)
        for stage in STAGES:
            run_stage(stage, run, preset="tiny", device="cpu", overrides=OVERRIDES.get(stage, {}))
    finally:
        torch.set_num_threads(threads)
    _CACHE["run"] = (run, subject)
    return _CACHE["run"]


def voice(seconds: float, rate: int = 16000, seed: int = 7) -> np.ndarray:
    """The unseen synthetic speaker (talkctl.synthetic.make_audio) at `rate` Hz."""
    from talkctl.synthetic import make_audio

    return make_audio(seconds, sample_rate=rate, seed=seed).samples
