"""Fake stages for batch tests, installable in worker processes (local or Ray).

`fake-a` reads the run's video and writes a.h5 (after `sleep` seconds spent with its
`.partial` open, writing its pid to RUN/fake-a.pid first, so a test can kill it mid-stage);
`fail = "error"` makes it fail with a one-line StageError. `fake-b` reads a.h5, writes b.h5.
Every run appends a line to RUN/calls.txt so tests can count what actually ran.
"""
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

VERSION = 1
DEFAULTS = {"scale": 1.0, "fail": "", "sleep": 0.0, "preview": False}
PRESETS = {"tiny": {"scale": 0.5}}
NON_SEMANTIC = {"preview", "fail", "sleep"}


def _note(ctx, what):
    with open(ctx.run.file("calls.txt"), "a") as f:
        f.write(f"{what} {os.getpid()}\n")


def run_a(ctx, cfg):
    from talkctl.errors import StageError

    _note(ctx, "fake-a")
    data = ctx.video_path().read_bytes()
    if cfg["fail"] == "error":
        raise StageError("fake-a cannot read this subject; fix its video")
    with ctx.write("fake_a") as f:
        f.create_dataset("value", data=np.array([len(data) * cfg["scale"]]))
        f.create_dataset("series", data=np.arange(1000, dtype=np.float32) * cfg["scale"])
        ctx.run.file("fake-a.pid").write_text(str(os.getpid()))
        with ctx.progress(10, "fake-a") as task:
            for _ in range(10):
                time.sleep(cfg["sleep"] / 10)
                task.advance(1, loss=0.5)
    return {"value": len(data) * cfg["scale"]}


def run_b(ctx, cfg):
    _note(ctx, f"fake-b {ctx.device} [{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}]")
    with ctx.read("fake_a") as f:
        value = float(f["value"][0])
    with ctx.write("fake_b") as f:
        f.create_dataset("value", data=np.array([value + 1]))
    return {"value": value + 1}


RENDER_DEFAULTS = {"rasterizer": "auto", "audio": None, "output": None}


def run_render(ctx, cfg):
    """Fake render: the output holds the audio's size and the fake model's value."""
    import h5py

    with h5py.File(ctx.run.file("b.h5"), "r") as f:
        value = float(f["value"][0])
    with open(ctx.run.file("calls.txt"), "a") as f:
        f.write(f"render {os.getpid()}\n")
    Path(cfg["output"]).write_text(f"{Path(cfg['audio']).stat().st_size} {value} {cfg['rasterizer']}")
    return {"frames": 3}


def _module(run, defaults=DEFAULTS, non_semantic=NON_SEMANTIC):
    return types.SimpleNamespace(VERSION=VERSION, DEFAULTS=defaults, PRESETS=PRESETS, NON_SEMANTIC=non_semantic, run=run)


def render_module():
    """A stage without outputs, like the real render: every setting non-semantic."""
    return _module(run_render, RENDER_DEFAULTS, set(RENDER_DEFAULTS))


def patches():
    """(object, attribute, value) triples that swap the real stage table for the fakes."""
    from talkctl import artifacts, pipeline

    specs = (pipeline.StageSpec("fake-a", "batch_fake_a", ("video",), ("fake_a",), "a"),
             pipeline.StageSpec("fake-b", "batch_fake_b", ("fake_a",), ("fake_b",), "b"),
             pipeline.StageSpec("render", "batch_fake_render", ("fake_b",), (), "render"))
    arts = dict(artifacts.ARTIFACTS)
    arts["fake_a"] = artifacts.ArtifactSpec("fake_a", "a.h5", "talkctl.fake_a", 1, "fake-a")
    arts["fake_b"] = artifacts.ArtifactSpec("fake_b", "b.h5", "talkctl.fake_b", 1, "fake-b")
    return [(pipeline, "STAGES", specs), (pipeline, "STAGE_BY_NAME", {s.name: s for s in specs}),
            (pipeline, "CHAIN", [s.name for s in specs if s.outputs]), (artifacts, "ARTIFACTS", arts)]


def install():
    """Worker set-up: called once in each worker process before its first task."""
    sys.modules["batch_fake_a"] = _module(run_a)
    sys.modules["batch_fake_b"] = _module(run_b)
    sys.modules["batch_fake_render"] = render_module()
    for obj, attr, value in patches():
        setattr(obj, attr, value)


def install_fake_gpus():
    """install(), and let "cuda" through resolve_device on a machine without GPUs, so the
    local engine's GPU pinning can be checked here (fake-b notes its device and
    CUDA_VISIBLE_DEVICES)."""
    from talkctl import pipeline

    install()
    pipeline.resolve_device = lambda device: device


def calls(run: Path) -> list[str]:
    try:
        return [line.split()[0] for line in (Path(run) / "calls.txt").read_text().splitlines()]
    except FileNotFoundError:
        return []


def main(argv=None):
    """`python -c 'import batch_fakes; batch_fakes.main()' batch MANIFEST --root ROOT ...`: the
    real `talkctl` CLI with the fake stages here and in its workers (tests kill it, or its
    workers, from outside)."""
    from talkctl.batch.local import LocalEngine
    from talkctl.cli import main as cli_main

    install()
    start = LocalEngine.start
    LocalEngine.start = lambda self, setup=None, root=None: start(self, install, root)
    sys.exit(cli_main(sys.argv[1:] if argv is None else argv))
