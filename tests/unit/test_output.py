"""director.cli.output: what a peer sent reaches the operator's terminal without any escape
sequence or control character (CONTRACT: terminal safety), and --json stays raw and strict."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from director import api
from director.cli import job_cmds, output
from director.cli.job_view import print_results
from director.cli.main import cli
from director.cli.output import emit_json, safe_text, table

# Nothing a terminal acts on may survive: ESC, C0 but \n \t, DEL, C1, bidi controls.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

HOSTILE = ("v1\x1b]0;owned title\x07\x1b]52;c;cm0gLXJmIH4=\x1b\\\x1b[2J\x1b[1;1H"
           "\x1bP+q\x1b\\\x1b_apc\x1b\\\x9b31m\x9d0;t\x9c\x1bc\r\x08\x7f\u202eok")


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b[31mred\x1b[0m", "red"),
    ("\x1b[?1049h\x1b[38;2;1;2;3mx", "x"),
    ("a\x1b]0;window title\x07b", "ab"),                 # OSC ended by BEL
    ("a\x1b]52;c;ZXZpbA==\x1b\\b", "ab"),                # clipboard write, ended by ST
    ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),
    ("\x1bPq#0;2;0;0;0#0~~\x1b\\dcs", "dcs"),              # DCS (sixel)
    ("\x1b_apc\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\z", "z"),
    ("\x9b2J\x9d0;t\x07\x90q\x9cz", "z"),                  # 8-bit C1 forms
    ("\x1bc\x1b7\x1b8\x1b(B\x1b#8z", "z"),                 # single ESC sequences
    ("unterminated \x1b]0;title goes to the end", "unterminated "),
    ("over\rwrite", "overwrite"),
    ("back\x08\x08space\x7f", "backspace"),
    ("bell\x07 nul\x00 vt\x0b ff\x0c", "bell nul vt ff"),
    ("\u202egnp.exe\u202c \u2066x\u2069", "gnp.exe x"),
    ("tabs\tand\nnewlines stay", "tabs\tand\nnewlines stay"),
    ("unicode: café ☃ 日本", "unicode: café ☃ 日本"),
    ("", ""),
    (None, ""),
    (42, "42"),
])
def test_safe_text(raw, shown):
    assert safe_text(raw) == shown


def test_inline_makes_one_line():
    assert safe_text("a\nb\tc\x1b[2K", inline=True) == "a b c"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("\x1b[]P_^X\\;0123456789mHJ?\x07\x9b\x9c\x9d"
                                             "\x90\r\n\t\x08\x7f\u202e ab")), max_size=60))
def test_property_nothing_a_terminal_acts_on_survives(text):
    out = safe_text(text)
    assert not FORBIDDEN.search(out)
    assert safe_text(out) == out  # stable: nothing left to strip
    assert "\n" not in safe_text(text, inline=True)


def test_table_cells_are_safe_and_one_line():
    out = table(["NAME", "VERSION"], [["web1\nforged row", HOSTILE]])
    assert not FORBIDDEN.search(out) and len(out.splitlines()) == 2
    assert "owned" not in out and "web1 forged row" in out


def _doc() -> dict:
    return {"id": "j1\x1b]0;t\x07", "summary": "RUN x\x1b[2J", "status": "failed",
            "results": {"web1\x1b[31m": {"status": "failed", "rc": 1, "stdout": HOSTILE + "\nline2",
                                         "stderr": "\x1b]52;c;AAAA\x07err\r\n", "cached": False,
                                         "exec_time": 0.1, "roundtrip_time": 0.2,
                                         "transfer": None, "error": "bad\x1b[8m hidden"}}}


def test_job_results_on_a_terminal_are_stripped(capsys):
    print_results(_doc(), header=True)
    out = capsys.readouterr().out
    assert not FORBIDDEN.search(out)
    assert "v1ok\n  line2" in out and "err" in out and "bad hidden" in out
    assert "owned title" not in out and "cm0gLXJmIH4" not in out


class _Obj:
    def settings(self):  # pragma: no cover - call() is replaced
        raise AssertionError


@pytest.fixture
def served(monkeypatch):
    """Replace the control-socket call with canned, hostile answers."""
    answers = {
        "nodes": [{"name": "web1\x1b]0;t\x07", "state": "online", "last_seen": None,
                   "address": "10.0.0.1\r\x1b[2K", "version": HOSTILE,
                   "fingerprint": "SHA256:x"}],
        "jobs.list": [{"id": "j1", "summary": "RUN \x1b]52;c;AA\x07x", "targets": ["w\x1b[1m"],
                       "status": "success", "counts": {"success": 1}, "age": 1.0}],
        "jobs.get": _doc(),
        "keys.list": [{"name": "n\x1b]0;t\x07", "state": "pending", "fingerprint": "f",
                       "updated": None}],
    }
    # the CLI reaches the server only through director.api's Client.request
    monkeypatch.setattr(api.Client, "request", lambda self, op, args=None, timeout=None:
                        answers[op])
    return answers


@pytest.mark.parametrize("argv", [["nodes"], ["jobs"], ["job", "j1"], ["keys", "list"]])
def test_listings_on_a_terminal_are_stripped(served, argv):
    res = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert not FORBIDDEN.search(res.output)
    assert "owned title" not in res.output


@pytest.mark.parametrize(("argv", "op"), [(["nodes", "--json"], "nodes"),
                                          (["jobs", "--json"], "jobs.list"),
                                          (["job", "j1", "--json"], "jobs.get")])
def test_json_keeps_the_raw_strings(served, argv, op):
    res = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert "\x1b" not in res.output  # escaped by JSON ...
    assert json.loads(res.output) == served[op]  # ... and exactly what the server sent


def test_emit_json_is_strict(capsys):
    emit_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": "\x1b]0;t\x07"})
    out = capsys.readouterr().out
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert doc == {"a": None, "b": [None, 1.5], "c": "\x1b]0;t\x07"}


def test_progress_shows_only_numbers_we_format(capsys, monkeypatch):
    p = job_cmds._Progress(enabled=True)
    p.update("submitted", {"tasks": "\x1b]0;t\x07", "jobs": ["a", 1]})
    p.update("progress", {"success": "\x1b[2J", "failed": float("nan"), "bytes_sent": True})
    p.close()
    err = capsys.readouterr().err
    assert "]0;t" not in err and "0/0 done, 0 failed" in err


def test_errors_from_the_server_are_stripped(monkeypatch, capsys):
    from director.errors import DirectorError
    from director.cli import main as main_mod

    def boom(self, op, args=None, timeout=None):
        raise DirectorError("no node named 'x\x1b]0;t\x07'")
    monkeypatch.setattr(api.Client, "request", boom)
    with pytest.raises(SystemExit):
        main_mod.main(["nodes"])
    err = capsys.readouterr().err
    assert "director: no node named 'x'" in err and "\x1b" not in err


def test_output_module_has_one_sanitizer():
    assert output.safe_text is safe_text
