"""director.logsafe.shown: a peer's string in a log line can neither forge lines nor flood."""

from __future__ import annotations

import ast
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from director.logsafe import shown


@pytest.mark.parametrize(("value", "expected"), [
    ("web1", "'web1'"),
    ("job\n2026 INFO server: forged", "'job\\n2026 INFO server: forged'"),
    ("\x1b]0;title\x07", "'\\x1b]0;title\\x07'"),
    ("cr\rlf", "'cr\\rlf'"),
    ("it's", '"it\'s"'),
    ("\u202eevil", "'\\u202eevil'"),
    (b"raw\nbytes", "b'raw\\nbytes'"),
    (None, "None"),
    (42, "42"),
    ("", "''"),
])
def test_shown_is_the_escaped_repr(value, expected):
    assert shown(value) == expected


def test_long_values_are_capped_with_a_note():
    out = shown("x" * 10_000)
    assert out == repr("x" * 200) + "...+9800"
    escaped = shown("\n" * 1000, cap=50)
    assert len(escaped) <= 50 + 2 + len("...+1000") and escaped.endswith("...+975")
    assert shown("y" * 200) == repr("y" * 200)


def test_other_objects_are_shown_by_their_text():
    class Odd:
        def __str__(self) -> str:
            return "two\nlines"
    assert shown(Odd()) == "'two\\nlines'"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600), st.integers(min_value=1, max_value=400))
def test_property_one_printable_line_within_the_cap(value, cap):
    out = shown(value, cap)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out
    assert out.isprintable()
    assert len(out) <= max(cap, 8) + 2 + len(f"...+{len(value)}")
    body, sep, rest = out.partition("...+")
    kept = ast.literal_eval(body if sep and body[-1] in "'\"" else out)
    assert value.startswith(kept)


def test_a_log_line_with_shown_stays_one_line(caplog):
    log = logging.getLogger("director.test")
    with caplog.at_level(logging.INFO):
        log.info("result for job %s", shown("abc\nINFO director.server: node web1 accepted"))
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()
