"""The CLI shell: exit codes, one-line errors on stderr, JSON on stdout, config layering."""
import json
import os
import subprocess
import sys

import pytest

from talkctl import config as configmod
from talkctl.cli import main
from talkctl.errors import UsageError
from repo import REPO


def test_help_lists_every_stage_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("extract-audio", "track", "parse", "init-static", "train-deform", "train-torso", "render", "eval",
                 "run", "status", "doctor"):
        assert verb in out


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["status", "--no-such-flag"]) == 2


def test_status_json_on_stdout_only(fake_pipeline, tmp_path, capsys):
    video = tmp_path / "v.bin"
    video.write_bytes(b"abc")
    assert main(["run", str(tmp_path / "r"), "--video", str(video), "--json", "-q"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in summaries] == ["done", "done"]
    assert main(["run", str(tmp_path / "r"), "--json"]) == 0
    assert [s["status"] for s in json.loads(capsys.readouterr().out)] == ["up to date", "up to date"]
    assert main(["status", str(tmp_path / "r"), "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert {s["artifact"]: s["state"] for s in data["stages"]} == {"a.h5": "done", "b.h5": "done"}
    assert data["video"].endswith("v.bin")


def test_missing_artifact_error_is_one_line_with_exit_4(fake_pipeline, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    rc = main(["run", str(tmp_path / "r"), "--from", "fake-b"])
    err = capsys.readouterr().err.strip()
    assert rc == 4
    assert len(err.splitlines()) == 1 and "fake-a (a.h5 missing)" in err and "--to fake-a" in err


def test_interrupt_exits_130_and_leaves_nothing(fake_pipeline, tmp_path, capsys):
    video = tmp_path / "v.bin"
    video.write_bytes(b"abc")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[fake-a]\nfail = "interrupt"\n')
    rc = main(["run", str(tmp_path / "r"), "--video", str(video), "--config", str(cfg)])
    assert rc == 130
    assert "rerun" in capsys.readouterr().err
    assert not any(p.suffix in (".h5", ".partial") for p in (tmp_path / "r").iterdir())


def test_internal_error_is_one_line_and_debug_shows_traceback(fake_pipeline, tmp_path, capsys):
    video = tmp_path / "v.bin"
    video.write_bytes(b"abc")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[fake-a]\nfail = "error"\n')
    assert main(["run", str(tmp_path / "r"), "--video", str(video), "--config", str(cfg)]) == 1
    assert "internal error: RuntimeError: boom" in capsys.readouterr().err
    with pytest.raises(RuntimeError):
        main(["run", str(tmp_path / "r"), "--video", str(video), "--config", str(cfg), "--debug"])


def test_config_layers_and_validation(tmp_path):
    defaults = {"size": 512, "lr": 0.01, "name": "x", "flag": False}
    presets = {"tiny": {"size": 64}}
    cfg = configmod.resolve("track", defaults, presets, "tiny", {"track": {"lr": 1}}, {"flag": True})
    assert cfg == {"size": 64, "lr": 1.0, "name": "x", "flag": True, "preset": "tiny"}
    with pytest.raises(UsageError, match="unknown track setting 'sise'"):
        configmod.resolve("track", defaults, presets, None, {}, {"sise": 3})
    with pytest.raises(UsageError, match="must be int"):
        configmod.resolve("track", defaults, presets, None, {}, {"size": "big"})
    with pytest.raises(UsageError, match="unknown preset"):
        configmod.resolve("track", defaults, presets, "huge", {}, {})
    assert configmod.parse_set(["a=3", "b=true", "c=[1, 2]", "d=hello"]) == {"a": 3, "b": True, "c": [1, 2], "d": "hello"}
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(UsageError, match="not valid TOML"):
        configmod.load_toml(bad)


def test_doctor_json_lists_ffmpeg_and_devices(capsys):
    assert main(["doctor", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {(r["kind"], r["name"]): r for r in rows}
    assert names[("tool", "ffmpeg")]["usable"]
    assert ("device", "cuda") in names


def test_real_entry_point_in_a_subprocess(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "talkctl", "status", str(tmp_path / "nope"), "--json"],
                          capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["exit_code"] == 2  # --json: the error as JSON on stdout too
    assert proc.stderr.strip().startswith("error:") and "does not exist" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_summaries_print_rounded_figures(fake_pipeline, tmp_path, capsys):
    from talkctl.cli import _fmt

    assert _fmt(37.69579340362092) == "37.7" and _fmt(0.912345) == "0.9123" and _fmt(123456.7) == "123457"
    assert _fmt(5) == "5" and _fmt("x") == "x" and _fmt(False) == "False"
    video = tmp_path / "v.bin"
    video.write_bytes(b"abc")
    assert main(["run", str(tmp_path / "r"), "--video", str(video), "--to", "fake-a"]) == 0
    err = capsys.readouterr().err
    assert "value: 3" in err  # the fake stage's figure, as people read it
