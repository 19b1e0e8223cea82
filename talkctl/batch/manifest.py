"""The batch manifest: one row per subject, read from TOML or CSV and checked before any work.

TOML:
    preset = "tiny"                  # optional default for every subject
    [defaults.track]                 # optional stage settings for every subject
    size = 256

    [[subject]]
    name = "french"                  # run directory ROOT/french
    video = "clips/french.mp4"       # relative paths are relative to the manifest
    audios = ["speech.wav"]          # optional: new audio to render after training
    preset = "fast"                  # optional per-subject preset
    size = 512                       # shorthands (see SHORTHANDS): size, landmarks, parsing,
    rasterizer = "torch"             #   extractor, rasterizer, hashgrid
    [subject.config.train-deform]    # any stage setting, as in a --config file
    iterations = 500

CSV: a header row; columns name, video, audios (';'-separated), preset, the shorthands, and
`stage.key` columns (e.g. `train-deform.iterations`) for any other stage setting. Empty
cells mean "not set".

Every problem (missing file, duplicate name, unknown key, bad value, unknown stage setting)
becomes one line in `ManifestError.problems`, so a user fixes them all in one go.
"""
from __future__ import annotations

import ast
import csv
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from talkctl.config import PRESET_NAMES
from talkctl.errors import UsageError

