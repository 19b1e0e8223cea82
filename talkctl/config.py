"""Stage configuration: defaults < preset < TOML file < command-line values.

Each stage module declares `DEFAULTS` (every key it reads, with its default), `RANGES` (the
valid range of every numeric setting, beside its default), `PRESETS` (partial overrides for
"tiny", "fast", "paper") and `NON_SEMANTIC` (keys that do not change the result, e.g. worker
counts or previews: left out of the fingerprint). `resolve` is the one place settings are
checked: an unknown key, a wrong type or a value outside its range is a usage error (exit 2).

TOML file layout:
    preset = "fast"          # optional, used when --preset is not given
    [track]
    size = 256
    [train-deform]
    iterations = 3000
"""
from __future__ import annotations

import ast
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from talkctl.errors import UsageError

PRESET_NAMES = ("tiny", "fast", "paper")
DEFAULT_PRESET = "fast"


@dataclass(frozen=True)
class Range:
    """Valid values of a numeric setting: lo <= v <= hi (None = unbounded); lo_open: lo < v."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"<= {self.hi:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


POSITIVE = Range(0, lo_open=True)      # a learning rate, a scale
NON_NEGATIVE = Range(0)                # a loss weight (0 = off), a step number (0 = never)
AT_LEAST_1 = Range(1)                  # a count
FRACTION = Range(0, 1)                 # a share of something


def load_toml(path: Path | None) -> dict:
    if path is None:
        return {}
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"config file {path} does not exist; check --config")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None


def parse_set(items: list[str] | None) -> dict:
    """`--set key=value` pairs; values are Python/TOML-ish literals (numbers, true/false, lists)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set {item!r} is not key=value; e.g. --set iterations=2000")
        key, raw = item.split("=", 1)
        low = raw.strip().lower()
        if low in ("true", "false"):
            value = low == "true"
        else:
            try:
                value = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                value = raw.strip()
        out[key.strip()] = value
    return out


def check_tables(toml: dict, stages) -> None:
    """A config file's tables must name stages (a misspelt table would be ignored silently)."""
    unknown = [k for k, v in toml.items() if isinstance(v, dict) and k not in stages]
    if unknown:
        raise UsageError(f"unknown table [{unknown[0]}] in the config file; stage tables are: "
                         f"{', '.join(f'[{s}]' for s in stages)}")


def resolve(stage: str, defaults: dict, presets: dict, preset: str | None, toml: dict, overrides: dict,
            ranges: dict[str, Range] | None = None) -> dict:
    """Merge the layers and check every key and type against the defaults, and every numeric
    value against its range."""
    preset = preset or toml.get("preset") or DEFAULT_PRESET
    if preset not in PRESET_NAMES:
        raise UsageError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    cfg = dict(defaults)
    for layer_name, layer in (
        (f"preset {preset}", presets.get(preset, {})),
        ("config file", toml.get(stage, {})),
        ("command line", {k: v for k, v in overrides.items() if v is not None}),
    ):
        if not isinstance(layer, dict):
            raise UsageError(f"[{stage}] in the config file must be a table of key = value")
        for key, value in layer.items():
            if key not in defaults:
                raise UsageError(
                    f"unknown {stage} setting {key!r} ({layer_name}); known: {', '.join(sorted(defaults))}"
                )
            cfg[key] = _coerce(stage, key, value, defaults[key])
    for key, valid in (ranges or {}).items():
        value = cfg.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in valid:
            raise UsageError(f"{stage} setting {key}={value!r} is out of range: it must be {valid}")
    cfg["preset"] = preset
    return cfg


def _coerce(stage: str, key: str, value, default):
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, str) and isinstance(value, str):
        return value
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    raise UsageError(f"{stage} setting {key} must be {type(default).__name__}, got {value!r}")


def semantic(cfg: dict, non_semantic: set[str] | frozenset[str]) -> dict:
    return {k: v for k, v in cfg.items() if k not in non_semantic and k != "preset"}
