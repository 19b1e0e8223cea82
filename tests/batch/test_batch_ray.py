"""The Ray engine on a local Ray instance (2 CPUs): the same tasks as the local engine give
the same artifacts. Skipped when Ray (the `ray` extra) is not installed."""
import json
import sys

import pytest

ray = pytest.importorskip("ray")

import batch_fakes  # noqa: E402
from talkctl.cli import main  # noqa: E402

from test_batch import _manifest, _record, _subjects, _videos, built_cpu_prefix, tiny_clips  # noqa: E402,F401


@pytest.fixture(scope="module")
def local_ray():
    from talkctl.batch.ray_engine import init_local

    init_local(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_fakes(monkeypatch, local_ray):
    from talkctl.batch.local import LocalEngine
    from talkctl.batch.ray_engine import RayEngine

    for obj, attr, value in batch_fakes.patches():
        monkeypatch.setattr(obj, attr, value)
    monkeypatch.setitem(sys.modules, "batch_fake_a", batch_fakes._module(batch_fakes.run_a))
    monkeypatch.setitem(sys.modules, "batch_fake_b", batch_fakes._module(batch_fakes.run_b))
    for cls in (LocalEngine, RayEngine):
        monkeypatch.setattr(cls, "start", (lambda orig: lambda self, setup=None, root=None: orig(self, batch_fakes.install, root))(cls.start))
    return batch_fakes


def test_ray_engine_gives_the_local_engines_artifacts(tmp_path, ray_fakes, capsys):
    from talkctl.batch.compare import compare_roots

    v = _videos(tmp_path, 3)
    m = _manifest(tmp_path, _subjects(v, {"s1": ['preset = "tiny"'], "s2": ["[subject.config.fake-a]", 'fail = "error"']}))
    rc_local = main(["batch", str(m), "--root", str(tmp_path / "local"), "-q"])
    rc_ray = main(["batch", str(m), "--root", str(tmp_path / "ray"), "--engine", "ray", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc_local == rc_ray == 5  # s2 fails on both, alone
    assert out["engine"] == "ray" and out["subjects"]["s2"]["error"] == _record(tmp_path / "local")["subjects"]["s2"]["error"]
    assert [out["subjects"][n]["status"] for n in ("s0", "s1", "s2")] == ["done", "done", "failed"]
    assert compare_roots(tmp_path / "local", tmp_path / "ray") == []
    # ran in Ray's worker processes, not here; rerun is all "up to date"
    pids = {int(line.split()[-1]) for n in ("s0", "s1") for line in (tmp_path / "ray" / n / "calls.txt").read_text().splitlines()}
    assert pids and all(p != __import__("os").getpid() for p in pids)
    assert main(["batch", str(m), "--root", str(tmp_path / "ray"), "--engine", "ray", "--json"]) == 5
    again = json.loads(capsys.readouterr().out)
    assert {s["status"] for n in ("s0", "s1") for s in again["subjects"][n]["stages"].values()} == {"up to date"}
    # a difference is reported
    import h5py
    with h5py.File(tmp_path / "ray" / "s0" / "b.h5", "a") as f:
        f["value"][0] += 1
    assert compare_roots(tmp_path / "local", tmp_path / "ray") == ["s0/b.h5:value: values differ (max abs diff 1)"]


def test_ray_engine_refuses_a_root_its_workers_cannot_see(tmp_path, local_ray, monkeypatch):
    from talkctl.batch.ray_engine import RayEngine, _probe
    from talkctl.errors import UsageError

    eng = RayEngine()
    monkeypatch.setattr("talkctl.batch.ray_engine._probe", lambda path: ("node-b", None))
    with pytest.raises(UsageError, match="not visible to Ray workers"):
        eng.start(None, tmp_path)
    assert _probe(str(tmp_path / "nothing"))[1] is None


def test_real_stages_on_ray_equal_the_local_engine(tmp_path, tiny_clips, local_ray, capsys):
    from talkctl.batch.compare import compare_roots

    last = built_cpu_prefix()
    for engine in ("local", "ray"):
        rc = main(["batch", str(tiny_clips), "--root", str(tmp_path / engine), "--preset", "tiny", "--to", last,
                   "--engine", engine, "-q"])
        assert rc == 0, capsys.readouterr().err
    assert _record(tmp_path / "ray")["engine"] == "ray"
    assert len(list((tmp_path / "ray").glob("*/audio.h5"))) == 2
    assert compare_roots(tmp_path / "local", tmp_path / "ray") == []


def test_ray_worker_killed_mid_stage_is_retried(tmp_path, ray_fakes):
    """Ray reports the dead worker; the driver reruns the stage, as with the local engine."""
    import os
    import signal
    import threading
    import time

    v = _videos(tmp_path, 2)
    m = _manifest(tmp_path, _subjects(v, {"s1": ["[subject.config.fake-a]", "sleep = 3.0"]}))
    root = tmp_path / "root"
    rc = []
    t = threading.Thread(target=lambda: rc.append(main(["batch", str(m), "--root", str(root), "--engine", "ray", "-q"])))
    t.start()
    pid_file = root / "s1" / "fake-a.pid"
    deadline = time.time() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    pid_file.unlink()
    os.kill(pid, signal.SIGKILL)
    t.join(timeout=90)
    assert rc == [0]
    rec = _record(root)
    assert rec["subjects"]["s1"]["stages"]["fake-a"]["attempts"] == 2
    assert int(pid_file.read_text()) != pid
    assert not list(root.rglob("*.partial"))
