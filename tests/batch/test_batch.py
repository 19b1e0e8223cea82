"""`talkctl batch`: manifest checks, the local engine on fake stages, failure isolation,
locks, worker kills and interrupted batches, status. (Ray: test_batch_ray.py.)"""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import pytest

import batch_fakes
from talkctl.cli import main
from repo import REPO, TEST_PATH



@pytest.fixture
def fakes(monkeypatch):
    """Fake stages here and in every batch worker (installed by the engines' set-up hook)."""
    from talkctl.batch.local import LocalEngine

    for obj, attr, value in batch_fakes.patches():
        monkeypatch.setattr(obj, attr, value)
    monkeypatch.setitem(sys.modules, "batch_fake_a", batch_fakes._module(batch_fakes.run_a))
    monkeypatch.setitem(sys.modules, "batch_fake_b", batch_fakes._module(batch_fakes.run_b))
    monkeypatch.setitem(sys.modules, "batch_fake_render", batch_fakes.render_module())
    start = LocalEngine.start
    monkeypatch.setattr(LocalEngine, "start", lambda self, setup=None, root=None: start(self, batch_fakes.install, root))
    return batch_fakes


def _videos(d: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        p = d / f"clip{i}.mp4"
        p.write_bytes(os.urandom(1000 + 100 * i))
        out.append(p)
    return out


def _manifest(d: Path, rows: list[str], name="m.toml") -> Path:
    p = d / name
    p.write_text("\n".join(rows) + "\n")
    return p


def _subjects(videos, extra: dict | None = None) -> list[str]:
    rows = []
    for i, v in enumerate(videos):
        rows += ["[[subject]]", f'name = "s{i}"', f'video = "{v.name}"']
        rows += (extra or {}).get(f"s{i}", [])
    return rows


def _record(root: Path) -> dict:
    return json.loads((root / "batch.json").read_text())


# ---- manifest -----------------------------------------------------------------------

def test_toml_and_csv_give_the_same_subjects(tmp_path, fakes):
    from talkctl.batch import load_manifest

    v = _videos(tmp_path, 2)
    (tmp_path / "a.wav").write_bytes(b"RIFF....")
    toml = _manifest(tmp_path, [
        'preset = "tiny"', "[defaults.fake-b]", "scale = 3.0",
        "[[subject]]", 'name = "s0"', f'video = "{v[0].name}"', 'audios = ["a.wav"]', "size = 128",
        "[subject.config.fake-a]", "scale = 2.0",
        "[[subject]]", 'name = "s1"', f'video = "{v[1]}"', 'preset = "fast"',
    ])
    csv = tmp_path / "m.csv"
    csv.write_text("\ufeff"  # a spreadsheet's BOM
                   "name,video,audios,preset,size,fake-a.scale,fake-b.scale\n"
                   f"s0,{v[0].name},a.wav,tiny,128,2.0,3.0\n"
                   f"s1,{v[1]},,fast,,,3.0\n")
    a, b = load_manifest(toml), load_manifest(csv)
    assert [s.to_json() for s in a.subjects] == [s.to_json() for s in b.subjects]
    s0 = a.subjects[0]
    assert s0.video == v[0].absolute() and s0.audios == [tmp_path / "a.wav"] and s0.preset == "tiny"
    assert s0.config == {"fake-a": {"scale": 2.0}, "fake-b": {"scale": 3.0}}  # size -> track: not in this stage table


def test_every_manifest_problem_is_one_line_and_nothing_runs(tmp_path, fakes, capsys):
    v = _videos(tmp_path, 1)
    m = _manifest(tmp_path, [
        "[[subject]]", 'name = "a"', f'video = "{v[0].name}"', 'colour = "red"',
        "[[subject]]", 'name = "A"', f'video = "{v[0].name}"',
        "[[subject]]", 'name = "b"', 'video = "nowhere.mp4"', 'audios = ["gone.wav"]',
        "[[subject]]", 'name = "c d"', f'video = "{v[0].name}"',
        "[[subject]]", 'name = "e"', f'video = "{v[0].name}"', 'preset = "huge"',
        "[[subject]]", 'name = "f"', f'video = "{v[0].name}"', "[subject.config.fake-a]", "speed = 2",
    ])
    root = tmp_path / "root"
    rc = main(["batch", str(m), "--root", str(root)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and not root.exists()
    for needle in ["unknown key 'colour'", "duplicate name 'A'", "video file", "nowhere.mp4", "gone.wav",
                   "name 'c d'", "unknown preset 'huge'"]:
        assert sum(needle in ln for ln in lines) == 1, (needle, err)
    # config errors are checked once the rows themselves are clean
    m2 = _manifest(tmp_path, ["[[subject]]", 'name = "f"', f'video = "{v[0].name}"',
                              "[subject.config.fake-a]", "speed = 2", "[subject.config.fake-z]", "x = 1"], "m2.toml")
    rc = main(["batch", str(m2), "--root", str(root)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and not root.exists() and len(lines) == 2
    assert any("unknown fake-a setting 'speed'" in ln for ln in lines)
    assert any("unknown stage 'fake-z'" in ln for ln in lines)


# ---- running ------------------------------------------------------------------------

def test_local_batch_runs_every_subject_and_reruns_only_missing_work(tmp_path, fakes, capsys):
    v = _videos(tmp_path, 3)
    m = _manifest(tmp_path, _subjects(v[:2], {"s1": ['preset = "tiny"']}))
    root = tmp_path / "root"
    assert main(["batch", str(m), "--root", str(root), "--workers", "2", "-q"]) == 0
    rec = _record(root)
    assert rec["state"] == "done" and set(rec["subjects"]) == {"s0", "s1"}
    for name, video, scale in (("s0", v[0], 1.0), ("s1", v[1], 0.5)):
        sub = rec["subjects"][name]
        assert sub["status"] == "done" and sub["error"] is None
        assert {k: s["status"] for k, s in sub["stages"].items()} == {"fake-a": "done", "fake-b": "done"}
        with h5py.File(root / name / "b.h5") as f:
            assert f["value"][0] == video.stat().st_size * scale + 1
        assert fakes.calls(root / name) == ["fake-a", "fake-b"]
        assert not (root / name / ".batch-progress.json").exists()
    # add a subject and rerun: only the new subject's stages run
    m = _manifest(tmp_path, _subjects(v, {"s1": ['preset = "tiny"']}), "m.toml")
    assert main(["batch", str(m), "--root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["subjects"]["s0"]["stages"]["fake-a"]["status"] == "up to date"
    assert fakes.calls(root / "s0") == ["fake-a", "fake-b"] and fakes.calls(root / "s1") == ["fake-a", "fake-b"]
    assert fakes.calls(root / "s2") == ["fake-a", "fake-b"]
    # --from/--to as in `run`; --force reruns
    assert main(["batch", str(m), "--root", str(root), "--from", "fake-b", "--force", "-q"]) == 0
    assert fakes.calls(root / "s0") == ["fake-a", "fake-b", "fake-b"]
    assert set(_record(root)["subjects"]["s0"]["stages"]) == {"fake-a", "fake-b"}  # fake-a's entry kept


def test_a_failing_subject_is_recorded_and_the_others_finish(tmp_path, fakes, capsys):
    v = _videos(tmp_path, 3)
    m = _manifest(tmp_path, _subjects(v, {"s1": ["[subject.config.fake-a]", 'fail = "error"']}))
    root = tmp_path / "root"
    rc = main(["batch", str(m), "--root", str(root), "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 5 and "1 of 3 subject(s) failed (s1)" in err
    rec = _record(root)
    assert rec["state"] == "failed"
    assert rec["subjects"]["s1"]["status"] == "failed"
    assert rec["subjects"]["s1"]["error"] == "fake-a: fake-a cannot read this subject; fix its video"
    assert [rec["subjects"][n]["status"] for n in ("s0", "s2")] == ["done", "done"]
    assert fakes.calls(root / "s1") == ["fake-a"]  # fake-b never ran for it
    # status: per subject, per stage, with the error
    assert main(["batch", "status", str(root), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    by = {s["name"]: s for s in st["subjects"]}
    assert by["s1"]["status"] == "failed" and "cannot read" in by["s1"]["error"]
    assert {r["stage"]: r["state"] for r in by["s1"]["stages"]} == {"fake-a": "missing", "fake-b": "missing"}
    assert {r["stage"]: r["state"] for r in by["s0"]["stages"]} == {"fake-a": "done", "fake-b": "done"}
    assert all(r["seconds"] is not None for r in by["s0"]["stages"])
    assert main(["batch", "status", str(root)]) == 0
    human = capsys.readouterr().out  # a result: on stdout, at full width
    assert "s1" in human and "failed" in human and "fake-a: fake-a cannot read this subject; fix its video" in human


def test_status_reads_eval_figures(tmp_path, fakes, capsys):
    v = _videos(tmp_path, 1)
    root = tmp_path / "root"
    assert main(["batch", str(_manifest(tmp_path, _subjects(v))), "--root", str(root), "-q"]) == 0
    (root / "s0" / "eval.json").write_text(json.dumps({"figures": {"psnr": 31.5, "lpips": 0.05, "name": "x"}}))
    assert main(["batch", "status", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["subjects"][0]["eval"] == {"psnr": 31.5, "lpips": 0.05}


def test_second_batch_on_the_same_root_is_refused(tmp_path, fakes, capsys):
    from talkctl.batch.driver import root_lock
    from talkctl.rundir import RunDir

    v = _videos(tmp_path, 2)
    m = _manifest(tmp_path, _subjects(v))
    root = tmp_path / "root"
    root.mkdir()
    with root_lock(root, "talkctl batch other.toml"):
        rc = main(["batch", str(m), "--root", str(root)])
    err = capsys.readouterr().err
    assert rc == 6 and f"batch root {root} is in use by `talkctl batch other.toml` (pid {os.getpid()})" in err
    assert not (root / "batch.json").exists()
    # a run directory held by someone else (e.g. `talkctl track --run ROOT/s1`): only that subject fails
    with RunDir(root / "s1").lock("talkctl track"):
        rc = main(["batch", str(m), "--root", str(root), "-q"])
    rec = _record(root)
    assert rc == 5 and rec["subjects"]["s0"]["status"] == "done"
    assert "is in use by `talkctl track`" in rec["subjects"]["s1"]["error"]


def _start_fake_batch(m: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(TEST_PATH), "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONFAULTHANDLER": "1"}
    log = open(m.parent / f"batch-{time.time_ns()}.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", "import batch_fakes; batch_fakes.main()", "batch", str(m),
                             "--root", str(root), "--workers", "2", "-q"],
                            cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = Path(log.name)
    log.close()
    return proc


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    time.sleep(0.2)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _finish(proc: subprocess.Popen, seconds: float = 90) -> str:
    """Wait for the batch; on a hang, dump its driver's stacks (faulthandler) and fail."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        proc.wait(timeout=10)
        raise AssertionError(f"batch hung: {proc.log_path.read_text()[-4000:]}")
    return proc.log_path.read_text()


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> str:
    t = time.time()
    while time.time() - t < seconds:
        if path.exists() and path.read_text():
            return path.read_text()
        if proc.poll() is not None:
            raise AssertionError(f"batch ended early: {proc.log_path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


@contextmanager
def _batch_with_slow_s1(tmp_path, n: int, sleep: float):
    """A fake batch of n subjects in a subprocess, s1 sleeping `sleep` s in fake-a: yields (root,
    the batch process, s1's worker pid once it runs); the batch is killed on the way out if alive."""
    v = _videos(tmp_path, n)
    m = _manifest(tmp_path, _subjects(v, {"s1": ["[subject.config.fake-a]", f"sleep = {sleep}"]}))
    root = tmp_path / "root"
    proc = _start_fake_batch(m, root)
    try:
        yield root, proc, int(_wait_for(root / "s1" / "fake-a.pid", proc))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_worker_killed_mid_stage_reruns_the_stage_and_others_finish(tmp_path):
    with _batch_with_slow_s1(tmp_path, 3, 3.0) as (root, proc, pid):
        assert (root / "s1" / "a.h5.partial").exists()  # killed while writing
        (root / "s1" / "fake-a.pid").unlink()
        os.kill(pid, signal.SIGKILL)
        err = _finish(proc)
    assert proc.returncode == 0, err
    rec = _record(root)
    assert all(s["status"] == "done" for s in rec["subjects"].values())
    assert rec["subjects"]["s1"]["stages"]["fake-a"]["attempts"] == 2
    assert int((root / "s1" / "fake-a.pid").read_text()) != pid  # a fresh worker reran it
    assert batch_fakes.calls(root / "s1") == ["fake-a", "fake-a", "fake-b"]
    assert not list(root.rglob("*.partial"))
    with h5py.File(root / "s1" / "a.h5") as f:
        assert f["series"].shape == (1000,)


def test_a_worker_that_dies_busy_keeps_its_task_while_others_are_queued(tmp_path, fakes):
    """The race behind a batch that hung under load: a worker is killed mid-stage, and a
    dispatch (for a queued task) runs before poll() has waited on its sentinel. The dead
    worker's task must still come back as `died` (the driver retries it), not vanish."""
    from talkctl.batch.local import LocalEngine
    from talkctl.batch.tasks import StageTask
    from talkctl.rundir import RunDir

    runs = []
    for i, video in enumerate(_videos(tmp_path, 2)):
        run = RunDir(tmp_path / f"s{i}", create=True)
        run.set_video(video)
        runs.append(run.path)
    eng = LocalEngine(workers=1)
    eng.start()
    try:
        eng.submit(StageTask("s0", "fake-a", str(runs[0]), config={"fake-a": {"sleep": 30.0}}))
        eng.submit(StageTask("s1", "fake-a", str(runs[1])))
        assert eng.poll(0) == [] and eng.pending() == 2  # s0 on the only worker, s1 queued
        t = time.time()
        while not (runs[0] / "fake-a.pid").exists() or not (runs[0] / "fake-a.pid").read_text():
            assert time.time() - t < 60, "fake-a never started"
            time.sleep(0.05)
        pid = int((runs[0] / "fake-a.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            pass
        eng._dispatch()  # what poll() does first: s1 is queued, the only worker is dead
        outcomes, t = [], time.time()
        while eng.pending() and time.time() - t < 60:
            outcomes += eng.poll(0.25)
        got = {o.task.subject: o.result for o in outcomes}
        assert set(got) == {"s0", "s1"}, got
        assert got["s0"]["died"] and "killed by signal 9" in got["s0"]["error"]
        assert got["s1"]["ok"]
    finally:
        eng.shutdown()


def _wait_until(cond, seconds: float, what: str) -> None:
    """Poll cond() until true; fail naming `what` after `seconds` (generous: the suite shares loaded cores)."""
    t = time.time()
    while not cond():
        if time.time() - t > seconds:
            raise AssertionError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.05)


def test_interrupted_batch_resumes_where_it_stopped(tmp_path, fakes, capsys):
    v = _videos(tmp_path, 3)
    # s2's fake-a sleeps far longer than the test can take: it is mid-stage whenever the kill comes,
    # however slowly s1 gets through under load (no race between s1 finishing and s2 finishing)
    m = _manifest(tmp_path, _subjects(v, {"s2": ["[subject.config.fake-a]", "sleep = 3600.0"]}))
    root = tmp_path / "root"
    proc = _start_fake_batch(m, root)
    try:
        _wait_for(root / "s2" / "fake-a.pid", proc)
        # a second batch on the same root, from another process, is refused while this one runs
        assert main(["batch", str(m), "--root", str(root)]) == 6
        assert f"batch root {root} is in use by `talkctl batch {m}` (pid {proc.pid})" in capsys.readouterr().err
        _wait_until(lambda: all(_record(root)["subjects"][s]["status"] == "done" for s in ("s0", "s1")), 240,
                    "s0 and s1 finishing")
        assert proc.poll() is None, proc.log_path.read_text()
        os.killpg(proc.pid, signal.SIGKILL)  # the machine goes down: driver and workers at once
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    worker = int((root / "s2" / "fake-a.pid").read_text())
    _wait_until(lambda: not _alive(worker), 20, f"s2's worker (pid {worker}) dying with its parent (PDEATHSIG)")
    assert (root / "s2" / "a.h5.partial").exists() and not (root / "s2" / "a.h5").exists()
    st = subprocess.run([sys.executable, "-m", "talkctl", "batch", "status", str(root), "--json"], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    status = json.loads(st.stdout)
    assert status["state"] == "interrupted"
    assert {s["name"]: s["status"] for s in status["subjects"]}["s2"] == "interrupted"
    # the rerun (s2 without the long sleep) does only the missing work
    m = _manifest(tmp_path, _subjects(v), "m.toml")
    proc = _start_fake_batch(m, root)
    err = _finish(proc)
    assert proc.returncode == 0, err
    assert batch_fakes.calls(root / "s0") == ["fake-a", "fake-b"]
    assert batch_fakes.calls(root / "s1") == ["fake-a", "fake-b"]
    assert batch_fakes.calls(root / "s2") == ["fake-a", "fake-a", "fake-b"]
    assert not list(root.rglob("*.partial"))
    assert _record(root)["state"] == "done"


def test_gpu_stages_go_to_one_pinned_worker_per_gpu(tmp_path, monkeypatch):
    """--gpus 2 on this CPU machine: GPU-class stages run on the two GPU workers (device cuda,
    CUDA_VISIBLE_DEVICES 0 or 1), CPU-class stages on the CPU pool with CUDA hidden."""
    from talkctl.batch import make_engine, prepare, run_batch, tasks

    for obj, attr, value in batch_fakes.patches():
        monkeypatch.setattr(obj, attr, value)
    monkeypatch.setitem(sys.modules, "batch_fake_a", batch_fakes._module(batch_fakes.run_a))
    monkeypatch.setitem(sys.modules, "batch_fake_b", batch_fakes._module(batch_fakes.run_b))
    monkeypatch.setattr(tasks, "GPU_STAGES", frozenset({"fake-b"}))
    v = _videos(tmp_path, 3)
    manifest, names = prepare(_manifest(tmp_path, _subjects(v)))
    engine = make_engine("local", workers=1, gpus=2)
    assert "2 GPU worker(s)" in engine.describe()
    rec = run_batch(manifest, tmp_path / "root", engine, names, setup=batch_fakes.install_fake_gpus)
    assert rec["state"] == "done"
    lines = [ln.split() for n in ("s0", "s1", "s2") for ln in (tmp_path / "root" / n / "calls.txt").read_text().splitlines()]
    cpu = {ln[1] for ln in lines if ln[0] == "fake-a"}
    gpu = [(ln[1], ln[2], ln[3]) for ln in lines if ln[0] == "fake-b"]
    assert len(cpu) == 1  # one CPU worker did every fake-a
    assert {(dev, vis) for dev, vis, _ in gpu} <= {("cuda", "[0]"), ("cuda", "[1]")} and len(gpu) == 3
    assert not cpu & {pid for _, _, pid in gpu}
    assert {s["stages"]["fake-b"]["device"] for s in rec["subjects"].values()} == {"cuda"}
    assert {s["stages"]["fake-a"]["device"] for s in rec["subjects"].values()} == {"cpu"}


# ---- real stages on tiny generated clips ---------------------------------------------

CPU_STAGES = ("extract-audio", "track", "parse")


def built_cpu_prefix() -> str:
    """The last of the CPU stages (all built)."""
    return CPU_STAGES[-1]


@pytest.fixture(scope="session")
def tiny_clips(tmp_path_factory):
    """Two generated talking subjects (1.5 s, 128x128) and a manifest naming them."""
    from talkctl.synthetic import make_subject

    d = tmp_path_factory.mktemp("batch_clips")
    for i, name in enumerate(("ann", "bob")):
        make_subject(d, seconds=1.5, size=128, seed=10 + i, out_name=name)
    m = d / "subjects.csv"
    m.write_text("name,video\nann,ann.mp4\nbob,bob.mp4\n")
    return m


def test_real_stages_on_the_local_engine(tmp_path, tiny_clips, capsys):
    last = built_cpu_prefix()
    root = tmp_path / "root"
    assert main(["batch", str(tiny_clips), "--root", str(root), "--preset", "tiny", "--to", last, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["chain"][-1] == last and rec["state"] == "done"
    for name in ("ann", "bob"):
        assert rec["subjects"][name]["stages"]["extract-audio"]["status"] == "done"
        with h5py.File(root / name / "audio.h5") as f:
            assert f.attrs["n_frames"] == 38 and f["features"].shape[0] == 38
    assert main(["batch", "status", str(root), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    for s in st["subjects"]:
        assert all(r["state"] == "done" for r in s["stages"] if r["stage"] in rec["chain"])


def test_ctrl_c_stops_the_batch_cleanly(tmp_path):
    with _batch_with_slow_s1(tmp_path, 2, 20.0) as (root, proc, pid):
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        err = _finish(proc, 30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert not _alive(pid)
    assert not list(root.rglob("*.partial"))
    rec = _record(root)
    assert rec["state"] == "interrupted" and rec["subjects"]["s1"]["status"] == "interrupted"


def test_engine_ray_without_ray_installed_says_how_to_get_it(tmp_path, fakes, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    v = _videos(tmp_path, 1)
    rc = main(["batch", str(_manifest(tmp_path, _subjects(v))), "--root", str(tmp_path / "root"), "--engine", "ray"])
    assert rc == 3 and "pip install 'talkctl[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()
    rc = main(["batch", str(_manifest(tmp_path, _subjects(v))), "--root", str(tmp_path / "root"), "--engine", "spark"])
    assert rc == 2 and "unknown engine 'spark'" in capsys.readouterr().err


def test_audios_are_rendered_after_the_chain_and_rerendered_only_when_needed(tmp_path, fakes, capsys):
    v = _videos(tmp_path, 2)
    (tmp_path / "hello.wav").write_bytes(b"x" * 77)
    (tmp_path / "bye.wav").write_bytes(b"y" * 55)
    m = _manifest(tmp_path, _subjects(v, {"s0": ['audios = ["hello.wav", "bye.wav"]', 'rasterizer = "torch"']}))
    root = tmp_path / "root"
    assert main(["batch", str(m), "--root", str(root), "-q"]) == 0
    sub = _record(root)["subjects"]["s0"]
    assert set(sub["stages"]) == {"fake-a", "fake-b", "render:hello", "render:bye"}
    assert (root / "s0" / "renders" / "hello.mp4").read_text() == f"77 {v[0].stat().st_size + 1.0} torch"
    assert (root / "s0" / "renders" / "bye.mp4").exists() and not (root / "s1" / "renders").exists()
    assert main(["batch", str(m), "--root", str(root), "-q"]) == 0
    assert fakes.calls(root / "s0").count("render") == 2  # up to date: not rendered again
    (tmp_path / "bye.wav").write_bytes(b"z" * 56)  # new audio -> that one again
    assert main(["batch", str(m), "--root", str(root), "-q"]) == 0
    assert fakes.calls(root / "s0").count("render") == 3
    # --to before the models: a note, no render; a bad render setting is caught up front
    assert main(["batch", str(m), "--root", str(root), "--to", "fake-a"]) == 0
    assert "not rendered: the chain stops at fake-a" in capsys.readouterr().err
    bad = _manifest(tmp_path, _subjects(v, {"s0": ['audios = ["hello.wav"]', "[subject.config.render]", "fps = 3"]}), "bad.toml")
    assert main(["batch", str(bad), "--root", str(root)]) == 2
    assert "unknown render setting 'fps'" in capsys.readouterr().err
