"""Every command line CONTRACT.md shows names a real command and real options of it
(issue 15: `director enroll ... --name web1` was documented but "No such option").

The lines are read from the contract itself, so a documented option that the CLI lacks,
or an option put on the wrong command, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from director.cli.main import cli

# The contract is kept beside the repository (../shared); a clone without it skips.
CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "CONTRACT.md"

# Documented in CONTRACT.md, not built yet (each its own issue): strict xfail, so the
# day one is built this list must lose it.
NOT_BUILT: tuple[str, ...] = ()


def _command_lines(text: str) -> list[str]:
    """`director ...` spans in backticks (the contract writes every command that way)."""
    spans = re.findall(r"`(director(?: [^`]*)?)`", text)
    return [s for s in spans if s.strip() != "director"]


def _tokens(line: str) -> list[str]:
    cleaned = re.sub(r"[\[\]()|]|\.\.\.|…", " ", line)
    out = []
    for tok in cleaned.split():
        tok = tok.strip("'\"")
        if tok.startswith("--") and "=" in tok:
            tok = tok.split("=", 1)[0]
        if tok:
            out.append(tok)
    return out


def _options(cmd: click.Command) -> dict[str, click.Parameter]:
    opts: dict[str, click.Parameter] = {"--help": None, "-h": None}  # type: ignore[dict-item]
    for p in cmd.params:
        for name in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ())):
            opts[name] = p
    return opts


def _implied(group: click.Group, rest: list[str]) -> str | None:
    """The sub-command ``group``'s own parsing picks for ``rest`` (a group may add one)."""
    ctx = click.Context(group, info_name=group.name, resilient_parsing=True)
    group.parse_args(ctx, list(rest))
    state = vars(ctx)  # protected_args moved to _protected_args in click 8.2
    words = [*state.get("_protected_args", state.get("protected_args", [])), *ctx.args]
    return words[0] if words and words[0] in group.commands else None


def walk(line: str) -> list[str]:
    """Problems with one documented line: unknown sub-commands are placeholders unless the
    current command is a group with no such word; unknown options are always problems."""
    problems: list[str] = []
    toks = _tokens(line)[1:]
    cmd: click.Command = cli
    path = ["director"]
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.startswith("-"):
            opts = _options(cmd)
            if tok not in opts:
                problems.append(f"{' '.join(path)}: no option {tok}")
            else:
                p = opts[tok]
                takes_value = p is not None and not getattr(p, "is_flag", False)
                if takes_value and i + 1 < len(toks) and not toks[i + 1].startswith("-"):
                    i += 1
        elif isinstance(cmd, click.Group):
            name = tok if tok in cmd.commands else _implied(cmd, toks[i:])
            if name is None:
                problems.append(f"{' '.join(path)}: no sub-command {tok!r}")
                break
            cmd, path = cmd.commands[name], [*path, name]
            if name != tok:
                continue  # a group that names the sub-command itself (`job ID` = `job show ID`)
        i += 1
    return problems


LINES = _command_lines(CONTRACT.read_text(encoding="utf-8")) if CONTRACT.is_file() else []
CASES = [pytest.param(line, marks=pytest.mark.xfail(strict=True, reason="not built yet"))
         if line.startswith(NOT_BUILT) else line for line in LINES]


@pytest.mark.skipif(not LINES, reason=f"no {CONTRACT}")
def test_the_contract_shows_command_lines():
    assert len(LINES) >= 25, LINES
    assert any(" enroll " in line and "--name" in line for line in LINES)


@pytest.mark.parametrize("line", CASES)
def test_every_documented_command_line_parses(line):
    assert walk(line) == []


def test_the_walk_finds_a_wrong_option():
    assert walk("director enroll --server H --no-such-flag") == [
        "director enroll: no option --no-such-flag"]
    assert walk("director keys frobnicate") == ["director keys: no sub-command 'frobnicate'"]
    assert walk("director job last --json") == []  # `job ID` is `job show ID`
    assert walk("director job last --nope") == ["director job show: no option --nope"]


def test_enroll_takes_name_after_the_sub_command_and_before_it():
    assert walk("director enroll --server H --token T --name web1") == []
    assert walk("director --name web1 enroll --server H --token T") == []
