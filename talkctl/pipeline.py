"""Stages as functions over a run directory, and the machinery that runs them.

A stage module (talkctl/stages/<name>.py) provides:
  VERSION: int                bump when its output changes for the same inputs
  DEFAULTS, PRESETS, NON_SEMANTIC   (see config.py)
  run(ctx: Context, config: dict) -> dict   writes its artifacts with ctx.write(...)
  resolve(config, device) -> config   optional: settings that depend on this machine (an "auto"
                              backend whose choice changes the result) made concrete before fingerprinting
  when_up_to_date(run, config) -> dict   optional: side outputs of NON_SEMANTIC settings (e.g. a
                              --preview PNG) made from the existing artifacts when the stage is skipped

`run_stage` resolves the config, takes the run directory's lock, checks inputs, skips the
stage when every output already carries the same fingerprint, and records the time.
Stages never print or exit: they report through ctx.log and ctx.progress.
"""
from __future__ import annotations

import importlib
import json
import logging
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from talkctl import artifacts, config as configmod, h5files, memory
from talkctl.errors import ArtifactError, TalkctlError, UsageError, command, disk_full_error, is_disk_full
from talkctl.devices import resolve_device
from talkctl.progress import null_progress
from talkctl.rundir import RunDir


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    inputs: tuple[str, ...]  # artifact names read; "video" = the run's source video
    outputs: tuple[str, ...]
    help: str


STAGES: tuple[StageSpec, ...] = (
    StageSpec("extract-audio", "talkctl.stages.extract_audio", ("video",), ("audio",),
              "Audio track -> 16 kHz waveform and per-frame features (audio.h5)."),
    StageSpec("track", "talkctl.stages.track", ("video",), ("frames", "track"),
              "Frames, landmarks, head pose, blink (frames.h5, track.h5)."),
    StageSpec("parse", "talkctl.stages.parse", ("frames", "track"), ("parse",),
              "Head / neck / torso / background masks and background plate (parse.h5)."),
    StageSpec("init-static", "talkctl.stages.init_static", ("frames", "track", "parse"), ("static",),
              "Static head and torso Gaussians (static.h5, static.ply)."),
    StageSpec("train-deform", "talkctl.stages.train_deform", ("audio", "frames", "track", "parse", "static"),
              ("deform",), "Audio-driven deformation field of the head (deform.h5)."),
    StageSpec("train-torso", "talkctl.stages.train_torso", ("audio", "frames", "track", "parse", "static", "deform"),
              ("torso",), "Pose-conditioned torso (torso.h5)."),
    StageSpec("train-a2l", "talkctl.stages.train_a2l", ("audio", "track"), ("a2l",),
              "Audio -> landmark motion Transformer of the decoupled two-stage method (a2l.h5)."),
    # render and eval write no artifact (outputs ()): `run` does not chain them, the runner checks
    # their inputs and holds the lock but fingerprints nothing; inputs are what they read
    StageSpec("render", "talkctl.stages.render", ("audio", "frames", "track", "parse", "deform", "torso"), (),
              "Render the talking head for new audio to an .mp4 with sound."),
    StageSpec("eval", "talkctl.stages.eval", ("audio", "frames", "track", "parse", "deform", "torso"), (),
              "Quality and speed figures, eval.json and report.html."),
    StageSpec("export", "talkctl.stages.export", ("audio", "track", "deform"), (),
              "The head's Gaussians as INRIA .ply or web .splat files, canonical or per frame."),
    StageSpec("view", "talkctl.stages.view", ("audio", "track", "deform", "torso"), (),
              "The head and torso in 3D in a browser (viser), speaking."),
    StageSpec("serve", "talkctl.stages.serve", ("audio", "track", "parse", "deform", "torso"), (),
              "Serve the head live: audio in as it arrives, frames out (page, WebSocket, /stats)."),
)
STAGE_BY_NAME = {s.name: s for s in STAGES}
CHAIN = [s.name for s in STAGES if s.outputs]  # the stages `run` chains


