"""Impossible settings (issue 19): every numeric setting has a declared range, checked where
config is resolved; out of range, or a misspelt config-file table, is exit 2 before anything
in the run directory is touched."""
import os
import subprocess
import sys

import pytest

from talkctl import config as configmod
from talkctl.cli import main
from talkctl.config import PRESET_NAMES, Range
from talkctl.pipeline import STAGES, load_stage_module
from repo import REPO


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.mark.parametrize("spec", STAGES, ids=lambda s: s.name)
def test_every_numeric_setting_has_a_range_its_defaults_satisfy(spec):
    mod = load_stage_module(spec)
    ranges = getattr(mod, "RANGES", {})
    missing = [k for k, v in mod.DEFAULTS.items() if _numeric(v) and k not in ranges]
    assert not missing, f"{spec.name}: numeric settings without a range: {missing}"
    assert set(ranges) <= set(mod.DEFAULTS)
    for preset in PRESET_NAMES:  # resolve checks the preset layer too
        cfg = configmod.resolve(spec.name, mod.DEFAULTS, mod.PRESETS, preset, {}, {}, ranges)
        assert all(cfg[k] in r for k, r in ranges.items() if _numeric(cfg[k]))


def test_range_bounds_and_wording():
    assert 1 in Range(1) and 0 not in Range(1)
    assert 0 not in Range(0, lo_open=True) and 1e-9 in Range(0, lo_open=True)
    assert float("nan") not in Range(0) and float("inf") not in Range(0)
    assert str(Range(1)) == ">= 1" and str(Range(0, lo_open=True)) == "> 0" and str(Range(0, 1)) == "in [0, 1]"


@pytest.mark.parametrize("verb,setting,bound", [
    ("train-deform", "iterations=-5", ">= 1"), ("train-deform", "iterations=0", ">= 1"),
    ("train-deform", "lr_mlp=-1", "> 0"), ("init-static", "resolution=0", "in [16, 4096]"),
    ("train-deform", "batch=0", "in [1, 64]"), ("train-torso", "batch=-1", "in [1, 64]"),
    ("init-static", "head_gaussians=0", ">= 1"), ("train-a2l", "dropout=1.5", "in [0, 0.95]"),
])
def test_out_of_range_setting_is_exit_2_naming_key_value_and_range(tmp_path, capsys, verb, setting, bound):
    run = tmp_path / "run"
    assert main([verb, "--run", str(run), "--set", setting, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    key, value = setting.split("=")
    assert len(err.splitlines()) == 1 and f"{key}={value}" in err and bound in err, err
    assert not run.exists() or not any(run.iterdir())  # refused before anything is made


def test_config_file_values_and_tables_are_checked(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train-deform]\niterations = -5\n")
    assert main(["train-deform", "--run", str(tmp_path / "r"), "--config", str(cfg), "-q"]) == 2
    assert "iterations=-5" in capsys.readouterr().err
    cfg.write_text("[train-deformm]\niterations = 3000\n")
    assert main(["run", str(tmp_path / "r"), "--config", str(cfg), "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown table [train-deformm]" in err and "[train-deform]" in err and "[track]" in err


def test_real_entry_point_refuses_negative_iterations(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "talkctl", "train-deform", "--run", str(tmp_path / "r"),
                           "--set", "iterations=-5"], capture_output=True, text=True,
                          cwd=REPO,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: train-deform setting iterations=-5 is out of range: it must be >= 1")
