"""Every `talkctl` command and `--option` the README shows exists in the CLI.

Commands come from the README's code blocks and inline code spans that start with `talkctl `
(comments on the line included: `# --pose still|train` claims render has --pose). Options in
other inline spans (`--set key=value`, `--resume`) must exist in at least one verb.
"""
import re

from typer.main import get_command

from talkctl.cli import app
from repo import REPO

README = REPO / "README.md"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _commands() -> dict[str, set[str]]:
    """'verb' or 'group sub' -> the option names it accepts."""
    root = get_command(app)
    out = {"": {o for p in root.params for o in p.opts + p.secondary_opts}}

    def walk(cmd, prefix):
        for name, sub in cmd.commands.items():
            key = f"{prefix} {name}".strip()
            out[key] = {o for p in sub.params for o in p.opts + p.secondary_opts} | {"--help"}
            if hasattr(sub, "commands"):  # a group (typer may vendor its own click)
                walk(sub, key)

    walk(root, "")
    return out


def _readme_snippets() -> tuple[list[str], list[str]]:
    """(command lines: code-block lines and inline spans starting with `talkctl `, other inline spans)."""
    text = README.read_text()
    lines, inline = [], []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        lines += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("talkctl ")]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        (lines if span.startswith("talkctl ") else inline).append(span)
    return lines, inline


def _verb(words: list[str], commands: dict) -> str:
    """The command a README line runs: `talkctl batch status DIR` -> 'batch status';
    `talkctl batch MANIFEST ...` -> 'batch run' (the group's default)."""
    verb = words[1]
    if f"{verb} run" in commands and len(words) > 2:
        return f"{verb} {words[2]}" if f"{verb} {words[2]}" in commands else f"{verb} run"
    return verb


def test_every_readme_command_and_option_exists():
    commands = _commands()
    lines, inline = _readme_snippets()
    assert len(lines) > 20  # the parser still finds the README's examples
    problems = []
    for line in lines:
        words = line.split()
        if len(words) < 2 or words[1].startswith("-"):
            verb = ""
        else:
            verb = _verb(words, commands)
            if verb not in commands:
                problems.append(f"{line!r}: no verb {words[1]!r}")
                continue
        for opt in OPTION.findall(line):
            if opt not in commands[verb] and opt not in commands[""]:
                problems.append(f"{line!r}: `talkctl {verb}` has no {opt}")
    everywhere = set().union(*commands.values())
    for span in inline:
        for opt in OPTION.findall(span):
            if opt not in everywhere:
                problems.append(f"`{span}`: no verb has {opt}")
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_removed_option():
    """The README of issue 16 showed `talkctl render --audio-norm driving`: it must be refused."""
    commands = _commands()
    assert "--audio-norm" not in commands["render"] and "--audio" in commands["render"]
    assert _verb("talkctl batch subjects.toml --root r".split(), commands) == "batch run"
    assert _verb("talkctl batch status runs/studio".split(), commands) == "batch status"