def stage_spec(name: str) -> StageSpec:
    try:
        return STAGE_BY_NAME[name]
    except KeyError:
        raise UsageError(f"unknown stage {name!r}; stages: {', '.join(STAGE_BY_NAME)}") from None


def load_stage_module(spec: StageSpec):
    return importlib.import_module(spec.module)


def feeds(names: list[str], verb: str) -> bool:
    """Whether a chain of stages reaches the last stage that makes what `verb` reads."""
    spec = stage_spec(verb)
    if not names:
        return False
    producers = [artifacts.spec(i).stage for i in spec.inputs if i in artifacts.ARTIFACTS]
    last = max((CHAIN.index(p) for p in producers if p in CHAIN), default=-1)
    return last >= 0 and CHAIN.index(names[-1]) >= last


# ---- context ----------------------------------------------------------------
@dataclass
class Context:
    run: RunDir
    stage: StageSpec
    version: int
    config: dict
    inputs: dict[str, str]
    fingerprint: str
    device: str = "cpu"
    progress: Callable = null_progress
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("talkctl"))
    started: float = field(default_factory=time.time)
    backends: dict[str, str] = field(default_factory=dict)

    def use_backend(self, kind: str, name: str) -> None:
        """Record a backend choice; it goes into every artifact this stage writes."""
        self.backends[kind] = name

    @contextmanager
    def write(self, name: str):
        if name not in self.stage.outputs:
            raise ValueError(f"stage {self.stage.name} does not declare output {name}")
        with artifacts.write(self.run, name, producer=f"{self.stage.name} v{self.version}",
                             fingerprint=self.fingerprint, config=self.config, inputs=self.inputs,
                             backend=self.backends) as f:
            yield f
            f.attrs["seconds"] = round(time.time() - self.started, 3)
            for k, v in memory.peak_attrs().items():  # peak so far in this stage
                f.attrs[k] = v

    def read(self, name: str):
        return artifacts.open_for_read(self.run, name)

    def video_path(self) -> Path:
        v = self.run.video()
        if v is None:
            raise UsageError(f"run directory {self.run} has no video yet; give one: "
                             f"{command(self.stage.name, 'VIDEO', '--run', self.run)}")
        return v[0]


def stage_config(spec: StageSpec, preset: str | None = None, toml: dict | None = None,
                 overrides: dict | None = None) -> tuple[object, dict]:
    mod = load_stage_module(spec)
    configmod.check_tables(toml or {}, STAGE_BY_NAME)
    cfg = configmod.resolve(spec.name, mod.DEFAULTS, getattr(mod, "PRESETS", {}), preset, toml or {}, overrides or {},
                            getattr(mod, "RANGES", {}))
    return mod, cfg


def input_fingerprints(run: RunDir, spec: StageSpec, preset: str | None = None) -> dict[str, str]:
    out = {}
    for name in spec.inputs:
        if name == "video":
            fp = run.video_fingerprint()
            if fp is None:
                raise UsageError(f"no video given for {run}; run {command(spec.name, 'VIDEO', '--run', run)}")
            out["video"] = fp
        elif artifacts.state(run, name)[0] == "done":
            out[name] = artifacts.current_fingerprint(run, name)
    if len(out) < len(spec.inputs):  # every stage still to run at once, with the one command that runs them
        last = _last_producer(spec)
        todo = ", ".join(filter(None, (_not_ready(run, s) for s in CHAIN[:CHAIN.index(last) + 1])))
        raise ArtifactError(f"{spec.name} needs stages that have not run in {run}: {todo}; "
                            f"build them with `{build_command(run.path, last, preset, run.video() is not None)}`")
    return out


def no_run_directory(path, verb: str, preset: str | None = None) -> ArtifactError:
    """A verb that reads a run's artifacts, given a directory that is not there (never made for it)."""
    return ArtifactError(f"run directory {path} does not exist, so nothing {verb} needs is built there; build it "
                         f"with `{build_command(path, _last_producer(stage_spec(verb)), preset, False)}`")


