"""Two tiny stages used to test the pipeline contract without real media.

`fake-a` reads the run's "video" (any file) and writes `a.h5` with the file's byte count
times `scale`; `fake-b` reads `a.h5` and writes `b.h5`. `fake-a` can be told to fail or be
interrupted halfway through writing, to test atomicity.
"""
import numpy as np

VERSION = 1
DEFAULTS = {"scale": 1.0, "fail": "", "preview": False}
PRESETS = {"tiny": {"scale": 0.5}}
NON_SEMANTIC = {"preview", "fail"}
calls = {"a": 0, "b": 0}


def run_a(ctx, cfg):
    calls["a"] += 1
    data = ctx.video_path().read_bytes()
    with ctx.write("fake_a") as f:
        f.create_dataset("value", data=np.array([len(data) * cfg["scale"]]))
        if cfg["fail"] == "interrupt":
            raise KeyboardInterrupt
        if cfg["fail"] == "error":
            raise RuntimeError("boom")
    return {"value": len(data) * cfg["scale"]}


def run_b(ctx, cfg):
    calls["b"] += 1
    with ctx.read("fake_a") as f:
        value = float(f["value"][0])
    with ctx.write("fake_b") as f:
        f.create_dataset("value", data=np.array([value + 1]))
    return {"value": value + 1}
