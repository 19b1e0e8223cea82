"""What every `talkctl` verb takes (DESIGN.md: the common options) and the output mode they set.

Shared by the main command (cli.py) and its sub-apps (batch/command.py).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

# ---- common options (DESIGN.md: every verb takes them) ------------------------
RunOpt = Annotated[Optional[Path], typer.Option("--run", "-r", help="Run directory (made if missing).")]
# verbs that read what earlier stages made: a missing directory is an error, never made
RunExistingOpt = Annotated[Optional[Path], typer.Option("--run", "-r", help="Run directory made by earlier stages (must exist).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML file: preset and one table per stage.")]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", help="tiny | fast | paper (default: fast).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if the outputs are up to date.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N].")]
SetOpt = Annotated[Optional[List[str]], typer.Option("--set", help="Override a setting: --set key=value (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or info logs.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]


class _State:
    debug = bool(os.environ.get("TALKCTL_DEBUG"))
    json = False
    quiet = False
    json_written = False  # the verb wrote its JSON document: an error after it goes inside it, not after


def write_json(data) -> None:
    """The one JSON document of a `--json` run, on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()
    _State.json_written = True


def _common(json_: bool, verbose: int, quiet: bool, debug: bool) -> None:
    from talkctl.console import setup_logging

    _State.debug = _State.debug or debug
    _State.json, _State.quiet = json_, quiet
    setup_logging(verbose, quiet)