# Per-subject shorthands -> the stages whose setting of the same name they set.
SHORTHANDS: dict[str, tuple[str, ...]] = {
    "size": ("track",),
    "landmarks": ("track",),
    "parsing": ("parse",),
    "extractor": ("extract-audio",),
    "rasterizer": ("init-static", "train-deform", "train-torso", "render"),
    "hashgrid": ("train-deform", "train-torso"),
}
SUBJECT_KEYS = {"name", "video", "audios", "preset", "config", *SHORTHANDS}
TOP_KEYS = {"preset", "defaults", "subject"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ManifestError(UsageError):
    """A manifest with problems; `problems` has one line each."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = [f"{path.name}: {p}" for p in problems]
        super().__init__(f"manifest {path} has {len(problems)} problem(s): " + "; ".join(problems))


@dataclass
class Subject:
    name: str
    video: Path
    audios: list[Path] = field(default_factory=list)
    preset: str | None = None
    config: dict[str, dict] = field(default_factory=dict)  # stage -> {key: value}, as a --config TOML

    def to_json(self) -> dict:
        return {"name": self.name, "video": str(self.video), "audios": [str(a) for a in self.audios],
                "preset": self.preset, "config": self.config}


@dataclass
class Manifest:
    path: Path
    subjects: list[Subject]


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest (files, names, keys); raises ManifestError listing every problem."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"manifest {path} does not exist; give a .toml or .csv file")
    if path.suffix.lower() == ".toml":
        rows, defaults, problems = _read_toml(path)
    elif path.suffix.lower() == ".csv":
        rows, defaults, problems = _read_csv(path)
    else:
        raise UsageError(f"manifest {path} must end in .toml or .csv")
    subjects: list[Subject] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        name = row.get("name") if isinstance(row, dict) else None
        if isinstance(name, str) and name:
            key = name.lower()  # case-insensitive file systems would merge these directories
            if key in seen:
                problems.append(f"{where}: duplicate name {name!r} (also {seen[key]}); names must be unique")
                continue
            seen[key] = where
        subject = _subject(path.parent, where, row, defaults, problems)
        if subject is not None:
            subjects.append(subject)
    if not rows and not problems:
        problems.append("no subjects; add [[subject]] tables (TOML) or rows (CSV)")
    if problems:
        raise ManifestError(path, problems)
    return Manifest(path, subjects)


def _read_toml(path: Path):
    problems: list[str] = []
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"manifest {path} is not valid TOML: {exc}") from None
    for key in sorted(set(data) - TOP_KEYS):
        problems.append(f"unknown top-level key {key!r}; known: {', '.join(sorted(TOP_KEYS))}")
    defaults = {"preset": data.get("preset"), "config": data.get("defaults", {})}
    if not isinstance(defaults["config"], dict) or not all(isinstance(v, dict) for v in defaults["config"].values()):
        problems.append("[defaults] must hold stage tables, e.g. [defaults.track] size = 256")
        defaults["config"] = {}
    subjects = data.get("subject", [])
    if not isinstance(subjects, list):
        problems.append("subjects must be [[subject]] tables")
        subjects = []
    rows = []
    for i, row in enumerate(subjects, 1):
        label = row.get("name") if isinstance(row, dict) else None
        rows.append((f"subject {i}" + (f" ({label})" if isinstance(label, str) else ""), row))
    return rows, defaults, problems


def _cell(raw: str):
    """A CSV cell as a value: numbers, true/false, lists; anything else stays a string."""
    raw = raw.strip()
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    return value if isinstance(value, (int, float, list, tuple)) else raw


def _read_csv(path: Path):
    problems: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheet exports start with a BOM
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        for h in header:
            if h not in SUBJECT_KEYS - {"config"} and "." not in h:
                problems.append(f"unknown column {h!r}; known: name, video, audios, preset, "
                                f"{', '.join(SHORTHANDS)} and stage.setting columns")
        rows = []
        for n, rec in enumerate(reader, 2):
            row: dict = {}
            for k, v in rec.items():
                if k is None:
                    problems.append(f"line {n}: more cells than columns")
                    continue
                k = k.strip()
                if v is None or not v.strip() or (k not in SUBJECT_KEYS and "." not in k):
                    continue
                if k == "audios":
                    row[k] = [a.strip() for a in v.split(";") if a.strip()]
                elif k in ("name", "video", "preset"):
                    row[k] = v.strip()
                elif "." in k:
                    stage, key = k.split(".", 1)
                    row.setdefault("config", {}).setdefault(stage, {})[key] = _cell(v)
                else:
                    row[k] = _cell(v)
            label = row.get("name")
            rows.append((f"line {n}" + (f" ({label})" if label else ""), row))
    return rows, {"preset": None, "config": {}}, problems


def _subject(base: Path, where: str, row, defaults: dict, problems: list[str]) -> Subject | None:
    if not isinstance(row, dict):
        problems.append(f"{where}: must be a table of key = value")
        return None
    bad = False
    for key in sorted(set(row) - SUBJECT_KEYS):
        problems.append(f"{where}: unknown key {key!r}; known: {', '.join(sorted(SUBJECT_KEYS))}")
        bad = True
    name = row.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: missing name")
        bad = True
    elif not NAME_RE.match(name):
        problems.append(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' (it names a directory)")
        bad = True
    video = _file(base, where, row.get("video"), "video", problems)
    audios_raw = row.get("audios", [])
    if isinstance(audios_raw, str):
        audios_raw = [audios_raw]
    audios = [_file(base, where, a, "audio", problems) for a in audios_raw]
    preset = row.get("preset", defaults.get("preset"))
    if preset is not None and preset not in PRESET_NAMES:
        problems.append(f"{where}: unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
        bad = True
    config: dict[str, dict] = {stage: dict(table) for stage, table in defaults.get("config", {}).items()}
    extra = row.get("config", {})
    if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
        problems.append(f"{where}: config must hold stage tables, e.g. [subject.config.track] size = 256")
        bad = True
        extra = {}
    for stage, table in extra.items():
        config.setdefault(stage, {}).update(table)
    from talkctl.pipeline import STAGE_BY_NAME

    for short, stages in SHORTHANDS.items():
        if short in row:
            for stage in stages:
                if stage in STAGE_BY_NAME:  # the stages of this talkctl that take the setting
                    config.setdefault(stage, {})[short] = row[short]
    if bad or video is None or None in audios:
        return None
    return Subject(name=name, video=video, audios=audios, preset=preset, config=config)


def _file(base: Path, where: str, value, what: str, problems: list[str]) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: missing {what}")
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else (base / p)
    if not p.is_file():
        problems.append(f"{where}: {what} file {p} does not exist" if not p.exists() else f"{where}: {what} {p} is not a file")
        return None
    if p.stat().st_size == 0:
        problems.append(f"{where}: {what} file {p} is empty")
        return None
    return Path(os.path.normpath(p.absolute()))  # "clips/../x.mp4" -> "x.mp4", links kept


def check_configs(manifest: Manifest, names: list[str]) -> None:
    """Resolve every subject's config for every stage it will run, before any work starts:
    unknown stage settings and bad values are reported per subject, one line each."""
    from talkctl.pipeline import STAGE_BY_NAME, feeds, stage_config

    problems = []
    for s in manifest.subjects:
        for stage in sorted(set(s.config) - set(STAGE_BY_NAME)):
            problems.append(f"{s.name}: unknown stage {stage!r} in its config; stages: {', '.join(STAGE_BY_NAME)}")
        for name in names:
            spec = STAGE_BY_NAME[name]
            try:
                stage_config(spec, s.preset, {name: s.config.get(name, {})}, {})
            except UsageError as exc:
                problems.append(f"{s.name}: {exc.message}")
        if s.audios and feeds(names, "render"):
            try:
                stage_config(STAGE_BY_NAME["render"], s.preset, {"render": s.config.get("render", {})}, {})
            except UsageError as exc:
                problems.append(f"{s.name}: {exc.message}")
    if problems:
        raise ManifestError(manifest.path, problems)
