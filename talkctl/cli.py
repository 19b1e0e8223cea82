"""The `talkctl` command: a thin typer shell around pipeline.run_stage.

Verbs are the stage names. Known failures become one line on stderr and an exit code
(errors.py); `--debug` (or TALKCTL_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from talkctl import __version__
from talkctl.cli_options import (ConfigOpt, DebugOpt, DeviceOpt, ForceOpt, JsonOpt, PresetOpt, QuietOpt, RunOpt,
                                 SetOpt, VerboseOpt, _common, _State)
from talkctl.errors import EXIT_INTERRUPTED, TalkctlError, UsageError

app = typer.Typer(
    name="talkctl",
    help="Audio-driven 3D Gaussian talking heads: video of one person talking in, that person "
         "saying any new audio out. Each verb is one stage writing HDF5 artifacts into a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _emit(summary: dict | list) -> None:
    """Summary: JSON on stdout with --json, else a short human line on stderr."""
    if _State.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return
    if _State.quiet:
        return
    from talkctl.console import err

    items = summary if isinstance(summary, list) else [summary]
    for s in items:
        if "stage" in s:
            extra = f" in {s['seconds']:.1f} s" if s.get("seconds") is not None and s.get("status") == "done" else ""
            err.print(f"[green]{s['stage']}[/]: {s['status']}{extra} -> {s.get('run', '')}")
            for k, v in s.items():
                if k not in ("stage", "status", "run", "seconds", "outputs") and not isinstance(v, (dict, list)):
                    err.print(f"  {k}: {v}")


def _resolve_run(run: Optional[Path], media: Optional[Path], verb: str):
    """The run directory: --run, or next to the media file (`clip.mp4` -> `clip.talkctl/`)."""
    from talkctl.console import err
    from talkctl.rundir import RunDir

    if run is None:
        if media is None:
            raise UsageError(f"no run directory: give --run DIR (or a video: `talkctl {verb} VIDEO`)")
        run = media.expanduser().absolute().with_suffix(".talkctl")
        if not _State.quiet:
            err.print(f"run directory: {run}")
    return RunDir(run, create=True)


def _settings(config: Optional[Path], set_: Optional[List[str]], options: dict) -> tuple[dict, dict]:
    """(the config file's tables, the command line's settings: --set pairs, then the verb's own options)."""
    from talkctl import config as configmod

    return configmod.load_toml(config), {**configmod.parse_set(set_), **{k: v for k, v in options.items() if v is not None}}


def _stage(verb: str, run: Optional[Path], media: Optional[Path], config: Optional[Path], preset: Optional[str],
           force: bool, device: str, set_: Optional[List[str]], overrides: dict, create: bool = True) -> None:
    from talkctl.console import make_progress
    from talkctl.pipeline import run_stage
    from talkctl.rundir import RunDir, check_input_file

    toml, merged = _settings(config, set_, overrides)
    if media is not None and media.expanduser().is_dir() and run is None:
        run, media = media, None  # `talkctl extract-audio RUN_DIR`: a run that knows its video
    if media is not None:
        check_input_file(media, "input")
    rd = _resolve_run(run, media, verb) if create else RunDir(run, create=False)
    if media is not None:
        rd.set_video(media)
    summary = run_stage(verb, rd, preset=preset, toml=toml, overrides=merged, device=device, force=force,
                        progress=make_progress(_State.quiet or _State.json))
    _emit(summary)


MediaArg = Annotated[Optional[Path], typer.Argument(help="Video or audio file (or a run directory that knows its video).")]


@app.command("extract-audio")
def extract_audio(media: MediaArg = None, run: RunOpt = None,
                  features: Annotated[Optional[str], typer.Option(help="Audio feature extractor: auto | mel-formant | hubert | wav2vec2.")] = None,
                  model: Annotated[Optional[str], typer.Option(help="Model directory or hub id for hubert / wav2vec2.")] = None,
                  config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                  set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Audio track -> 16 kHz mono waveform + 25 fps-aligned features (audio.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("extract-audio", run, media, config, preset, force, device, set_, {"extractor": features, "model": model})


@app.command()
def track(video: MediaArg = None, run: RunOpt = None,
          size: Annotated[Optional[int], typer.Option(help="Side of the square crop in pixels (default 512).")] = None,
          landmarks: Annotated[Optional[str], typer.Option(help="Landmark backend: auto | mediapipe | face-alignment.")] = None,
          preview: Annotated[bool, typer.Option("--preview", help="Write a contact sheet PNG.")] = False,
          config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
          set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Frames, landmarks, head pose and blink per frame (frames.h5, track.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("track", run, video, config, preset, force, device, set_,
           {"size": size, "landmarks": landmarks, "preview": preview or None})


@app.command()
def parse(run: RunOpt = None,
          parsing: Annotated[Optional[str], typer.Option(help="Parsing backend: auto | mediapipe | facexlib.")] = None,
          preview: Annotated[bool, typer.Option("--preview", help="Write a contact sheet PNG.")] = False,
          config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
          set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Head / neck / torso / background masks and a background plate (parse.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("parse", run, None, config, preset, force, device, set_, {"parsing": parsing, "preview": preview or None})


RasterOpt = Annotated[Optional[str], typer.Option("--rasterizer", help="auto | torch | gsplat | diffgs (diff-gaussian-rasterization).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")]


@app.command("init-static")
def init_static(run: RunOpt = None, rasterizer: RasterOpt = None,
                config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Static head and torso Gaussians (static.h5, static.ply)."""
    _common(json_, verbose, quiet, debug)
    _stage("init-static", run, None, config, preset, force, device, set_, {"rasterizer": rasterizer})


@app.command("train-deform")
def train_deform(run: RunOpt = None, rasterizer: RasterOpt = None, resume: ResumeOpt = False,
                 condition: Annotated[Optional[str], typer.Option(help="audio | landmarks.")] = None,
                 config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                 set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Audio-driven deformation field of the head (deform.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("train-deform", run, None, config, preset, force, device, set_,
           {"rasterizer": rasterizer, "resume": resume or None, "condition": condition})


@app.command("train-torso")
def train_torso(run: RunOpt = None, rasterizer: RasterOpt = None, resume: ResumeOpt = False,
                mode: Annotated[Optional[str], typer.Option(help="gaussian (pose-conditioned Gaussians) | image (StyleUNet from the head render).")] = None,
                config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Pose-conditioned torso (torso.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("train-torso", run, None, config, preset, force, device, set_,
           {"rasterizer": rasterizer, "resume": resume or None, "mode": mode})


@app.command("train-a2l")
def train_a2l(run: RunOpt = None, resume: ResumeOpt = False,
              config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
              set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Audio -> landmark motion Transformer, decoupled two-stage method (a2l.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("train-a2l", run, None, config, preset, force, device, set_, {"resume": resume or None})


@app.command()
def render(run: RunOpt = None,
           audio: Annotated[Optional[Path], typer.Option(help="Driving audio (wav, mp3, mp4, ...); default: held-out part of the clip.")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .mp4 (default RUN/render.mp4).")] = None,
           pose: Annotated[Optional[str], typer.Option(help="Head poses and blinks: train (ping-pong, default) | still | RUN_DIR | FILE.npz.")] = None,
           full_frame: Annotated[bool, typer.Option("--full-frame", help="Paste the render back into the source video's frames.")] = False,
           size: Annotated[Optional[int], typer.Option(help="Output side in pixels (default: the training resolution).")] = None,
           landmarks: Annotated[Optional[str], typer.Option(help="Landmark-driven heads: a2l (default with a2l.h5) | track | OTHER_RUN (re-enactment).")] = None,
           edit: Annotated[Optional[str], typer.Option(help="Landmark edit, e.g. mouth_scale=1.5,eyes_open=1 (landmark-driven heads).")] = None,
           config: ConfigOpt = None, preset: PresetOpt = None, device: DeviceOpt = "auto", set_: SetOpt = None,
           json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Render the talking head saying new audio, as an .mp4 with the audio in it."""
    from talkctl.rundir import check_input_file

    _common(json_, verbose, quiet, debug)
    if run is None:
        raise UsageError("no run directory: give --run DIR (a run trained up to train-torso)")
    if audio is not None:
        check_input_file(audio, "audio")
    _stage("render", run, None, config, preset, False, device, set_,
           {"pose": pose, "size": size, "landmarks": landmarks, "edit": edit, "audio": audio, "output": output,
            "full_frame": full_frame or None}, create=False)


@app.command("eval")
def eval_(runs: Annotated[Optional[List[Path]], typer.Argument(help="Run directories to evaluate and compare.")] = None,
          run: RunOpt = None,
          audio: Annotated[Optional[Path], typer.Option(help="Also drive the head with this audio: lip-sync figures on new speech.")] = None,
          config: ConfigOpt = None, preset: PresetOpt = None, device: DeviceOpt = "auto", set_: SetOpt = None,
          json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Quality and speed figures (eval.json, report.html); several runs -> one table."""
    from talkctl.console import err, make_progress
    from talkctl.pipeline import run_stage
    from talkctl.report.tables import STAGE_KEYS, STAGE_MEMORY_KEYS, comparison_table
    from talkctl.rundir import RunDir, check_input_file
    from talkctl.stages.eval import comparison_rows

    _common(json_, verbose, quiet, debug)
    dirs = list(runs or []) + ([run] if run is not None else [])
    if not dirs:
        raise UsageError("no run directory: `talkctl eval RUN [RUN2 ...]` (runs trained up to train-torso)")
    if audio is not None:
        check_input_file(audio, "audio")
    toml, overrides = _settings(config, set_, {"audio": audio})
    rds = [RunDir(d, create=False) for d in dirs]
    results = [run_stage("eval", rd, preset=preset, toml=toml, overrides=overrides, device=device,
                         progress=make_progress(_State.quiet or _State.json)) for rd in rds]
    rows = comparison_rows(results)
    if not _State.quiet:
        err.print(comparison_table(rows))
        err.print(comparison_table(rows, STAGE_KEYS, title="training time per stage"))
        err.print(comparison_table(rows, STAGE_MEMORY_KEYS, title="peak host memory per stage"))
        if not _State.json:
            for r in results:
                err.print(f"report: {r['report']}\nfigures: {r['eval_json']}")
    if _State.json:
        out = results[0] if len(results) == 1 else {"runs": results, "table": rows}
        sys.stdout.write(json.dumps(out, indent=2, default=str) + "\n")


@app.command("run")
def run_chain(run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
              video: Annotated[Optional[Path], typer.Option(help="Source video (if the run does not know it yet).")] = None,
              from_: Annotated[Optional[str], typer.Option("--from", help="First stage.")] = None,
              to: Annotated[Optional[str], typer.Option("--to", help="Last stage.")] = None,
              config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
              json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Chain stages from --from to --to; stages that are up to date are skipped."""
    from talkctl import config as configmod
    from talkctl.console import make_progress
    from talkctl.pipeline import chain, run_stage
    from talkctl.rundir import RunDir

    _common(json_, verbose, quiet, debug)
    names = chain(from_, to)
    toml = configmod.load_toml(config)
    rd = RunDir(run_dir, create=True)
    if video is not None:
        rd.set_video(video)
    summaries = []
    for name in names:
        summaries.append(run_stage(name, rd, preset=preset, toml=toml, device=device, force=force,
                                   progress=make_progress(_State.quiet or _State.json)))
        if not _State.json:
            _emit(summaries[-1])
    if _State.json:
        _emit(summaries)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
           json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """What is done, stale or missing in a run directory."""
    from talkctl.pipeline import status as run_status
    from talkctl.rundir import RunDir

    _common(json_, verbose, quiet, debug)
    rd = RunDir(run_dir, create=False)
    rows = run_status(rd)
    if _State.json:
        video = rd.video()
        sys.stdout.write(json.dumps({"run": str(rd), "video": str(video[0]) if video else None, "stages": rows},
                                    indent=2, default=str) + "\n")
        return
    from rich.table import Table

    from talkctl.console import err

    colours = {"done": "green", "stale": "yellow", "missing": "dim", "invalid": "red"}
    table = Table(title=str(rd))
    for col in ("stage", "artifact", "state", "size", "created", "time"):
        table.add_column(col)
    for r in rows:
        c = colours[r["state"]]
        state = f"[{c}]{r['state']}[/]" + (f" ({r['why']})" if r["why"] else "")
        size = f"{r['bytes'] / 1e6:.1f} MB" if r["bytes"] else ""
        secs = f"{r['seconds']:.1f} s" if r["seconds"] is not None else ""
        table.add_row(r["stage"], r["artifact"], state, size, r["created"] or "", secs)
    err.print(table)


@app.command()
def doctor(json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Check ffmpeg, devices and every backend: what is usable here and why not."""
    from talkctl.doctor import checks

    _common(json_, verbose, quiet, debug)
    rows = checks()
    if _State.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from rich.table import Table

    from talkctl.console import err

    table = Table(title=f"talkctl {__version__} doctor")
    for col in ("kind", "name", "usable", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["kind"], r["name"], "[green]yes[/]" if r["usable"] else "[red]no[/]", r["detail"])
    err.print(table)


@app.command()
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="Where the example subject, run and results go.")] = Path("runs/demo"),
         preset: PresetOpt = "tiny", device: DeviceOpt = "auto",
         json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Make an example subject and take it through every stage; prints where the results are."""
    from talkctl.console import err, make_progress
    from talkctl.demo import run_demo

    _common(json_, verbose, quiet, debug)
    result = run_demo(out, preset=preset or "tiny", device=device, progress=make_progress(_State.quiet or _State.json),
                      on_stage=(lambda s: None) if _State.json else _emit)
    if _State.json:
        _emit(result)
        return
    err.print(f"\nexample clip: {result['video']}\nrun directory: {result['run']}")
    if result.get("demo_video"):
        err.print(f"[bold]the head saying a new voice:[/] {result['demo_video']}  (voice: {result['voice']})\n"
                  f"[bold]evaluation report:[/] {result['report']}  (figures: {result['eval_json']})")


@app.command()
def version():
    """Print the version."""
    sys.stdout.write(f"talkctl {__version__}\n")


def _add_batch() -> None:
    from talkctl.batch.command import batch_app

    app.add_typer(batch_app, name="batch", help="Many subjects at once: `talkctl batch MANIFEST --root DIR`, `talkctl batch status DIR`.")


_add_batch()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the typer app, turning known errors into one line and an exit code."""
    from rich.markup import escape

    from talkctl.console import err

    _State.debug, _State.json, _State.quiet = bool(os.environ.get("TALKCTL_DEBUG")), False, False
    # torch's OpenMP workers spin between ops by default: beside the compiled rasteriser's threads,
    # or on busy cores, the spinning takes the CPU from the work (measured: render 3x-10x slower).
    # Read when torch is first imported, which happens after this; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        rc = app(args=argv, prog_name="talkctl", standalone_mode=False)
    except TalkctlError as exc:
        if _State.debug:
            err.print_exception()
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        rc = EXIT_INTERRUPTED
    except Exception as exc:
        # typer's (vendored) click exceptions: bad usage prints its own message, exit 2
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show(file=sys.stderr)
            return exc.exit_code
        if type(exc).__name__ == "Abort":
            rc = EXIT_INTERRUPTED
        else:
            if _State.debug:
                raise
            err.print(f"[red]internal error:[/] {type(exc).__name__}: {escape(str(exc))} "
                      "(rerun with --debug and report it)", soft_wrap=True)
            return 1
    if rc == EXIT_INTERRUPTED:
        err.print("[yellow]interrupted[/]: nothing half-written was kept; rerun the same command to resume")
    return rc if isinstance(rc, int) else 0

