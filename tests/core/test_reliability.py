"""Issue 19 through the real entry point: a refused writer writes nothing (two processes), suggested
commands are shell-quoted, SIGTERM cleans up like Ctrl-C, a damaged checkpoint is discarded on
--resume, short clips and silent driving audio are warned about."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import damage
import track_fixtures as fx
import trained_run
from talkctl.cli import main
from talkctl.rundir import RunDir
from repo import REPO as REPO_PATH

REPO = str(REPO_PATH)
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": REPO}
TINY = ["--preset", "tiny", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_run.build(tmp_path_factory.mktemp("trained"))


def _spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "talkctl", *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, timeout: float = 120.0, what: str = "") -> None:
    t0 = time.time()
    while not cond():
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the processes whose parent is pid."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append((int(stat.parent.name), (stat.parent / "comm").read_text().strip()))
        except (OSError, IndexError, ValueError):
            continue
    return out


# ---- a refused writer writes nothing --------------------------------------------------------------
def test_refused_writer_touches_nothing(tmp_path, capsys):
    """While another process holds the run (e.g. `talkctl run RUN --video A` training), a
    second writer with another video exits 6 and leaves run.json, logs and history alone."""
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"video a")
    b.write_bytes(b"video b")
    run = RunDir(tmp_path / "run")
    run.set_video(a)
    before = run.manifest_path.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from talkctl.rundir import RunDir\n"
        f"with RunDir({str(run.path)!r}).lock('talkctl run'):\n"
        "    print('held', flush=True); time.sleep(60)")], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["run", str(run.path), "--video", str(b), "-q"],
                     ["track", str(b), "--run", str(run.path), "-q"],
                     ["extract-audio", str(b), "--run", str(run.path), "-q"]):
            assert main(argv) == 6, argv
            assert "in use by `talkctl run`" in capsys.readouterr().err
        assert run.manifest_path.read_bytes() == before
        assert sorted(p.name for p in run.path.iterdir()) == [".lock", "run.json"]  # no logs/, no history
    finally:
        holder.kill()
        holder.wait()


# ---- shell-quoted suggestions ---------------------------------------------------------------------------
def test_suggested_commands_are_shell_quoted(tmp_path, capsys):
    weird = tmp_path / "inj" / "$(touch pwned) run"
    assert main(["train-deform", "--run", str(weird), "-q"]) == 4
    err = capsys.readouterr().err
    suggested = err.split("`")[1]
    words = shlex.split(suggested)
    assert words[0] == "talkctl" and str(weird) in words  # the path is one word, not code
    subprocess.run(["sh", "-c", "echo " + suggested.split(" ", 1)[1]], cwd=tmp_path, capture_output=True)
    assert not (tmp_path / "pwned").exists()


# ---- SIGTERM ----------------------------------------------------------------------------------------------
def test_sigterm_during_render_removes_the_partial_and_ends_ffmpeg(trained, tmp_path):
    run = RunDir(damage.copy_run(trained[0], tmp_path / "run"), create=False)
    voice = trained_run.write_wav(tmp_path / "long.wav", trained_run.voice(120.0), 16000)
    out = tmp_path / "out.mp4"
    proc = _spawn("render", "--run", run.path, "--audio", voice, "-o", out, "--device", "cpu", "-q")
    partial = tmp_path / "out.partial.mp4"
    _wait_for(lambda: partial.exists() and partial.stat().st_size > 0 or proc.poll() is not None, what="encoding")
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    ffmpeg = [pid for pid, name in _children(proc.pid) if "ffmpeg" in name]
    assert ffmpeg
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "terminated" in err and "Traceback" not in err
    assert not partial.exists() and not out.exists()
    _wait_for(lambda: not Path(f"/proc/{ffmpeg[0]}").exists() or "ffmpeg" not in Path(f"/proc/{ffmpeg[0]}/comm").read_text(),
              timeout=10, what="ffmpeg to end")


def test_sigterm_during_training_cleans_up_and_resumes(trained, tmp_path):
    run = RunDir(damage.copy_run(trained[0], tmp_path / "run"), create=False)
    args = ["train-deform", "--run", run.path, *TINY, "-q", "--set", "resolution=48", "--set", "iterations=100000",
            "--set", "checkpoint_every=5", "--force"]
    proc = _spawn(*args)
    ckpt = run.path / "checkpoints" / "train-deform.h5"
    _wait_for(lambda: ckpt.exists() or proc.poll() is not None, what="a checkpoint")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert not list(run.path.rglob("*.partial")) and not (run.path / "deform.h5.partial").exists()
    with run.lock("test: released?"):
        pass
    assert ckpt.exists()  # what was trained so far is kept for --resume


# ---- a damaged checkpoint ----------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["data", "structure"])
def test_damaged_checkpoint_is_discarded_on_resume(trained, tmp_path, capsys, where):
    run = RunDir(damage.copy_run(trained[0], tmp_path / "run"), create=False)
    cfg = ["--set", "resolution=48", "--set", "iterations=20", "--set", "val_every=10", "--set", "checkpoint_every=5"]
    assert main(["train-deform", "--run", str(run.path), *TINY, "-q", *cfg, "--set", "stop_after=10", "--force"]) == 5
    ckpt = run.path / "checkpoints" / "train-deform.h5"
    if where == "data":
        damage.corrupt_dataset(ckpt)
    else:  # the superblock and root group's B-tree: h5py cannot even open it
        damage.scribble(ckpt, 0, 2048)
    capsys.readouterr()
    assert main(["train-deform", "--run", str(run.path), *TINY, *cfg, "--resume", "--json"]) == 0
    cap = capsys.readouterr()
    assert "damaged" in cap.err and "starting afresh" in cap.err, cap.err
    assert json.loads(cap.out)["status"] == "done"


# ---- short clips, silent audio ------------------------------------------------------------------------------
def test_short_clip_warned_and_too_short_refused(tmp_path, synthetic_subject, capsys):
    rc = main(["track", str(synthetic_subject.video_path), "--run", str(tmp_path / "r"), "--size", "64", *TINY])
    assert rc == 0
    assert "only 4.0 s long" in capsys.readouterr().err
    clip = fx.lavfi_clip(tmp_path / "half.mp4", seconds=0.5)
    assert main(["track", str(clip), "--run", str(tmp_path / "r2"), *TINY, "-q", "--set", "min_seconds=0.1"]) == 2
    err = capsys.readouterr().err
    assert "half.mp4 is 0.5" in err and "needs at least 0.92 s" in err and "held out" in err


def test_silent_driving_audio_is_warned(trained, tmp_path, capsys):
    run = trained[0]
    wav = trained_run.write_wav(tmp_path / "silence.wav", np.zeros(16000), 16000)
    capsys.readouterr()
    assert main(["render", "--run", str(run.path), "--audio", str(wav), "-o", str(tmp_path / "s.mp4"),
                 "--size", "24", "--device", "cpu", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["audio_silent"] is True
    assert "is silent" in cap.err and "mouth will not move" in cap.err


def test_sigterm_swallowed_by_a_finalizer_is_raised_at_the_next_progress_step():
    """SIGTERM's handler raises Terminated wherever the main thread is; inside a finalizer Python
    only prints it and goes on. The next progress step raises it again, so the loop still unwinds."""
    import gc

    from talkctl.errors import Terminated, sigterm_unwinds
    from talkctl.progress import NullTask

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the finalizer

    task = NullTask()
    with sigterm_unwinds() as received:
        Finalized()
        gc.collect()
        assert received  # it came, and was swallowed: nothing raised so far
        with pytest.raises(Terminated):
            task.advance()
        task.advance()  # once: the unwinding itself is not interrupted again
    task.advance()


def test_ctrl_c_swallowed_by_a_finalizer_is_raised_again_as_ctrl_c():
    import gc

    from talkctl.errors import Terminated, sigterm_unwinds
    from talkctl.progress import NullTask

    class Finalized:
        def __del__(self):
            raise KeyboardInterrupt  # as the default SIGINT handler would, inside the finalizer

    with sigterm_unwinds() as received:
        Finalized()
        gc.collect()
        with pytest.raises(KeyboardInterrupt) as caught:
            NullTask().advance()
        assert not received and not isinstance(caught.value, Terminated)


def test_sigterm_turned_into_a_systemerror_by_a_native_call_still_ends_as_terminated(monkeypatch, capsys):
    """A SIGTERM whose handler raises while a numba kernel runs comes back as "SystemError: ...
    returned a result with an exception set", chained to Terminated: exit 143 and the interrupt's
    line, not "internal error" (seen once in test_sigterm_during_render)."""
    from talkctl import cli
    from talkctl.errors import Terminated

    def app(**_):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises Terminated here
        except Terminated as exc:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc

    monkeypatch.setattr(cli, "app", app)
    assert main(["render"]) == 143
    err = capsys.readouterr().err
    assert "terminated" in err and "internal error" not in err

    def ctrl_c(**_):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise SystemError("returned a result with an exception set") from exc

    monkeypatch.setattr(cli, "app", ctrl_c)
    assert main(["render"]) == 130
    assert "interrupted" in capsys.readouterr().err
