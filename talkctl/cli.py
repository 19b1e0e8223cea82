"""The `talkctl` command: a thin typer shell around pipeline.run_stage.

Verbs are the stage names. Known failures become one line on stderr and an exit code
(errors.py); `--debug` (or TALKCTL_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from talkctl import __version__
from talkctl.cli_options import (ConfigOpt, DebugOpt, DeviceOpt, ForceOpt, JsonOpt, PresetOpt, QuietOpt,
                                 RunExistingOpt, RunOpt, SetOpt, VerboseOpt, _common, _State, write_json)
from talkctl.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, TalkctlError, UsageError, interrupt_behind, sigterm_unwinds

app = typer.Typer(
    name="talkctl",
    help="Audio-driven 3D Gaussian talking heads: video of one person talking in, that person "
         "saying any new audio out. Each verb is one stage writing HDF5 artifacts into a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"talkctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(version_: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")] = False) -> None:
    pass  # the app's own options (the help text is the Typer's)


def _fmt(v) -> str:
    """A figure as people read it: 4 significant digits (37.7, 0.9123), whole numbers kept whole."""
    return f"{v:.4g}" if isinstance(v, float) and abs(v) < 1e4 else f"{v:.0f}" if isinstance(v, float) else str(v)


def _emit(summary: dict | list) -> None:
    """Summary: JSON on stdout with --json, else a short human line on stderr (a progress report)."""
    if _State.json:
        write_json(summary)
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
                    err.print(f"  {k}: {_fmt(v)}")


def _resolve_run(run: Optional[Path], media: Optional[Path], verb: str, create: bool, preset: Optional[str] = None):
    """The run directory: --run, or next to the media file (`clip.mp4` -> `clip.talkctl/`).
    Only verbs that take the video make it (create); the others need it made already."""
    from talkctl.console import err
    from talkctl.pipeline import no_run_directory
    from talkctl.rundir import RunDir

    if run is not None and not create and not os.path.lexists(run.expanduser()):
        raise no_run_directory(run.expanduser().absolute(), verb, preset)

    if run is None:
        if media is None or not create:
            raise UsageError("no run directory: give --run DIR" + (f" (or a video: `talkctl {verb} VIDEO`)" if create else ""))
        run = media.expanduser().absolute().with_suffix(".talkctl")
        if not _State.quiet:
            err.print(f"run directory: {run}")
    return RunDir(run, create=create)


def _settings(config: Optional[Path], set_: Optional[List[str]], options: dict) -> tuple[dict, dict]:
    """(the config file's tables, the command line's settings: --set pairs, then the verb's own options)."""
    from talkctl import config as configmod

    return configmod.load_toml(config), {**configmod.parse_set(set_), **{k: v for k, v in options.items() if v is not None}}


def _stage(verb: str, run: Optional[Path], media: Optional[Path], config: Optional[Path], preset: Optional[str],
           force: bool, device: str, set_: Optional[List[str]], overrides: dict, create: bool = False) -> None:
    from talkctl.console import make_progress
    from talkctl.pipeline import prepare, run_stage
    from talkctl.rundir import check_input_file

    toml, merged = _settings(config, set_, overrides)
    if media is not None and media.expanduser().is_dir() and run is None:
        run, media = media, None  # `talkctl extract-audio RUN_DIR`: a run that knows its video
    if media is not None:
        check_input_file(media, "input")
    prepare(verb, preset=preset, toml=toml, overrides=merged, device=device)  # usage errors touch no directory
    rd = _resolve_run(run, media, verb, create, preset)
    summary = run_stage(verb, rd, video=media, preset=preset, toml=toml, overrides=merged, device=device, force=force,
                        progress=make_progress(_State.quiet or _State.json))
    _emit(summary)


MediaArg = Annotated[Optional[Path], typer.Argument(help="Video or audio file (or a run directory that knows its video).")]


@app.command("extract-audio")
def extract_audio(media: MediaArg = None, run: RunOpt = None,
                  features: Annotated[Optional[str], typer.Option(help="Audio feature extractor: auto (= phonetic) | phonetic | mel-formant | hubert | wav2vec2.")] = None,
                  model: Annotated[Optional[str], typer.Option(help="Model directory or hub id for hubert / wav2vec2.")] = None,
                  config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                  set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Audio track -> 16 kHz mono waveform + 25 fps-aligned features (audio.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("extract-audio", run, media, config, preset, force, device, set_, {"extractor": features, "model": model},
           create=True)


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
           {"size": size, "landmarks": landmarks, "preview": preview or None}, create=True)


@app.command()
def parse(run: RunExistingOpt = None,
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
def init_static(run: RunExistingOpt = None, rasterizer: RasterOpt = None,
                config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Static head and torso Gaussians (static.h5, static.ply)."""
    _common(json_, verbose, quiet, debug)
    _stage("init-static", run, None, config, preset, force, device, set_, {"rasterizer": rasterizer})


@app.command("train-deform")
def train_deform(run: RunExistingOpt = None, rasterizer: RasterOpt = None, resume: ResumeOpt = False,
                 condition: Annotated[Optional[str], typer.Option(help="audio | landmarks.")] = None,
                 config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                 set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Audio-driven deformation field of the head (deform.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("train-deform", run, None, config, preset, force, device, set_,
           {"rasterizer": rasterizer, "resume": resume or None, "condition": condition})


@app.command("train-torso")
def train_torso(run: RunExistingOpt = None, rasterizer: RasterOpt = None, resume: ResumeOpt = False,
                mode: Annotated[Optional[str], typer.Option(help="gaussian (pose-conditioned Gaussians) | image (StyleUNet from the head render).")] = None,
                config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
                set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Pose-conditioned torso (torso.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("train-torso", run, None, config, preset, force, device, set_,
           {"rasterizer": rasterizer, "resume": resume or None, "mode": mode})


@app.command("train-a2l")
def train_a2l(run: RunExistingOpt = None, resume: ResumeOpt = False,
              config: ConfigOpt = None, preset: PresetOpt = None, force: ForceOpt = False, device: DeviceOpt = "auto",
              set_: SetOpt = None, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Audio -> landmark motion Transformer, decoupled two-stage method (a2l.h5)."""
    _common(json_, verbose, quiet, debug)
    _stage("train-a2l", run, None, config, preset, force, device, set_, {"resume": resume or None})


@app.command()
def render(run: RunExistingOpt = None,
           audio: Annotated[Optional[Path], typer.Option(help="Driving audio (wav, mp3, mp4, ...); default: held-out part of the clip.")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .mp4 (default RUN/render.mp4).")] = None,
           pose: Annotated[Optional[str], typer.Option(help="Head poses and blinks: train (ping-pong, default) | still | RUN_DIR | FILE.npz.")] = None,
           full_frame: Annotated[bool, typer.Option("--full-frame", help="Paste the render back into the source video's frames.")] = False,
           composite: Annotated[Optional[str], typer.Option(help="portrait (the source video's frames, the face blended in) | model (head + torso + plate) | auto (portrait when the poses are this run's).")] = None,
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
            "full_frame": full_frame or None, "composite": composite}, create=False)


@app.command()
def serve(run: RunOpt = None,
          host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")] = None,
          port: Annotated[Optional[int], typer.Option(help="TCP port (default 8000; 0 = any free port).")] = None,
          size: Annotated[Optional[int], typer.Option(help="Frame side in pixels (default 256; 0 = the training resolution).")] = None,
          max_sessions: Annotated[Optional[int], typer.Option("--max-sessions", help="Concurrent sessions (default: one per two cores).")] = None,
          token: Annotated[Optional[str], typer.Option(help="Require this token on every request (default: $TALKCTL_SERVE_TOKEN).")] = None,
          lookahead_ms: Annotated[Optional[int], typer.Option("--lookahead-ms", help="Most future audio a frame may wait for (default 200).")] = None,
          pose: Annotated[Optional[str], typer.Option(help="Head motion: train (the clip's, ping-pong; default) | still.")] = None,
          max_lag_ms: Annotated[Optional[int], typer.Option("--max-lag-ms", help="A session this late skips frames (default 500; 0 = never).")] = None,
          webrtc: Annotated[Optional[str], typer.Option(help="POST /offer: auto (when aiortc is installed; default) | on | off.")] = None,
          config: ConfigOpt = None, preset: PresetOpt = None, device: DeviceOpt = "auto", set_: SetOpt = None,
          json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Serve the head live: a page, WebRTC, a WebSocket (PCM16 in, JPEG frames out), /health and /stats."""
    _common(json_, verbose, quiet, debug)
    if run is None:
        raise UsageError("no run directory: give --run DIR (a run trained up to train-torso)")
    _stage("serve", run, None, config, preset, False, device, set_,
           {"host": host, "port": port, "size": size, "max_sessions": max_sessions, "token": token,
            "lookahead_ms": lookahead_ms, "pose": pose, "max_lag_ms": max_lag_ms, "webrtc": webrtc}, create=False)


@app.command("eval")
def eval_(runs: Annotated[Optional[List[Path]], typer.Argument(help="Run directories to evaluate and compare.")] = None,
          run: RunExistingOpt = None,
          audio: Annotated[Optional[Path], typer.Option(help="Also drive the head with this audio: lip-sync figures on new speech.")] = None,
          drive_video: Annotated[Optional[List[Path]], typer.Option(
              "--drive-video", help="Drive the head with this video's audio and compare its mouth with the real "
              "speaker's in that video (repeatable).")] = None,
          config: ConfigOpt = None, preset: PresetOpt = None, device: DeviceOpt = "auto", set_: SetOpt = None,
          json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Quality and speed figures (eval.json, report.html); several runs -> one table."""
    from talkctl.console import err, make_progress, out
    from talkctl.pipeline import run_stage
    from talkctl.report.tables import STAGE_KEYS, STAGE_MEMORY_KEYS, comparison_table, print_table
    from talkctl.rundir import RunDir, check_input_file
    from talkctl.stages.eval import comparison_rows

    _common(json_, verbose, quiet, debug)
    dirs = list(runs or []) + ([run] if run is not None else [])
    if not dirs:
        raise UsageError("no run directory: `talkctl eval RUN [RUN2 ...]` (runs trained up to train-torso)")
    if audio is not None:
        check_input_file(audio, "audio")
    for v in drive_video or []:
        check_input_file(v, "drive video")
    toml, overrides = _settings(config, set_, {"audio": audio,
                                               "drive_videos": [str(v) for v in drive_video] if drive_video else None})
    rds = [RunDir(d, create=False) for d in dirs]
    results = [run_stage("eval", rd, preset=preset, toml=toml, overrides=overrides, device=device,
                         progress=make_progress(_State.quiet or _State.json)) for rd in rds]
    rows = comparison_rows(results)
    if _State.json:  # the tables stay readable on stderr; stdout holds only the JSON
        write_json(results[0] if len(results) == 1 else {"runs": results, "table": rows})
    if _State.quiet and _State.json:
        return
    console = err if _State.json else out()
    print_table(console, comparison_table(rows))
    print_table(console, comparison_table(rows, STAGE_KEYS, title="training time per stage"))
    print_table(console, comparison_table(rows, STAGE_MEMORY_KEYS, title="peak host memory per stage"))
    if not _State.json:
        for r in results:
            console.print(f"report: {r['report']}\nfigures: {r['eval_json']}", soft_wrap=True)


@app.command()
def export(run: RunExistingOpt = None,
           format_: Annotated[Optional[str], typer.Option("--format", help="ply (INRIA 3DGS) | splat (web viewers).")] = None,
           frame: Annotated[Optional[int], typer.Option(help="Export the head as in this frame of the training clip.")] = None,
           frames: Annotated[Optional[str], typer.Option(help="a:b, frames a..b-1 (of --audio, else of the training clip); one file each.")] = None,
           audio: Annotated[Optional[Path], typer.Option(help="Driving audio for --frames.")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File, or folder for --frames (default RUN/export/).")] = None,
           config: ConfigOpt = None, preset: PresetOpt = None, device: DeviceOpt = "auto", set_: SetOpt = None,
           json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """The head's Gaussians as files other 3DGS tools read: canonical, or deformed at chosen frames."""
    from talkctl.rundir import check_input_file

    _common(json_, verbose, quiet, debug)
    if run is None:
        raise UsageError("no run directory: give --run DIR (a run trained up to train-deform)")
    if audio is not None:
        check_input_file(audio, "audio")
    _stage("export", run, None, config, preset, False, device, set_,
           {"format": format_, "frame": frame, "frames": frames, "audio": audio, "output": output}, create=False)


@app.command()
def view(run: RunExistingOpt = None,
         audio: Annotated[Optional[Path], typer.Option(help="Also drive the head with this audio.")] = None,
         host: Annotated[Optional[str], typer.Option(help="Address to listen on (default 127.0.0.1: this machine only).")] = None,
         port: Annotated[Optional[int], typer.Option(help="Port (default 8080; 0 = any free port).")] = None,
         config: ConfigOpt = None, preset: PresetOpt = None, device: DeviceOpt = "auto", set_: SetOpt = None,
         json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """The trained head (and torso) in 3D in a browser, speaking; prints the URL, Ctrl-C stops."""
    from talkctl.rundir import check_input_file

    _common(json_, verbose, quiet, debug)
    if run is None:
        raise UsageError("no run directory: give --run DIR (a run trained up to train-torso)")
    if audio is not None:
        check_input_file(audio, "audio")
    _stage("view", run, None, config, preset, False, device, set_,
           {"audio": audio, "host": host, "port": port}, create=False)


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
    from talkctl.pipeline import chain, prepare, run_stage
    from talkctl.rundir import RunDir, check_input_file

    _common(json_, verbose, quiet, debug)
    names = chain(from_, to)
    toml = configmod.load_toml(config)
    if video is not None:
        check_input_file(video, "video")
    for name in names:  # usage errors touch no directory
        prepare(name, preset=preset, toml=toml, device=device)
    rd = RunDir(run_dir, create=True)
    summaries = []
    with rd.lock("talkctl run"):  # the whole chain, so no other writer slips in between stages
        if video is not None:
            rd.set_video(video)
        for name in names:
            summaries.append(run_stage(name, rd, preset=preset, toml=toml, device=device, force=force,
                                       progress=make_progress(_State.quiet or _State.json)))
            if not _State.json:
                _emit(summaries[-1])
    if _State.json:
        _emit(summaries)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
           verify: Annotated[bool, typer.Option("--verify", help="Also check every artifact's bytes against their checksums (exit 4 if any is corrupt).")] = False,
           json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """What is done, stale or missing in a run directory."""
    from talkctl.pipeline import corrupt_error, status as run_status
    from talkctl.rundir import RunDir

    _common(json_, verbose, quiet, debug)
    rd = RunDir(run_dir, create=False)
    rows = run_status(rd, verify=verify)
    _status_table(rd, rows)
    if (exc := corrupt_error(rd, rows)) is not None:
        raise exc


def _status_table(rd, rows: list[dict]) -> None:
    if _State.json:
        video = rd.video()
        write_json({"run": str(rd), "video": str(video[0]) if video else None, "stages": rows})
        return
    from rich.markup import escape

    from talkctl.console import out
    from talkctl.report.tables import status_table

    console = out()
    console.print(escape(str(rd)), soft_wrap=True)  # above the table, not its title: a title wraps at its width
    console.print(status_table(rows))


@app.command()
def doctor(json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Check ffmpeg, devices and every backend: what is usable here and why not."""
    from talkctl.doctor import checks

    _common(json_, verbose, quiet, debug)
    rows = checks()
    if _State.json:
        write_json(rows)
        return
    from rich.markup import escape
    from rich.table import Table

    from talkctl.console import out

    table = Table(title=f"talkctl {__version__} doctor")
    for col in ("kind", "name", "usable", "detail"):
        table.add_column(col)
    for r in rows:  # escaped: the hints hold `pip install 'talkctl[cuda]'`, which rich would take for markup
        table.add_row(r["kind"], r["name"], "[green]yes[/]" if r["usable"] else "[red]no[/]", escape(r["detail"]))
    out().print(table)


@app.command()
def demo(out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where the example subject, run and results go.")] = Path("runs/demo"),
         preset: Annotated[str, typer.Option("--preset", help="tiny | fast | paper.")] = "tiny", device: DeviceOpt = "auto",
         json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Make an example subject and take it through every stage; prints where the results are."""
    from rich.markup import escape

    from talkctl.console import make_progress, out
    from talkctl.demo import run_demo

    _common(json_, verbose, quiet, debug)
    result = run_demo(out_dir, preset=preset or "tiny", device=device, progress=make_progress(_State.quiet or _State.json),
                      on_stage=(lambda s: None) if _State.json else _emit)
    if _State.json:
        _emit(result)
        return
    r = {k: escape(str(v)) for k, v in result.items()}
    console = out()  # where the results are: what the user asked for, on stdout
    console.print(f"\nexample clip: {r['video']}\nrun directory: {r['run']}", soft_wrap=True)
    if result.get("demo_video"):
        console.print(f"[bold]the head saying a new voice:[/] {r['demo_video']}  (voice: {r['voice']})\n"
                      f"[bold]evaluation report:[/] {r['report']}  (figures: {r['eval_json']})", soft_wrap=True)


@app.command()
def version():
    """Print the version."""
    sys.stdout.write(f"talkctl {__version__}\n")


from talkctl.batch.command import batch_app  # noqa: E402 (a sub-app, added after the stage verbs)

app.add_typer(batch_app, name="batch", help="Many subjects at once: `talkctl batch MANIFEST --root DIR`, `talkctl batch status DIR`.")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the typer app, turning known errors into one line and an exit code
    (and, under --json, an `{"error", "exit_code"}` object on stdout)."""
    # Before torch is imported (nothing above imports it): OpenMP threads that spin-wait make
    # 2-core runs several times slower beside other busy processes. A value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from talkctl.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts (memory.limit_malloc_arenas)
    from rich.markup import escape

    from talkctl.console import err

    args = list(sys.argv[1:] if argv is None else argv)
    _State.debug, _State.json, _State.quiet = bool(os.environ.get("TALKCTL_DEBUG")), False, False
    _State.json_written = False

    def fail(line: str, message: str, code: int) -> int:
        if line:
            err.print(line, highlight=False, soft_wrap=True)
        # --json is known before the verb parses its options: usage errors get their object too
        if (_State.json or "--json" in args) and not _State.json_written:
            write_json({"error": message, "exit_code": code})
        return code

    with sigterm_unwinds() as terminated:  # SIGTERM unwinds like Ctrl-C (errors.sigterm_unwinds)
        try:
            rc = app(args=args, prog_name="talkctl", standalone_mode=False)
        except TalkctlError as exc:
            if _State.debug:
                err.print_exception()
            return fail(f"[red]error:[/] {escape(exc.message)}", exc.message, exc.exit_code)
        except KeyboardInterrupt:
            rc = EXIT_INTERRUPTED
        except Exception as exc:
            # typer's (vendored) click exceptions: bad usage prints its own message, exit 2
            if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
                exc.show(file=sys.stderr)
                return fail("", exc.format_message(), exc.exit_code)
            if type(exc).__name__ == "Abort" or interrupt_behind(exc):
                rc = EXIT_INTERRUPTED
            else:
                if _State.debug:
                    raise
                message = f"{type(exc).__name__}: {exc} (rerun with --debug and report it)"
                return fail(f"[red]internal error:[/] {escape(message)}", f"internal error: {message}", 1)
    if rc == EXIT_INTERRUPTED and terminated:  # typer turns every KeyboardInterrupt into exit 130
        rc = EXIT_TERMINATED
    if rc in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        word = "interrupted" if rc == EXIT_INTERRUPTED else "terminated"
        message = f"{word}: nothing half-written was kept; rerun the same command to resume"
        return fail(f"[yellow]{word}[/]: {message.split(': ', 1)[1]}", message, rc)
    return rc if isinstance(rc, int) else 0
