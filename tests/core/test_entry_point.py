"""The `talkctl` command as a script calls it: a subprocess of `python -m talkctl`, its stdout,
stderr and exit code (what the first hour of a new user runs into, issue 16)."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from talkctl import artifacts
from talkctl.rundir import RunDir
from repo import REPO



def talkctl(*args, env=None, check_rc=None) -> subprocess.CompletedProcess:
    """`python -m talkctl ARGS` from the repository root, stdout and stderr apart (neither a terminal)."""
    e = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    e = {k: v for k, v in e.items() if v is not None}
    proc = subprocess.run([sys.executable, "-m", "talkctl", *map(str, args)], capture_output=True, text=True,
                          env=e, cwd=REPO, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def _run_with_audio(path: Path) -> RunDir:
    run = RunDir(path)
    with artifacts.write(run, "audio", producer="test", fingerprint="f", config={}, inputs={},
                         backend={"audio-features": "mel-formant"}) as f:
        f["features"] = [[0.0]]
    return run


def test_version_flag():
    proc = talkctl("--version", check_rc=0)
    from talkctl import __version__

    assert proc.stdout == f"talkctl {__version__}\n" and proc.stderr == ""


def test_thread_policy_is_set_before_torch_unless_the_user_set_it():
    # nothing the entry point imports before main() runs loads torch (OpenMP reads the variable once)
    probe = subprocess.run([sys.executable, "-c", "import sys, talkctl.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert probe.stdout.strip() == "False", probe.stderr
    for given, seen in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        rows = json.loads(talkctl("doctor", "--json", env={"OMP_WAIT_POLICY": given}, check_rc=0).stdout)
        torch_row = next(r for r in rows if r["name"] == "torch")
        assert f"OMP_WAIT_POLICY={seen}" in torch_row["detail"]


def test_status_into_a_file_is_the_whole_table(tmp_path):
    run = _run_with_audio(tmp_path / ("a-long-run-directory-name-" * 4 + "end"))
    proc = talkctl("status", run.path, check_rc=0)
    out = proc.stdout
    assert str(run.path) in out  # the title: longer than 80 columns, not cut
    created = artifacts.read_attrs(run, "audio")["created"]
    assert "audio.h5" in out and created in out and "…" not in out
    assert {"extract-audio", "track", "train-torso"} <= set(out.split())
    assert proc.stderr == ""
    # --json: objects, not JSON inside strings
    data = json.loads(talkctl("status", run.path, "--json", check_rc=0).stdout)
    row = next(r for r in data["stages"] if r["artifact"] == "audio.h5")
    assert row["backend"] == {"audio-features": "mel-formant"}


def test_json_errors_are_json_on_stdout_too(tmp_path):
    proc = talkctl("status", tmp_path / "nope", "--json", check_rc=2)
    assert json.loads(proc.stdout) == {"error": proc.stderr.strip().removeprefix("error: "), "exit_code": 2}
    assert len(proc.stderr.strip().splitlines()) == 1 and "does not exist" in proc.stderr
    # a bad option, caught before the verb has parsed --json
    proc = talkctl("render", "--run", tmp_path, "--no-such-option", "x", "--json", check_rc=2)
    assert json.loads(proc.stdout)["exit_code"] == 2 and "--no-such-option" in json.loads(proc.stdout)["error"]
    # without --json stdout stays empty
    assert talkctl("status", tmp_path / "nope", check_rc=2).stdout == ""


def test_status_of_a_file_names_the_argument_not_an_option(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    err = talkctl("status", f, check_rc=2).stderr
    assert "not a run directory" in err and "--run" not in err


def _hf_cache_with(home: Path, repo: str) -> None:
    """The Hugging Face cache layout of a model's config files (what the doctor's check reads)."""
    snap = home / "hub" / f"models--{repo.replace('/', '--')}"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json"):
        (snap / "snapshots" / "abc123" / name).write_text("{}")


def test_doctor_table_keeps_every_hint_and_usable_means_weights_are_here(tmp_path):
    pytest.importorskip("transformers")
    empty = {"HF_HOME": str(tmp_path / "empty_hf")}
    rows = json.loads(talkctl("doctor", "--json", env=empty, check_rc=0).stdout)
    table = talkctl("doctor", env=empty, check_rc=0).stdout
    for r in rows:  # the table says what --json says, [extras] included (rich markup would eat them)
        assert r["detail"] in table, r
    hub = {r["name"]: r for r in rows if r["kind"] == "audio-features"}
    assert not hub["hubert"]["usable"] and "not in the Hugging Face cache" in hub["hubert"]["detail"]
    assert not hub["wav2vec2"]["usable"]
    from talkctl.audio.neural import DEFAULT_MODELS

    _hf_cache_with(tmp_path / "hf", DEFAULT_MODELS["hubert"])
    rows = json.loads(talkctl("doctor", "--json", env={"HF_HOME": str(tmp_path / "hf")}, check_rc=0).stdout)
    hub = {r["name"]: r for r in rows if r["kind"] == "audio-features"}
    assert hub["hubert"]["usable"] and not hub["wav2vec2"]["usable"]


def test_render_before_training_names_every_missing_stage_and_one_command(tmp_path):
    run = tmp_path / "my run $HOME"
    run.mkdir()
    proc = talkctl("render", "--run", run, "--preset", "tiny", check_rc=4)
    err = " ".join(proc.stderr.split())  # one line on a terminal; unwrapped here
    assert len(proc.stderr.strip().splitlines()) == 1
    for stage in ("extract-audio", "track", "parse", "init-static", "train-deform", "train-torso"):
        assert stage + " (" in err, stage
    cmd = err.split("build them with `")[1].split("`")[0]
    assert shlex.split(cmd) == ["talkctl", "run", str(run), "--video", "VIDEO", "--to", "train-torso",
                                "--preset", "tiny"]
    assert not (run / "logs").exists() or not any((run / "logs").iterdir())


def test_usage_errors_leave_no_run_directory(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not checked before the settings")
    for args in (("track", clip, "--run", tmp_path / "r1", "--preset", "huge"),
                 ("extract-audio", clip, "--set", "no_such_key=1"),
                 ("run", tmp_path / "r2", "--video", clip, "--preset", "huge")):
        proc = talkctl(*args)
        assert proc.returncode == 2, (args, proc.stderr)
    # a verb that reads a run, on a directory that is not there: exit 4 with the build command, nothing made
    err = " ".join(talkctl("parse", "--run", tmp_path / "r3", check_rc=4).stderr.split())
    assert f"`talkctl run {tmp_path / 'r3'} --video VIDEO --to track`" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_help_texts():
    render = " ".join(talkctl("render", "--help", check_rc=0).stdout.split())
    assert "must exist" in render and "made if missing" not in render
    demo = " ".join(talkctl("demo", "--help", check_rc=0).stdout.split())
    assert "[default: tiny]" in demo and "default: fast" not in demo


def test_native_start_up_chatter_is_kept_off_stderr():
    """mediapipe's TFLite/absl warnings (the synthetic subject's face mesh); shown with -v only."""
    code = ("import sys; from talkctl import native_log; native_log.show(sys.argv[1] == 'v'); "
            "from talkctl.synthetic.face import _photo; _photo()")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    quiet = subprocess.run([sys.executable, "-c", code, "q"], capture_output=True, text=True, cwd=REPO, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code, "v"], capture_output=True, text=True, cwd=REPO, env=env)
    assert loud.returncode == 0 and "TensorFlow Lite" in loud.stderr  # what is hidden is real


def test_a_test_run_leaves_no_cache_folders(tmp_path):
    """conftest.py's hermetic weight caches are removed when pytest ends."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/core/test_cli.py::test_config_layers_and_validation"],
                          capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert list(tmp_path.glob("talkctl-test-caches-*")) == []