def _last_producer(spec: StageSpec) -> str:
    return max((artifacts.spec(i).stage for i in spec.inputs if i in artifacts.ARTIFACTS), key=CHAIN.index)


def _not_ready(run: RunDir, stage: str) -> str:
    """'' when every output of `stage` is done, else e.g. 'track (frames.h5, track.h5 missing)'."""
    states = [(artifacts.spec(o).filename, *artifacts.state(run, o)) for o in stage_spec(stage).outputs]
    bad = [(f, st, why) for f, st, why in states if st != "done"]
    if not bad:
        return ""
    if all(st == "missing" for _, st, _ in bad):
        return f"{stage} ({', '.join(f for f, _, _ in bad)} missing)"
    return f"{stage} ({', '.join(f'{f} {st}' + (f': {why}' if why else '') for f, st, why in bad)})"


def build_command(run, last: str, preset: str | None = None, knows_video: bool = True) -> str:
    """`talkctl run RUN --to LAST`, shell-quoted: `run` skips what is up to date, so it builds
    exactly what is missing or stale up to LAST (`--video VIDEO` when the run knows none)."""
    words = ["talkctl", "run", str(run)]
    if not knows_video:
        words += ["--video", "VIDEO"]
    words += ["--to", last]
    if preset:
        words += ["--preset", preset]
    return shlex.join(words)


@dataclass
class Prepared:
    """A stage's settings checked and made concrete for this machine (nothing touched on disk)."""
    spec: StageSpec
    module: object
    config: dict
    device: str


def prepare(name: str, *, preset: str | None = None, toml: dict | None = None, overrides: dict | None = None,
            device: str | None = "auto") -> Prepared:
    """Every check that needs no run directory: stage name, settings, device, backends. The CLI
    calls it before making a run directory, so a usage error leaves nothing behind."""
    spec = stage_spec(name)
    mod, cfg = stage_config(spec, preset, toml, overrides)
    device = resolve_device(device)
    if hasattr(mod, "resolve"):  # e.g. "auto" backends -> the concrete choice, so it is fingerprinted
        cfg = mod.resolve(cfg, device)
    return Prepared(spec, mod, cfg, device)


def run_stage(name: str, run: RunDir, *, video: str | Path | None = None, preset: str | None = None,
              toml: dict | None = None, overrides: dict | None = None, device: str | None = "auto",
              force: bool = False, progress: Callable = null_progress) -> dict:
    """Run one stage (or report it up to date). Returns its summary. `video`: record this
    source video first (under the lock, like every write into the run directory)."""
    p = prepare(name, preset=preset, toml=toml, overrides=overrides, device=device)
    spec, mod, cfg, device = p.spec, p.module, p.config, p.device
    sem = configmod.semantic(cfg, set(getattr(mod, "NON_SEMANTIC", ())))
    with run.lock(f"talkctl {name}"):
        if video is not None:
            run.set_video(video)
        artifacts.remove_partials(run)
        inputs = input_fingerprints(run, spec, preset)
        fp = artifacts.fingerprint(name, mod.VERSION, sem, inputs)
        outputs = {o: artifacts.spec(o).path(run) for o in spec.outputs}
        # a stage without outputs (render, eval) always runs: nothing of it is fingerprinted; an
        # output whose bytes fail their checksums is rebuilt like a missing one
        if spec.outputs and not force and all(artifacts.current_fingerprint(run, o, verify=True) == fp
                                              for o in spec.outputs):
            extra = mod.when_up_to_date(run, cfg) if hasattr(mod, "when_up_to_date") else None
            return {"stage": name, "status": "up to date", "run": str(run),
                    "outputs": {o: str(p) for o, p in outputs.items()}, **(extra or {})}
        with _stage_log(run, name) as logger, _failures_explained(run, spec):
            ctx = Context(run=run, stage=spec, version=mod.VERSION, config=sem, inputs=inputs, fingerprint=fp,
                          device=device, progress=progress, log=logger)
            logger.info("start %s (fingerprint %s, device %s, config %s)", name, fp, ctx.device, sem)
            memory.reset_peak()
            summary = mod.run(ctx, cfg) or {}
            seconds = round(time.time() - ctx.started, 3)
            logger.info("done in %.1f s, peak memory %s", seconds, memory.peak_attrs())
            if spec.outputs:
                run.record({"stage": name, "fingerprint": fp, "seconds": seconds, "finished": time.time(),
                            "device": ctx.device, "preset": cfg.get("preset")})
    return {"stage": name, "status": "done", "run": str(run), "seconds": seconds, "device": ctx.device,
            "backends": ctx.backends, "outputs": {o: str(p) for o, p in outputs.items()}, **memory.peak_attrs(),
            **summary}


