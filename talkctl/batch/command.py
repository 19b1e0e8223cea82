"""The `talkctl batch` command group (registered by talkctl/cli.py).

    talkctl batch MANIFEST --root DIR [--from X] [--to Y] [--engine local|ray] ...
    talkctl batch status DIR [--json]

`batch MANIFEST` is short for `batch run MANIFEST` (a group with a default command).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from talkctl.cli_options import DebugOpt, ForceOpt, JsonOpt, PresetOpt, QuietOpt, VerboseOpt, _common, _State, write_json
from talkctl.errors import StageError
from talkctl.pipeline import feeds


class _DefaultRun(TyperGroup):
    """`talkctl batch MANIFEST ...` runs `talkctl batch run MANIFEST ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


batch_app = typer.Typer(cls=_DefaultRun, no_args_is_help=True, add_completion=False,
                        help="Many subjects at once: `talkctl batch MANIFEST --root DIR`, `talkctl batch status DIR`.")


@batch_app.command("run")
def batch_run(
    manifest: Annotated[Path, typer.Argument(help="Subjects: a .toml file (subject tables) or a .csv file (name,video,... columns).")],
    root: Annotated[Path, typer.Option("--root", help="Directory holding one run directory per subject.")],
    from_: Annotated[Optional[str], typer.Option("--from", help="First stage.")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Last stage.")] = None,
    preset: PresetOpt = None,
    engine: Annotated[str, typer.Option("--engine", help="local (worker processes here) | ray (a Ray cluster).")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address (default: a local Ray instance).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="CPU worker processes (default: one per core).")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", min=0, help="GPUs to use, one worker each (default: all visible; 0: CPU only).")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Reruns of a stage whose worker died.")] = 1,
    force: ForceOpt = False, json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False,
):
    """Run every subject of MANIFEST through the stage chain; up-to-date stages are skipped."""
    from rich.markup import escape

    from talkctl.console import err
    from talkctl.batch import ManifestError, make_engine, prepare, run_batch
    from talkctl.batch.view import LiveTable

    _common(json_, verbose, quiet, debug)
    try:
        subjects, names = prepare(manifest, from_, to)
    except ManifestError as exc:
        for line in exc.problems:
            err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        if _State.json:
            write_json({"error": "; ".join(exc.problems), "exit_code": exc.exit_code, "problems": exc.problems})
        raise typer.Exit(exc.exit_code)
    eng = make_engine(engine, workers=workers, gpus=gpus, address=address)
    with_audio = [s.name for s in subjects.subjects if s.audios]
    if with_audio and not _State.quiet:
        if not feeds(names, "render"):
            why = f"the chain stops at {names[-1]}, before the models render needs"
            err.print(f"[yellow]note:[/] the audios of {len(with_audio)} subject(s) are not rendered: {why}",
                      highlight=False)
    t0 = time.time()
    holder = f"talkctl batch {manifest}"
    if _State.quiet or _State.json:
        record = run_batch(subjects, root, eng, names, preset=preset, force=force, retries=retries, holder=holder)
    else:
        title = f"{len(subjects.subjects)} subject(s): {names[0]} → {names[-1]}"
        with LiveTable(err, title) as live:
            record = run_batch(subjects, root, eng, names, preset=preset, force=force, retries=retries,
                               on_update=live, holder=holder)
    subs = record["subjects"]
    mine = [s.name for s in subjects.subjects]
    failed = [n for n in mine if subs[n]["status"] != "done"]
    error = StageError(f"{len(failed)} of {len(mine)} subject(s) failed ({', '.join(failed)}): "
                       f"see `talkctl batch status {record['root']}`") if failed else None
    if _State.json:  # one JSON document: a failure is part of it
        write_json({**record, **({"error": error.message, "exit_code": error.exit_code} if error else {})})
    elif not _State.quiet:
        err.print(f"{len(mine) - len(failed)} done, {len(failed)} failed in {time.time() - t0:.1f} s "
                  f"({record['engine_detail']}) -> {record['root']}")
    if error:
        raise error


@batch_app.command("status")
def batch_status_cmd(root: Annotated[Path, typer.Argument(help="The batch root (--root of `talkctl batch`).")],
                     json_: JsonOpt = False, verbose: VerboseOpt = 0, quiet: QuietOpt = False, debug: DebugOpt = False):
    """Every subject of a batch: stage states, times, eval figures, errors."""
    from rich.markup import escape
    from rich.table import Table

    from talkctl.console import out
    from talkctl.batch.status import batch_status
    from talkctl.batch.view import COLOURS

    _common(json_, verbose, quiet, debug)
    data = batch_status(root)
    if _State.json:
        write_json(data)
        return
    stage_names = []
    for s in data["subjects"]:
        for row in s["stages"]:
            if row["stage"] not in stage_names:
                stage_names.append(row["stage"])
    chain = data.get("chain") or stage_names
    shown = [n for n in stage_names if n in chain]
    state_colours = {"done": "green", "stale": "yellow", "missing": "dim", "invalid": "red"}
    table = Table()
    for col in ["subject", "status", *shown, "eval", "elapsed / error"]:
        table.add_column(col)
    for s in data["subjects"]:
        cells = []
        per_stage = {}
        for row in s["stages"]:
            per_stage.setdefault(row["stage"], []).append(row)
        for name in shown:
            rows = per_stage.get(name, [])
            worst = next((r for r in rows if r["state"] != "done"), rows[0] if rows else None)
            if worst is None:
                cells.append("")
                continue
            secs = max((r["seconds"] or 0 for r in rows), default=0)  # each output records the whole stage's time
            c = state_colours.get(worst["state"], "white")
            cells.append(f"[{c}]{worst['state']}[/]" + (f" {secs:.1f} s" if worst["state"] == "done" and secs else ""))
        figs = "  ".join(f"{k} {v:.4g}" for k, v in list(s["eval"].items())[:4])
        tail = f"[red]{escape(s['error'])}[/]" if s.get("error") else (f"{s['elapsed']:.1f} s" if s.get("elapsed") else "")
        c = COLOURS.get(s["status"], "white")
        table.add_row(escape(s["name"]), f"[{c}]{s['status']}[/]", *cells, figs, tail)
    console = out()  # the root above the table, not its title: a title wraps at the table's width
    console.print(escape(f"{data['root']} ({data.get('state') or 'no batch record'})"), soft_wrap=True)
    console.print(table)