class _LogFile(logging.FileHandler):
    """A stage log that cannot be written (a full disk) is skipped, not reported line by line."""

    def handleError(self, record) -> None:
        pass


@contextmanager
def _stage_log(run: RunDir, name: str):
    """The stage's logger, also writing RUN/logs/<stage>.log (made under the lock)."""
    logger = logging.getLogger(f"talkctl.{name}")
    try:
        (run.path / "logs").mkdir(exist_ok=True)
        handler = _LogFile(run.path / "logs" / f"{name}.log")
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(run.path) from None
        raise
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()


def _looks_like_hdf5_read_error(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and (
        text.startswith("Unable to") or "signature" in text or "filter returned failure" in text))


@contextmanager
def _failures_explained(run: RunDir, spec: StageSpec):
    """Environment failures inside a stage as one line: a full disk (exit 5) names the
    directory; an HDF5 read failure is traced to the input file that is damaged (exit 4)."""
    try:
        yield
    except TalkctlError:
        raise
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc):
            where = Path(exc.filename).parent if getattr(exc, "filename", None) else run.path
            raise disk_full_error(where) from None
        if not _looks_like_hdf5_read_error(exc):
            raise
        for name in spec.inputs:  # only on this failure path: read the inputs to find the damage
            if name in artifacts.ARTIFACTS and (problem := h5files.damage(artifacts.spec(name).path(run))):
                raise ArtifactError(f"{artifacts.spec(name).path(run)} is damaged ({problem}): rebuild it with "
                                    f"{artifacts.rebuild_hint(run, name)}") from None
        raise


def chain(start: str | None, stop: str | None) -> list[str]:
    names = CHAIN
    i = names.index(stage_spec(start).name) if start else 0
    j = names.index(stage_spec(stop).name) if stop else len(names) - 1
    if i > j:
        raise UsageError(f"--from {start} comes after --to {stop}")
    return names[i:j + 1]


def status(run: RunDir, verify: bool = False) -> list[dict]:
    """Each stage output: state, size, time, duration; `verify` also checks every artifact's
    bytes against their checksums (reads them all)."""
    last = {}
    for h in run.history():
        last[h["stage"]] = h
    rows = []
    for spec in STAGES:
        for out in spec.outputs:
            a = artifacts.spec(out)
            st, why = artifacts.state(run, out, verify=verify)
            path = a.path(run)
            attrs = artifacts.read_attrs(run, out) or {}
            rows.append({
                "stage": spec.name, "artifact": a.filename, "state": st, "why": why,
                "bytes": path.stat().st_size if path.exists() else 0,
                "created": attrs.get("created"), "seconds": attrs.get("seconds"),
                "backend": _json_attr(attrs.get("backend")),
            })
    return rows


def _json_attr(value):
    """An attribute stored as JSON text (artifacts.write's `backend`) as the object it holds."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def corrupt_error(run: RunDir, rows: list[dict]) -> ArtifactError | None:
    """The one-line error for the artifacts `status(verify=True)` found damaged, or None."""
    bad = [r for r in rows if r["state"] == "invalid" and r["why"].startswith(("checksum", "unreadable"))]
    if not bad:
        return None
    return ArtifactError("; ".join(f"{run.file(r['artifact'])} is corrupt ({r['why']}): rebuild it with "
                                   f"{command(r['stage'], '--run', run)}" for r in bad))
